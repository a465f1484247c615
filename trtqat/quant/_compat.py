"""CPU-safe replacements for the CUDA-only paths of pytorch-quantization 2.1.3.

- ``TensorQuantizer._load_from_state_dict`` (nn/modules/tensor_quantizer.py, 2.1.3 line ~401) creates a
  missing ``_amax`` buffer with ``state_dict[...].data.cuda()``: loading a calibrated state dict into a
  freshly replaced model fails on a CPU-only machine. :func:`load_quant_state_dict` creates every
  ``_amax`` buffer first (with the right shape, on the quantizer's device), so that branch is never taken.
- ``calib/histogram.py:_compute_amax_mse`` calls ``.cuda()``: trtqat never calls it; see ``calib/amax.py``.
- absl logging of pytorch-quantization is noisy at INFO: :func:`quiet_absl` lowers it to ERROR.
"""
from __future__ import annotations

import torch

from .quantizers import named_quantizers, set_amax


def load_quant_state_dict(model: torch.nn.Module, state_dict: dict, strict: bool = True):
    """``model.load_state_dict`` that works on CPU for quantized models (see module docstring)."""
    for name, q in named_quantizers(model, unique=False):
        key = f"{name}._amax"
        if key in state_dict and not hasattr(q, "_amax"):
            set_amax(q, state_dict[key].detach().to("cpu"))
    return model.load_state_dict(state_dict, strict=strict)


def quiet_absl() -> None:
    """pytorch-quantization logs every created quantizer at INFO through absl; keep that out of the UI."""
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl is a dependency of pytorch-quantization
        pass
