"""Whole-model classes of the scratch ``ultralytics`` fixture: ``BaseModel`` and ``DetectionModel`` (written
for trtqat's tests, not Ultralytics code).

The layer lists reproduce the YOLOv8 / YOLO11 / YOLO26 detection topologies (backbone, PAN neck, ``Detect``
at ``model.22`` or ``model.23``) in the ``[from, repeats, module, args]`` form upstream stores in
``model.yaml``, so module paths (``model.22.cv3.0.2``), ``m.i``/``m.f``/``m.type`` and the saved ``yaml`` dict
look like upstream's. Besides upstream's ``n`` scale the configs carry a thinner ``t`` scale (half the
width of ``n``) that keeps trtqat's CPU tests fast.
"""
import ast
import copy
import re

import torch
from torch import nn

from ultralytics.nn.modules import C2PSA, SPPF, Bottleneck, C2f, C3k2, Concat, Conv, Detect, DWConv

_SCALES = {  # depth, width, max channels
    "yolov8": {"n": [0.33, 0.25, 1024], "t": [0.33, 0.125, 1024]},
    "yolo11": {"n": [0.50, 0.25, 1024], "t": [0.50, 0.125, 1024]},
    "yolo26": {"n": [0.50, 0.25, 1024], "t": [0.50, 0.125, 1024]},
}


def _stem(c3k2: bool):
    """Layers 0-8: stride-2 convs and the CSP blocks between them (C2f for YOLOv8, C3k2 since YOLO11)."""
    if not c3k2:
        return [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C2f", [128, True]],
                [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C2f", [256, True]], [-1, 1, "Conv", [512, 3, 2]],
                [-1, 6, "C2f", [512, True]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C2f", [1024, True]]]
    return [[-1, 1, "Conv", [64, 3, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 2, "C3k2", [256, False, 0.25]],
            [-1, 1, "Conv", [256, 3, 2]], [-1, 2, "C3k2", [512, False, 0.25]], [-1, 1, "Conv", [512, 3, 2]],
            [-1, 2, "C3k2", [512, True]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 2, "C3k2", [1024, True]]]


def _neck(p4, p3_args, p4_args, p5_args, mid_args, src_p4, src_p5, detect_from):
    """The PAN neck: two upsample+concat steps down to P3, two stride-2 conv+concat steps back to P5."""
    return [[-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, p4], 1, "Concat", [1]], [-1, *mid_args],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]], [[-1, p4 - 2], 1, "Concat", [1]], [-1, *p3_args],
            [-1, 1, "Conv", [256, 3, 2]], [[-1, src_p4], 1, "Concat", [1]], [-1, *p4_args],
            [-1, 1, "Conv", [512, 3, 2]], [[-1, src_p5], 1, "Concat", [1]], [-1, *p5_args],
            [detect_from, 1, "Detect", ["nc"]]]


CONFIGS = {
    "yolov8": {"nc": 80, "scales": _SCALES["yolov8"],
               "backbone": _stem(False) + [[-1, 1, "SPPF", [1024, 5]]],
               "head": _neck(6, [3, "C2f", [256]], [3, "C2f", [512]], [3, "C2f", [1024]], [3, "C2f", [512]],
                             12, 9, [15, 18, 21])},
    "yolo11": {"nc": 80, "scales": _SCALES["yolo11"],
               "backbone": _stem(True) + [[-1, 1, "SPPF", [1024, 5]], [-1, 2, "C2PSA", [1024]]],
               "head": _neck(6, [2, "C3k2", [256, False]], [2, "C3k2", [512, False]],
                             [2, "C3k2", [1024, True]], [2, "C3k2", [512, False]], 13, 10, [16, 19, 22])},
    "yolo26": {"nc": 80, "end2end": True, "reg_max": 1, "scales": _SCALES["yolo26"],
               "backbone": _stem(True) + [[-1, 1, "SPPF", [1024, 5, 3, True]], [-1, 2, "C2PSA", [1024]]],
               "head": _neck(6, [2, "C3k2", [256, True]], [2, "C3k2", [512, True]],
                             [1, "C3k2", [1024, True, 0.5, True]], [2, "C3k2", [512, True]], 13, 10, [16, 19, 22])},
}

_MODULES = {"Conv": Conv, "DWConv": DWConv, "C2f": C2f, "C3k2": C3k2, "SPPF": SPPF, "C2PSA": C2PSA,
            "Bottleneck": Bottleneck, "Concat": Concat, "Detect": Detect, "nn.Upsample": nn.Upsample}
_WIDTH_SCALED = (Conv, DWConv, C2f, C3k2, SPPF, C2PSA, Bottleneck)
_REPEATED = (C2f, C3k2, C2PSA)


def yaml_model_load(name):
    """The config dict for ``yolov8n.yaml`` / ``yolo11t.yaml`` / ``yolo26n.yaml`` ... (no files are read)."""
    match = re.fullmatch(r"(yolov8|yolo11|yolo26)([a-z])\.yaml", str(name))
    if not match or match.group(2) not in _SCALES[match.group(1)]:
        raise ValueError(f"unknown model config {name!r}")
    cfg = copy.deepcopy(CONFIGS[match.group(1)])
    cfg["scale"], cfg["yaml_file"] = match.group(2), str(name)
    return cfg


def _literal(value):
    """A config argument: strings such as ``"None"`` become Python values, names such as ``"nearest"`` stay."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def make_divisible(x, divisor=8):
    return int(-(-x // divisor) * divisor)


def parse_model(d, ch, verbose=True):
    """Instantiate the layer list of config ``d``; returns (nn.Sequential, sorted indices whose output is reused)."""
    nc, reg_max, end2end = d["nc"], d.get("reg_max", 16), d.get("end2end")
    depth, width, max_ch = d["scales"][d["scale"]]
    legacy = True  # YOLOv8-style class branches until a C3k2 shows up
    channels, layers, save = [ch], [], []
    for i, (f, n, name, args) in enumerate(d["backbone"] + d["head"]):
        cls = _MODULES[name]
        args = [nc if a == "nc" else _literal(a) for a in args]
        n = max(round(n * depth), 1) if n > 1 else n
        if cls in _WIDTH_SCALED:
            c1, c2 = channels[f], make_divisible(min(args[0], max_ch) * width, 8)
            args = [c1, c2, *args[1:]]
            if cls in _REPEATED:
                args.insert(2, n)
                n = 1
            if cls is C3k2:
                legacy = False
                if d["scale"] in ("m", "l", "x"):
                    args[3:4] = [True]
        elif cls is Concat:
            c2 = sum(channels[j] for j in f)
        elif cls is Detect:
            layer_args, c2 = [*args, reg_max, end2end, [channels[j] for j in f]], None
        else:
            c2 = channels[f]
        if cls is Detect:
            layer = Detect(*layer_args, legacy=legacy)
        else:
            layer = nn.Sequential(*(cls(*args) for _ in range(n))) if n > 1 else cls(*args)
        if cls is SPPF and len(args) <= 3:  # configs before YOLO26 keep the activation after SPPF.cv1
            layer.cv1.act = Conv.default_act
        layer.np = sum(p.numel() for p in layer.parameters())
        layer.i, layer.f, layer.type = i, f, f"{cls.__module__}.{cls.__name__}"
        save.extend(j % i for j in ([f] if isinstance(f, int) else f) if j != -1)
        layers.append(layer)
        if i == 0:
            channels = []
        channels.append(c2)
    return nn.Sequential(*layers), sorted(save)


@torch.no_grad()
def _fold_bn(conv, bn):
    """A Conv2d with bias computing ``bn(conv(x))`` (eval statistics)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True).requires_grad_(False).to(conv.weight.device)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


