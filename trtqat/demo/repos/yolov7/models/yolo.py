"""Detection head and whole model of the scratch YOLOv7-shaped network (trtqat fixture).

The layer list reproduces the yolov7.yaml (training cfg) topology: 51 backbone layers of Conv / ELAN
Concat / MP blocks, SPPCSPC at ``model.51``, the ELAN-W PAN head, RepConv at ``model.102-104`` and
``IDetect`` at ``model.105`` (106 layers). Channels are scaled by ``width_multiple`` (default 0.125) so a
640x640 CPU forward stays fast in tests.
"""
import copy
import math

import torch
from torch import nn
from utils import fold_bn_into_conv, make_divisible

from models.common import MP, SPPCSPC, Concat, Conv, ImplicitA, ImplicitM, RepConv

ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]


def _elan(c_branch, c_out):
    """Backbone ELAN: two 1x1 stems, four 3x3 convs, concat of [-1, -3, -5, -6], 1x1 merge."""
    return [[-1, 1, "Conv", [c_branch, 1, 1]], [-2, 1, "Conv", [c_branch, 1, 1]],
            *[[-1, 1, "Conv", [c_branch, 3, 1]] for _ in range(4)],
            [[-1, -3, -5, -6], 1, "Concat", [1]], [-1, 1, "Conv", [c_out, 1, 1]]]


def _elan_w(c_stem, c_branch, c_out):
    """Head ELAN-W: like ELAN but concatenating all six intermediate outputs."""
    return [[-1, 1, "Conv", [c_stem, 1, 1]], [-2, 1, "Conv", [c_stem, 1, 1]],
            *[[-1, 1, "Conv", [c_branch, 3, 1]] for _ in range(4)],
            [[-1, -2, -3, -4, -5, -6], 1, "Concat", [1]], [-1, 1, "Conv", [c_out, 1, 1]]]


def _mp(c, extra=()):
    """Downsampling block: MaxPool->1x1 in parallel with 1x1->3x3/2, concatenated (plus ``extra`` routes)."""
    return [[-1, 1, "MP", []], [-1, 1, "Conv", [c, 1, 1]], [-3, 1, "Conv", [c, 1, 1]],
            [-1, 1, "Conv", [c, 3, 2]], [[-1, -3, *extra], 1, "Concat", [1]]]


