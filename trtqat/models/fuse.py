"""Fuse a YOLO model for deployment before quantization (Conv+BN, RepConv branches, implicit layers).

Why before quantization: TensorRT folds BatchNorm into the convolution and the implicit add/mul of
YOLOv7's IDetect into the detect conv; quantizing the *fused* weights is what the engine will run, so
calibration and QAT must see the fused model (this is the reference flow: upstream ``model.fuse()``
before ``replace_to_quantization_module``).

We call the upstream ``fuse()`` when the model has one (it knows its own blocks: RepConv, IDetect; for
Ultralytics it also drops the detect branch that does not run, e.g. YOLO26's one-to-many head when its
one-to-one head runs), and fall back to a generic Conv+BN fold for other models.

Ultralytics blocks that split a tensor in two (``C2f`` and its subclasses ``C3k2``...) are switched to
their own ``forward_split`` as Ultralytics' exporter does: the same result, with a static ``Split`` in the
ONNX graph instead of ``chunk``'s shape arithmetic (a ``Shape`` node reading a quantized tensor).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging

log = logging.getLogger(__name__)


def fold_conv_bn(conv, bn):
    """Return a new Conv2d equal to ``bn(conv(x))`` (eval-mode BN statistics)."""
    import torch

    fused = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        w = conv.weight.detach().clone()
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.copy_(w * scale.reshape(-1, 1, 1, 1))
        b = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((b - bn.running_mean) * scale + bn.bias.detach())
    return fused.to(conv.weight.device)


def generic_fuse(model) -> int:
    """Fold ``m.bn`` into ``m.conv`` for every module that has both; returns how many were folded.

    The module's forward must then skip BN: we switch to its ``forward_fuse``/``fuseforward`` when it
    has one (upstream Conv blocks do) and otherwise replace ``bn`` by Identity.
    """
    import torch

    n = 0
    for m in model.modules():
        conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
        if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
            m.conv = fold_conv_bn(conv, bn)
            fast = getattr(m, "forward_fuse", None) or getattr(m, "fuseforward", None)
            if fast is not None:
                delattr(m, "bn")
                m.forward = fast
            else:
                m.bn = torch.nn.Identity()
            n += 1
    return n


def is_fused(model) -> bool:
    """True when no BatchNorm2d is left (already fused, e.g. a trtqat or deploy checkpoint)."""
    import torch

    return not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def _quiet_kwargs(fuse) -> dict:
    """``verbose=False`` where upstream ``fuse`` takes it (Ultralytics logs through handlers bound to the real
    stdout, which ``redirect_stdout`` does not catch)."""
    try:
        return {"verbose": False} if "verbose" in inspect.signature(fuse).parameters else {}
    except (TypeError, ValueError):
        return {}


def use_split_forward(model) -> int:
    """Switch every Ultralytics block that has ``forward_split`` (C2f, C3k2 ...) to it, per instance; returns
    how many. A no-op for other families."""
    n = 0
    for m in model.modules():
        if getattr(m.__dict__.get("forward"), "trtqat_forward", False):
            continue  # a quantized block's own forward (trtqat.quant.blocks): it splits statically already
        if type(m).__module__.split(".")[0] == "ultralytics" and callable(getattr(m, "forward_split", None)):
            if getattr(m, "forward", None) != m.forward_split:
                m.forward = m.forward_split
                n += 1
    return n


def fuse_model(model):
    """Fuse ``model`` in place the way upstream deployment does; return it (eval mode)."""
    model.eval()
    if is_fused(model):
        use_split_forward(model)
        return model
    if callable(getattr(model, "fuse", None)):
        import torch

        # upstream fuse() prints a banner; YOLOv7's IDetect.fuse updates biases in place, which fails on
        # parameters that require grad (a hand-saved or `model` entry): fuse without autograd
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            out = model.fuse(**_quiet_kwargs(model.fuse))
        model = out if out is not None else model
    else:
        log.info("model has no fuse(); folding Conv+BN generically (%d folded)", generic_fuse(model))
    use_split_forward(model)
    return model.eval()