class BaseModel(nn.Module):
    """Routing of ``self.model`` by each layer's ``f``; fusing; device moves that reach the head's tensors."""

    def forward(self, x, *args, **kwargs):
        return self.predict(x, *args, **kwargs)

    def predict(self, x, profile=False, augment=False, embed=None):
        return self._predict_once(x)

    def _predict_once(self, x, profile=False, embed=None):
        outputs = []
        for m in self.model:
            if m.f != -1:
                x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
            x = m(x)
            outputs.append(x if m.i in self.save else None)
        return x

    def fuse(self, verbose=True, imgsz=640):
        """Fold BatchNorm into every Conv/DWConv and drop the detect branch that does not run; returns self."""
        if not self.is_fused():
            for m in self.model.modules():
                if isinstance(m, Conv) and hasattr(m, "bn"):
                    m.conv = _fold_bn(m.conv, m.bn)
                    delattr(m, "bn")
                    m.forward = m.forward_fuse
                if isinstance(m, Detect):
                    m.fuse()
            if verbose:
                print(f"{type(self).__name__} fused: {sum(p.numel() for p in self.parameters())} parameters")
        return self

    def is_fused(self):
        return not any((isinstance(m, Conv) and hasattr(m, "bn"))
                       or (isinstance(m, Detect) and m.cv2 is not None and getattr(m, "one2one_cv2", None) is not None)
                       for m in self.modules())

    def info(self, detailed=False, verbose=True, imgsz=640):
        return None

    def _apply(self, fn, *args, **kwargs):
        """``to()``/``half()``/``cuda()`` also reach the head's plain tensors (stride, anchors, strides)."""
        super()._apply(fn, *args, **kwargs)
        head = self.model[-1]
        if isinstance(head, Detect):
            head.stride = fn(head.stride)
            head.anchors = fn(head.anchors)
            head.strides = fn(head.strides)
        return self


class DetectionModel(BaseModel):
    """A YOLO detector built from a config name (``"yolo11n.yaml"``) or dict."""

    def __init__(self, cfg="yolo26n.yaml", ch=3, nc=None, verbose=True):
        super().__init__()
        self.yaml = cfg if isinstance(cfg, dict) else yaml_model_load(cfg)
        self.yaml["channels"] = ch
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(copy.deepcopy(self.yaml), ch=ch, verbose=verbose)
        self.names = {i: f"{i}" for i in range(self.yaml["nc"])}
        self.inplace = self.yaml.get("inplace", True)

        head = self.model[-1]
        head.inplace = self.inplace
        probe = 256
        self.model.eval()
        head.training = True  # training outputs carry the feature maps, whose sizes give the strides
        out = self.forward(torch.zeros(1, ch, probe, probe))
        feats = (out["one2many"] if "one2many" in out else out)["feats"]
        head.stride = torch.tensor([probe / f.shape[-2] for f in feats])
        self.stride = head.stride
        self.model.train()
        head.bias_init()
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps, m.momentum = 1e-3, 0.03
            elif isinstance(m, (nn.SiLU, nn.ReLU)):
                m.inplace = True

    @property
    def end2end(self):
        return getattr(self.model[-1], "end2end", False)

    @end2end.setter
    def end2end(self, value):
        self.model[-1].end2end = value
