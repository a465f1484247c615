"""Creating and enumerating TensorQuantizers (pytorch-quantization) the way TensorRT wants them.

TensorRT's explicit quantization is symmetric int8: activations per-tensor, weights per-channel on the
output-channel axis (Conv axis 0, ConvTranspose axis 1, Linear/Gemm axis 0). Activation quantizers
calibrate from histograms; weight amax is the per-channel absolute max, computed directly from the
weights (what pytorch-quantization's MaxCalibrator yields, without a forward pass).
"""
from __future__ import annotations

from typing import Iterator

import torch
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor

from .calibrator import FastHistogramCalibrator

#: weight quantization axis per float module type (output channels)
WEIGHT_AXIS = {torch.nn.Conv2d: 0, torch.nn.ConvTranspose2d: 1, torch.nn.Linear: 0}


def input_quantizer(num_bits: int = 8) -> TensorQuantizer:
    """A per-tensor activation quantizer with a histogram calibrator."""
    q = TensorQuantizer(QuantDescriptor(num_bits=num_bits, calib_method="histogram"))
    q._calibrator = FastHistogramCalibrator(num_bits=num_bits)
    return q


def weight_quantizer(axis: int, num_bits: int = 8) -> TensorQuantizer:
    """A per-channel weight quantizer (max calibration) on ``axis``."""
    return TensorQuantizer(QuantDescriptor(num_bits=num_bits, axis=(axis,), calib_method="max"))


def quant_bound(q: TensorQuantizer) -> int:
    """The largest integer level of ``q`` (127 for signed 8-bit): its Q/DQ scale is ``amax / bound``."""
    return (1 << (q.num_bits - 1 + int(q.unsigned))) - 1


def is_weight_quantizer(name: str) -> bool:
    return name.endswith("_weight_quantizer")


def named_quantizers(model, *, unique: bool = True) -> Iterator[tuple[str, TensorQuantizer]]:
    """(dotted name, quantizer) for every TensorQuantizer. ``unique`` lists a shared one once, under its
    first name (the others point to the same object)."""
    for name, module in model.named_modules(remove_duplicate=unique):
        if isinstance(module, TensorQuantizer):
            yield name, module


def quantizer_aliases(model) -> dict[int, list[str]]:
    """id(quantizer) -> every dotted name it is reachable under (shared quantizers have several)."""
    out: dict[int, list[str]] = {}
    for name, q in named_quantizers(model, unique=False):
        out.setdefault(id(q), []).append(name)
    return out


def weight_amax(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel |w| max with keepdims on every other axis (the MaxCalibrator result shape)."""
    dims = [d for d in range(weight.dim()) if d != axis]
    return weight.detach().abs().amax(dim=dims, keepdim=True).float()


def set_amax(q: TensorQuantizer, value) -> None:
    """Set (or create) the ``_amax`` buffer on the quantizer's device without pytorch-quantization's
    warnings; keeps the buffer's shape when it already exists."""
    value = torch.as_tensor(value, dtype=torch.float32).detach().clone()
    if hasattr(q, "_amax") and q._amax.shape == value.shape:
        q._amax.data.copy_(value.to(q._amax.device))
    else:
        if hasattr(q, "_amax"):
            del q._buffers["_amax"]
        q.register_buffer("_amax", value)
