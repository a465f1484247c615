"""Quantized residual Add for Bottleneck-style ``x + cv2(cv1(x))`` blocks.

Why: TensorRT fuses a residual Add into the convolution that produces one addend, and the fused
kernel writes INT8 only when the other addend (the skip tensor) arrives quantized. pytorch-quantization
has no quantized Add, and a plain ``+`` leaves the skip branch in float, which costs one reformat per
block. ``QuantAdd`` puts a quantizer on both addends (the scale-matching rules later tie them to the
block input's scale).

The block's forward is replaced *per instance* by a small picklable callable, never by patching the
upstream class (that would change every other model in the process and would not survive pickling).
"""
from __future__ import annotations

import torch

from .quantizers import input_quantizer

#: upstream class names of residual blocks computing ``x + cv2(cv1(x))`` when ``add`` is true
RESIDUAL_BLOCKS = ("Bottleneck", "BottleneckCSP", "RepBottleneck", "GhostBottleneck")


class QuantAdd(torch.nn.Module):
    """``q0(a) + q1(b)``: input0 is the skip (residual) tensor, input1 the conv branch."""

    def __init__(self, num_bits: int = 8):
        super().__init__()
        self._input0_quantizer = input_quantizer(num_bits)
        self._input1_quantizer = input_quantizer(num_bits)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._input0_quantizer(a) + self._input1_quantizer(b)


class ResidualAddForward:
    """Replacement forward for one block instance: ``addop(x, cv2(cv1(x)))``.

    Stored as the instance attribute ``forward``; holds a reference to its block (pickle and deepcopy
    handle the cycle).
    """

    def __init__(self, block: torch.nn.Module):
        self.block = block

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        return b.addop(x, b.cv2(b.cv1(x)))


def is_residual_block(module: torch.nn.Module) -> bool:
    """A ``Bottleneck``-style block whose forward adds its input to ``cv2(cv1(x))``."""
    return (type(module).__name__ in RESIDUAL_BLOCKS[:1] and bool(getattr(module, "add", False))
            and hasattr(module, "cv1") and hasattr(module, "cv2"))


def quantize_residual(block: torch.nn.Module, num_bits: int = 8) -> QuantAdd:
    """Give ``block`` a ``QuantAdd`` child named ``addop`` and route its forward through it."""
    block.addop = QuantAdd(num_bits)
    block.forward = ResidualAddForward(block)
    return block.addop
