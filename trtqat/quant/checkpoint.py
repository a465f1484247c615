"""trtqat's PTQ/QAT checkpoint format: the quantized module pickled, plus metadata.

Format (``torch.save`` of a dict, so upstream tools that read ``ckpt["model"]`` still find the module)::

    {
      "model":  <the fused, quantized nn.Module, float32, eval mode; calibration histograms removed>,
      "trtqat": {
        "format": 1, "version": "0.1.0", "kind": "ptq" | "qat",
        "family": "yolov7", "source": "yolov7.pt", "size": 640,
        "calib": {"method": "mse", "images": 256, ...},
        "ignore": ["model\\.105\\.m\\..*"],
        "groups": [{"members": [...], "rule": "..."}],      # scale-sharing groups applied
        "amax": {"model.0.conv._input_quantizer": 5.61, ...}  # activation amax, for checks and diffs
      }
    }

Why pickle the module: the quantized model is the upstream module tree with per-instance changes
(quantized layers, shared quantizer objects, residual adds); pickling keeps exactly that, including which
quantizers are the *same object*. Reloading therefore needs what the original needed (the upstream clone
via ``--repo``) plus trtqat and pytorch-quantization. It is a pickle: load only files you trust.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .._io import atomic_path
from ..errors import InputError
from .calibrate import reset_statistics
from .quantizers import is_weight_quantizer, named_quantizers

FORMAT = 1


def amax_table(model) -> dict[str, Any]:
    """Activation amax per quantizer name (scalars as float)."""
    out = {}
    for name, q in named_quantizers(model):
        if not is_weight_quantizer(name) and getattr(q, "_amax", None) is not None:
            out[name] = float(q._amax.detach().float().max())
    return out


def save_quantized(model, path: str | Path, meta: dict) -> Path:
    """Write ``model`` + metadata atomically to ``path`` (see module docstring for the format)."""
    reset_statistics(model)
    payload = {"model": model, "trtqat": {"format": FORMAT, "version": __version__, **meta,
                                          "amax": amax_table(model)}}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def require_quantized(meta: dict, path: Path) -> None:
    """Raise InputError when ``path`` is not a trtqat PTQ/QAT checkpoint."""
    if not meta or meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a trtqat PTQ/QAT checkpoint",
                         "Create one with: trtqat quantize CKPT --calib DIR --ptq ptq.pt")