YOLOV7 = {
    "nc": 80,
    "depth_multiple": 1.0,
    "width_multiple": 0.125,
    "anchors": ANCHORS,
    "backbone": [
        [-1, 1, "Conv", [32, 3, 1]],  # 0
        [-1, 1, "Conv", [64, 3, 2]],  # 1 P1/2
        [-1, 1, "Conv", [64, 3, 1]],
        [-1, 1, "Conv", [128, 3, 2]],  # 3 P2/4
        *_elan(64, 256),  # 4-11
        *_mp(128),  # 12-16 P3/8
        *_elan(128, 512),  # 17-24
        *_mp(256),  # 25-29 P4/16
        *_elan(256, 1024),  # 30-37
        *_mp(512),  # 38-42 P5/32
        *_elan(256, 1024),  # 43-50
    ],
    "head": [
        [-1, 1, "SPPCSPC", [512]],  # 51
        [-1, 1, "Conv", [256, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [37, 1, "Conv", [256, 1, 1]],  # route backbone P4
        [[-1, -2], 1, "Concat", [1]],
        *_elan_w(256, 128, 256),  # 56-63
        [-1, 1, "Conv", [128, 1, 1]],
        [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
        [24, 1, "Conv", [128, 1, 1]],  # route backbone P3
        [[-1, -2], 1, "Concat", [1]],
        *_elan_w(128, 64, 128),  # 68-75
        *_mp(128, extra=(63,)),  # 76-80
        *_elan_w(256, 128, 256),  # 81-88
        *_mp(256, extra=(51,)),  # 89-93
        *_elan_w(512, 256, 512),  # 94-101
        [75, 1, "RepConv", [256, 3, 1]],  # 102
        [88, 1, "RepConv", [512, 3, 1]],  # 103
        [101, 1, "RepConv", [1024, 3, 1]],  # 104
        [[102, 103, 104], 1, "IDetect", ["nc", "anchors"]],  # 105
    ],
}


class IDetect(nn.Module):
    """Detect head with implicit knowledge: ImplicitA before and ImplicitM after each 1x1 prediction conv.

    ``anchors`` is in grid units (pixels / stride); ``anchor_grid`` keeps the pixel anchors shaped for
    broadcasting over (bs, na, ny, nx, 2). ``fuse`` folds the implicit layers into the convs.
    """

    stride = None
    export = False
    end2end = False
    include_nms = False
    concat = False

    def __init__(self, nc=80, anchors=(), ch=()):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl
        a = torch.tensor(anchors).float().view(self.nl, -1, 2)
        self.register_buffer("anchors", a)
        self.register_buffer("anchor_grid", a.clone().view(self.nl, 1, -1, 1, 1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.ia = nn.ModuleList(ImplicitA(c) for c in ch)
        self.im = nn.ModuleList(ImplicitM(self.no * self.na) for _ in ch)

    def forward(self, x):
        for i in range(self.nl):
            x[i] = self.im[i](self.m[i](self.ia[i](x[i])))
        return self._head_output(x, fused=False)

    def fuseforward(self, x):
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
        return self._head_output(x, fused=True)

    def _head_output(self, x, fused):
        z = []
        for i in range(self.nl):
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.training:
                continue
            if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                self.grid[i] = self._make_grid(nx, ny).to(x[i].device, x[i].dtype)
            y = x[i].sigmoid()
            xy = (y[..., 0:2] * 2.0 - 0.5 + self.grid[i]) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[i]
            y = torch.cat((xy, wh, y[..., 4:]), -1)
            z.append(y.view(bs, -1, self.no))
        if self.training:
            return x
        if fused and (self.end2end or self.include_nms or self.concat):
            return torch.cat(z, 1)
        return (torch.cat(z, 1), x)

    @staticmethod
    def _make_grid(nx=20, ny=20):
        yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        return torch.stack((xv, yv), 2).view((1, 1, ny, nx, 2)).float()

    @torch.no_grad()
    def fuse(self):
        """Fold ImplicitA into the conv bias and ImplicitM into weights and bias.

        conv(x + a) = W x + (b + W a); m * (W x + b) = (m W) x + m b.
        """
        for conv, ia, im in zip(self.m, self.ia, self.im):
            w = conv.weight
            conv.bias += (w.flatten(1) @ ia.implicit.flatten().to(w.dtype)).to(conv.bias.dtype)
            scale = im.implicit.flatten()
            conv.bias *= scale
            conv.weight *= scale.view(-1, 1, 1, 1)


MODULES = {"Conv": Conv, "Concat": Concat, "MP": MP, "SPPCSPC": SPPCSPC, "RepConv": RepConv,
           "nn.Upsample": nn.Upsample, "IDetect": IDetect}


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
        if cls in (Conv, RepConv, SPPCSPC):
            c2 = make_divisible(args[0] * gw, 8)
            args = [channels[f], c2, *args[1:]]
        elif cls is Concat:
            c2 = sum(channels[j] for j in f)
        elif cls is IDetect:
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


class Model(nn.Module):
    """The whole detector: ``self.model`` is the flat layer list, routed by each layer's ``f``."""

    def __init__(self, cfg=None, ch=3, nc=None, anchors=None, width_multiple=None):
        super().__init__()
        self.yaml = copy.deepcopy(cfg if cfg is not None else YOLOV7)
        if nc is not None:
            self.yaml["nc"] = nc
        if anchors is not None:
            self.yaml["anchors"] = anchors
        if width_multiple is not None:
            self.yaml["width_multiple"] = width_multiple
        self.model, self.save = build_layers(self.yaml, ch)
        self.nc = self.yaml["nc"]
        self.names = [str(i) for i in range(self.nc)]

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

    def forward(self, x, augment=False, profile=False):
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
        """Deploy form: RepConv branches re-parameterised, Conv BN folded, IDetect implicits folded."""
        for m in self.model.modules():
            if isinstance(m, RepConv):
                m.fuse_repvgg_block()
            elif type(m) is Conv and hasattr(m, "bn"):
                m.conv = fold_bn_into_conv(m.conv, m.bn)
                delattr(m, "bn")
                m.forward = m.fuseforward
            elif isinstance(m, IDetect):
                m.fuse()
                m.forward = m.fuseforward
        return self
