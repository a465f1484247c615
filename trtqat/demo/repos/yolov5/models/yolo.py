"""Detection head and whole model of the scratch YOLOv5-shaped network (trtqat fixture).

The layer list reproduces the yolov5s.yaml (v7.0) topology: 10 backbone layers ending in SPPF
(``model.9``), a PAN head, and ``Detect`` at ``model.24``. Channels are scaled by ``width_multiple``
(default 0.125, a quarter of yolov5s) so a 640x640 CPU forward stays fast in tests.
"""
import copy
import math

import torch
from torch import nn
from utils import fold_bn_into_conv, make_divisible

from models.common import C3, SPPF, Bottleneck, Concat, Conv

ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]

# [from, repeats, module, args] per layer; the same layout as the upstream YAML files.
YOLOV5S = {
    "nc": 80,
    "depth_multiple": 0.33,
    "width_multiple": 0.125,
    "anchors": ANCHORS,
    "backbone": [
        [-1, 1, "Conv", [64, 6, 2, 2]],  # 0 P1/2
        [-1, 1, "Conv", [128, 3, 2]],  # 1 P2/4
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],  # 3 P3/8
        [-1, 6, "C3", [256]],
        [-1, 1, "Conv", [512, 3, 2]],  # 5 P4/16
        [-1, 9, "C3", [512]],
        [-1, 1, "Conv", [1024, 3, 2]],  # 7 P5/32
        [-1, 3, "C3", [1024]],
        [-1, 1, "SPPF", [1024, 5]],  # 9
    ],
    "head": [
        [-1, 1, "Conv", [512, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 6], 1, "Concat", [1]],
        [-1, 3, "C3", [512, False]],  # 13
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [[-1, 4], 1, "Concat", [1]],
        [-1, 3, "C3", [256, False]],  # 17 (P3/8 out)
        [-1, 1, "Conv", [256, 3, 2]],
        [[-1, 14], 1, "Concat", [1]],
        [-1, 3, "C3", [512, False]],  # 20 (P4/16 out)
        [-1, 1, "Conv", [512, 3, 2]],
        [[-1, 10], 1, "Concat", [1]],
        [-1, 3, "C3", [1024, False]],  # 23 (P5/32 out)
        [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],  # 24
    ],
}


class Detect(nn.Module):
    """Per-level 1x1 prediction convs plus the box decode (sigmoid, grid offsets, anchor scaling).

    ``anchors`` is a buffer in grid units (pixels / stride), filled in by the model after the strides are
    known. ``grid``/``anchor_grid`` are caches rebuilt whenever the feature map size changes.
    """

    stride = None
    dynamic = False
    export = False

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.inplace = inplace

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.training:
                continue
            if self.dynamic or self.grid[i].shape[2:4] != x[i].shape[2:4]:
                self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
            xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + self.grid[i]) * self.stride[i]
            wh = (wh * 2) ** 2 * self.anchor_grid[i]
            y = torch.cat((xy, wh, conf), 4)
            z.append(y.view(bs, self.na * nx * ny, self.no))
        if self.training:
            return x
        return (torch.cat(z, 1),) if self.export else (torch.cat(z, 1), x)

    def _make_grid(self, nx=20, ny=20, i=0):
        """Cell offsets (shifted by -0.5 so ``2*sigmoid`` spans [-0.5, 1.5]) and pixel anchors, both
        broadcast to (1, na, ny, nx, 2)."""
        device, dtype = self.anchors[i].device, self.anchors[i].dtype
        shape = (1, self.na, ny, nx, 2)
        ys = torch.arange(ny, device=device, dtype=dtype)
        xs = torch.arange(nx, device=device, dtype=dtype)
        yv, xv = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid


MODULES = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "Bottleneck": Bottleneck, "Concat": Concat,
           "nn.Upsample": nn.Upsample, "Detect": Detect}


def build_layers(spec, ch):
    """Instantiate the layer list of ``spec``; returns (nn.Sequential, sorted indices whose output is reused)."""
    nc, anchors = spec["nc"], spec["anchors"]
    gd, gw = spec["depth_multiple"], spec["width_multiple"]
    channels = [ch]
    layers, save = [], []
    for i, (f, n, name, args) in enumerate(spec["backbone"] + spec["head"]):
        cls = MODULES[name]
        args = [nc if a == "nc" else anchors if a == "anchors" else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if cls in (Conv, C3, SPPF, Bottleneck):
            c1 = channels[f]
            c2 = make_divisible(args[0] * gw, 8)
            args = [c1, c2, *args[1:]]
            if cls is C3:
                args.insert(2, n)
                n = 1
        elif cls is Concat:
            c2 = sum(channels[j] for j in f)
        elif cls is Detect:
            args.append([channels[j] for j in f])
            c2 = None
        else:
            c2 = channels[f]
        layer = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
        layer.f, layer.i = f, i
        layer.type = f"{cls.__module__}.{cls.__name__}"
        layer.np = sum(p.numel() for p in layer.parameters())
        save.extend(j % i for j in ([f] if isinstance(f, int) else f) if j != -1)
        layers.append(layer)
        channels = channels if i else []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(set(save))


class DetectionModel(nn.Module):
    """The whole detector: ``self.model`` is the flat layer list, routed by each layer's ``f``."""

    def __init__(self, cfg=None, ch=3, nc=None, anchors=None, width_multiple=None):
        super().__init__()
        self.yaml = copy.deepcopy(cfg if cfg is not None else YOLOV5S)
        if nc is not None:
            self.yaml["nc"] = nc
        if anchors is not None:
            self.yaml["anchors"] = anchors
        if width_multiple is not None:
            self.yaml["width_multiple"] = width_multiple
        self.model, self.save = build_layers(self.yaml, ch)
        self.nc = self.yaml["nc"]
        self.names = [str(i) for i in range(self.nc)]
        self.inplace = True

        detect = self.model[-1]
        probe = 256
        with torch.no_grad():
            outs = self.forward(torch.zeros(1, ch, probe, probe))
        detect.stride = torch.tensor([probe / o.shape[-2] for o in outs])
        detect.anchors /= detect.stride.view(-1, 1, 1)
        self.stride = detect.stride
        self._initialize_biases()
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03

    def forward(self, x, augment=False, profile=False, visualize=False):
        return self._forward_once(x)

    def _apply(self, fn, *args, **kwargs):
        """Like upstream: ``to()``/``cuda()``/``half()`` also reach the head's stride and grid caches, which are
        plain tensors (so ``model.to(memory_format=channels_last)`` fails on them, as it does upstream)."""
        self = super()._apply(fn, *args, **kwargs)
        head = self.model[-1]
        head.stride = fn(head.stride)
        head.grid = [fn(g) for g in head.grid]
        head.anchor_grid = [fn(g) for g in head.anchor_grid]
        return self

    def _forward_once(self, x):
        outputs = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def _initialize_biases(self):
        """Objectness/class priors so initial scores are small (about 8 objects per 640 image)."""
        detect = self.model[-1]
        with torch.no_grad():
            for conv, s in zip(detect.m, detect.stride):
                b = conv.bias.view(detect.na, -1)
                b[:, 4] += math.log(8 / (640 / float(s)) ** 2)
                b[:, 5:] += math.log(0.6 / (detect.nc - 0.99))

    def fuse(self):
        """Fold every Conv's BatchNorm into its conv and switch it to ``forward_fuse``."""
        for m in self.model.modules():
            if isinstance(m, Conv) and hasattr(m, "bn"):
                m.conv = fold_bn_into_conv(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.forward_fuse
        return self


Model = DetectionModel  # upstream keeps this alias for old checkpoints
