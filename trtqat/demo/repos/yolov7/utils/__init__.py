"""Helpers of the scratch YOLOv7-shaped repo (trtqat test fixture, not upstream code).

Upstream keeps these in ``utils/general.py`` and ``utils/torch_utils.py``; here they live in the package
``__init__`` so the fixture stays four files. What matters for trtqat is that ``models.common`` imports a
top-level ``utils`` package, exactly like a real clone does: the loader has to cope with that name.
"""
import math

import torch
from torch import nn


def make_divisible(x, divisor=8):
    """Smallest multiple of ``divisor`` that is >= ``x`` (channel counts stay SIMD/Tensor Core friendly)."""
    return int(math.ceil(x / divisor) * divisor)


def autopad(k, p=None):
    """'Same' padding for an odd kernel when ``p`` is not given."""
    if p is None:
        p = k // 2 if isinstance(k, int) else [v // 2 for v in k]
    return p


@torch.no_grad()
def fold_bn_into_conv(conv, bn):
    """A new Conv2d (with bias) computing ``bn(conv(x))`` in eval mode.

    With s = gamma / sqrt(var + eps): W' = W * s (per output channel), b' = (b - mean) * s + beta.
    """
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    fused.weight.requires_grad_(False)
    fused.bias.requires_grad_(False)
    return fused
