"""Trace a (fake-)quantized model to ONNX with QuantizeLinear/DequantizeLinear nodes.

The low-level step shared by ``trtqat export`` (user-facing, cleaned and verified) and the scale-sharing
rule discovery (a temporary graph). Why the TorchScript exporter (``dynamo=False``): it maps
``torch.fake_quantize_per_{tensor,channel}_affine`` (what pytorch-quantization emits with
``use_fb_fake_quant``) to Q/DQ pairs, per-channel on the weight axis, with int8 zero points.

The detect head returns ``(decoded, raw_list)`` in eval mode upstream (YOLOv5 v7.0 and YOLOv7 alike);
:class:`HeadSelect` keeps the decoded tensor (``head="decoded"``) or the raw per-stride tensors
(``head="raw"``), so the ONNX has exactly the outputs asked for. Ultralytics' Detect (YOLOv8, YOLO11,
YOLO26) returns ``(decoded, preds)`` with ``preds`` a dict of its raw box and class logits *and the
feature maps it read* (``feats``); that dict has no fixed meaning outside Ultralytics' loss, so the
decoded tensor is kept whatever ``head`` says (the rules trace asks for ``raw``: flattening the dict
made the neck outputs graph outputs, i.e. spurious float readers). ``export`` refuses ``--head raw`` for
these models before tracing.

With ``dynamic_hw`` the detect head's own ``dynamic`` flag is set during the trace (what the upstream
exporters do): the grid / anchor points are then computed in the graph from the feature-map shape instead
of being frozen as constants of the traced size.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from ._compat import quiet_absl
from .modes import onnx_export_mode

OPSET_MIN, OPSET_MAX = 13, 19


class HeadSelect(torch.nn.Module):
    """Wrap a YOLO model so its forward returns only the chosen head outputs."""

    def __init__(self, model: torch.nn.Module, head: str = "decoded"):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x):
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            if len(out) > 1 and isinstance(out[1], Mapping):  # Ultralytics: (decoded, dict of raw preds/feats)
                return out[0]
            if self.head == "raw":
                raw = out[1] if len(out) > 1 and isinstance(out[1], (list, tuple)) else out
                return tuple(raw)
            return out[0]
        return out


def _detect_head(model: torch.nn.Module):
    layers = getattr(model, "model", None)
    try:
        return layers[-1] if layers is not None and len(layers) else None
    except TypeError:
        return None


@contextlib.contextmanager
def dynamic_head(model: torch.nn.Module, on: bool):
    """Set the detect head's ``dynamic`` flag (grid built from the input shape) for the trace, then restore it."""
    head = _detect_head(model)
    if not on or head is None or not hasattr(head, "dynamic"):
        yield
        return
    had = "dynamic" in vars(head)
    old = vars(head).get("dynamic")
    head.dynamic = True
    try:
        yield
    finally:
        if had:
            head.dynamic = old
        else:
            del head.dynamic


def raw_output_names(n: int, strides=(8, 16, 32)) -> list[str]:
    """Names of the raw head outputs by stride: ``s8``, ``s16``, ``s32`` (more strides for P6 models)."""
    strides = list(strides) + [8 * 2 ** i for i in range(len(strides), n)]
    return [f"s{int(s)}" for s in strides[:n]]


def trace_onnx(model: torch.nn.Module, path: str | Path, *, size: int | tuple[int, int] = 640, batch: int = 1,
               opset: int = 13, head: str = "decoded", dynamic_batch: bool = False, dynamic_hw: bool = False,
               quantized: bool = True, output_names: list[str] | None = None) -> list[str]:
    """Export ``model`` (CPU, float32) to ``path``; returns the output names.

    ``quantized=False`` exports the float model (quantizers left as they are: call inside
    ``quant_disabled`` for the FP16 baseline).
    """
    quiet_absl()
    h, w = (size, size) if isinstance(size, int) else size
    wrapper = HeadSelect(model, head).eval()
    x = torch.zeros(batch, 3, h, w)
    ctx = onnx_export_mode(model) if quantized else contextlib.nullcontext()
    with ctx, dynamic_head(model, dynamic_hw), torch.no_grad():
        probe = wrapper(x)
        n_out = len(probe) if isinstance(probe, (list, tuple)) else 1
        if output_names is None:  # a single tensor (decoded, or Ultralytics whatever was asked) is "output"
            output_names = raw_output_names(n_out) if isinstance(probe, (list, tuple)) else ["output"]
        axes = {}
        if dynamic_batch or dynamic_hw:
            spec = {0: "batch"} if dynamic_batch else {}
            if dynamic_hw:
                spec.update({2: "height", 3: "width"})
            axes["images"] = spec
            for name in output_names:
                axes[name] = {0: "batch"} if dynamic_batch else {}
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (x,), str(path), dynamo=False, opset_version=opset,
                              input_names=["images"], output_names=output_names,
                              dynamic_axes=axes or None, do_constant_folding=True)
    return output_names
