"""Convolution blocks of the scratch ``ultralytics`` fixture: Conv, DWConv, Concat (written for trtqat's tests).

Constructor arguments and attribute names (``conv``, ``bn``, ``act``, ``forward_fuse``, ``d``) follow the
upstream classes of the same names, so fusing and module paths behave the same.
"""
import math

import torch
from torch import nn


def autopad(k, p=None, d=1):
    """'Same' padding for kernel ``k`` with dilation ``d`` unless ``p`` is given."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (v - 1) + 1 for v in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [v // 2 for v in k]
    return p


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation. ``act=True`` uses the one class-wide SiLU instance
    (every Conv of a model points at the same module, as upstream); ``act=False`` gives Identity."""

    default_act = nn.SiLU()

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, d=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = self.default_act
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x):
        """The forward once BatchNorm is folded into ``conv`` (``bn`` deleted)."""
        return self.act(self.conv(x))


class DWConv(Conv):
    """Depth-wise Conv: groups = gcd(c1, c2)."""

    def __init__(self, c1, c2, k=1, s=1, d=1, act=True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Concat(nn.Module):
    """Concatenate a list of tensors along ``d``."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)
