"""Blocks of the scratch ``ultralytics`` fixture (YOLOv8 / YOLO11 / YOLO26 backbones and necks), written
for trtqat's tests.

Class names, constructor arguments, attribute names and data flow follow the upstream classes of the same
names (``C2f.cv1/cv2/m``, ``Bottleneck.add``, ``SPPF.m/n/add``, ``PSABlock.attn/ffn``, ``Attention.qkv/pe/proj``
...), which is what decides module paths, fusing and the exported ONNX graph; the code is trtqat's own.
"""
import torch
from torch import nn

from .conv import Conv


class DFL(nn.Module):
    """Distribution-focal-loss integral: softmax over ``c1`` bins per box side, then the expected bin index
    through a fixed 1x1 conv whose weights are 0..c1-1 (no gradient)."""

    def __init__(self, c1=16):
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1))
        self.c1 = c1

    def forward(self, x):
        b, _, n = x.shape  # (batch, 4 * c1, anchors)
        bins = x.view(b, 4, self.c1, n).transpose(2, 1).softmax(1)  # (batch, c1, 4, anchors)
        return self.conv(bins).view(b, 4, n)


class Bottleneck(nn.Module):
    """Two convs (kernels ``k``), plus the input when ``shortcut`` and the widths match."""

    def __init__(self, c1, c2, shortcut=True, g=1, k=(3, 3), e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, k[0], 1)
        self.cv2 = Conv(hidden, c2, k[1], 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """1x1 conv to two halves; ``n`` bottlenecks chained on the second half; every intermediate output
    concatenated; 1x1 merge."""

    def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5):
        super().__init__()
        self.c = int(c2 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut, g, k=((3, 3), (3, 3)), e=1.0) for _ in range(n))

    def forward(self, x):
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))

    def forward_split(self, x):
        """Same result with ``split`` (static sizes) instead of ``chunk``: what upstream exports."""
        first, second = self.cv1(x).split((self.c, self.c), 1)
        parts = [first, second]
        for block in self.m:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class C3(nn.Module):
    """CSP block with three convs: bottlenecks on ``cv1``'s branch, concatenated with ``cv2``'s, merged by ``cv3``."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        hidden = int(c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(2 * hidden, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, k=((1, 1), (3, 3)), e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class C3k(C3):
    """C3 whose bottlenecks use ``k`` x ``k`` kernels for both convs."""

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5, k=3):
        super().__init__(c1, c2, n, shortcut, g, e)
        hidden = int(c2 * e)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, g, k=(k, k), e=1.0) for _ in range(n)))


class C3k2(C2f):
    """C2f whose inner blocks are Bottlenecks, C3k blocks (``c3k``), or Bottleneck + PSABlock pairs (``attn``)."""

    def __init__(self, c1, c2, n=1, c3k=False, e=0.5, attn=False, g=1, shortcut=True):
        super().__init__(c1, c2, n, shortcut, g, e)

        def inner():
            if attn:
                return nn.Sequential(Bottleneck(self.c, self.c, shortcut, g),
                                     PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)))
            if c3k:
                return C3k(self.c, self.c, 2, shortcut, g)
            return Bottleneck(self.c, self.c, shortcut, g)

        self.m = nn.ModuleList(inner() for _ in range(n))


class SPPF(nn.Module):
    """One k x k max-pool applied ``n`` times in a row; the input and every pooled map concatenated and
    merged by ``cv2``; plus the block input when ``shortcut`` and the widths match (YOLO26)."""

    def __init__(self, c1, c2, k=5, n=3, shortcut=False):
        super().__init__()
        hidden = c1 // 2
        self.cv1 = Conv(c1, hidden, 1, 1, act=False)
        self.cv2 = Conv(hidden * (n + 1), c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.n = n
        self.add = shortcut and c1 == c2

    def forward(self, x):
        maps = [self.cv1(x)]
        for _ in range(getattr(self, "n", 3)):
            maps.append(self.m(maps[-1]))
        y = self.cv2(torch.cat(maps, 1))
        return y + x if getattr(self, "add", False) else y


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions; 1x1 ``qkv`` and ``proj`` convs, and a depth-wise
    3x3 ``pe`` conv on the values added as positional encoding."""

    format = None

    def __init__(self, dim, num_heads=8, attn_ratio=0.5):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.key_dim = int(self.head_dim * attn_ratio)
        self.scale = self.key_dim ** -0.5
        qk = self.key_dim * num_heads
        self.qkv = Conv(dim, dim + 2 * qk, 1, act=False)
        self.proj = Conv(dim, dim, 1, act=False)
        self.pe = Conv(dim, dim, 3, 1, g=dim, act=False)

    def forward(self, x):
        b, c, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x).view(b, self.num_heads, 2 * self.key_dim + self.head_dim, n).split(
            [self.key_dim, self.key_dim, self.head_dim], dim=2)
        weights = ((q * self.scale).transpose(-2, -1) @ k).softmax(dim=-1)  # (b, heads, n, n)
        out = (v @ weights.transpose(-2, -1)).view(b, c, h, w)
        return self.proj(out + self.pe(v.reshape(b, c, h, w)))


class PSABlock(nn.Module):
    """Attention then a two-conv feed-forward, each with a residual add when ``shortcut``."""

    def __init__(self, c, attn_ratio=0.5, num_heads=4, shortcut=True):
        super().__init__()
        self.attn = Attention(c, attn_ratio=attn_ratio, num_heads=num_heads)
        self.ffn = nn.Sequential(Conv(c, c * 2, 1), Conv(c * 2, c, 1, act=False))
        self.add = shortcut

    def forward(self, x):
        x = x + self.attn(x) if self.add else self.attn(x)
        return x + self.ffn(x) if self.add else self.ffn(x)


class C2PSA(nn.Module):
    """1x1 conv to two halves; PSABlocks on the second; concatenated; 1x1 merge (input width = output width)."""

    def __init__(self, c1, c2, n=1, e=0.5):
        super().__init__()
        if c1 != c2:
            raise ValueError(f"C2PSA needs c1 == c2, got {c1} and {c2}")
        self.c = int(c1 * e)
        self.cv1 = Conv(c1, 2 * self.c, 1, 1)
        self.cv2 = Conv(2 * self.c, c1, 1)
        self.m = nn.Sequential(*(PSABlock(self.c, attn_ratio=0.5, num_heads=max(self.c // 64, 1)) for _ in range(n)))

    def forward(self, x):
        a, b = self.cv1(x).split((self.c, self.c), dim=1)
        return self.cv2(torch.cat((a, self.m(b)), 1))
