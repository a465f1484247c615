"""Detector output layouts: which one a model writes, checked against its shape, turned into detections.

Why: the same letterbox, NMS and COCO metric only mean something when every output is read the way its
model wrote it. Three decoded layouts exist, each with a string id (``--layout``, ``--json``):

=============  ==================  ==========================================================================
id             shape               content (boxes in pixels of the letterboxed network input)
=============  ==================  ==========================================================================
``yolov5``     ``[B, N, 5+nc]``    cx, cy, w, h, objectness, class probabilities (YOLOv5 v7.0, YOLOv7, trtqat)
``ultralytics`` ``[B, 4+nc, N]``   cx, cy, w, h, class scores (sigmoid), no objectness (YOLOv8, YOLO11, ...)
``end2end``    ``[B, K, 6]``       x1, y1, x2, y2, score, class id, already selected (YOLO26, YOLOv10, NMS-free)
=============  ==================  ==========================================================================

Which layout: ``--layout`` when given; else what the file says (ONNX ``metadata_props``: the Ultralytics
exporter's ``end2end`` / ``task`` keys, the YOLOv5 exporter's ``stride`` + ``names``, trtqat's ``family``
or ``output_layout``); else the model (a checkpoint's detect head); else the output shape alone. Whatever
the source, the layout is checked against the shape (``nc`` from the metadata ``names`` where present)
and, on the first batch, against the values (score columns in [0, 1], end2end class ids integers in
[0, nc)). A shape no layout explains, or one that two explain with nothing to decide between them, is a
one-line error: never a guess.

Conversion: ``ultralytics`` is transposed to ``[B, N, 4+nc]`` and given an objectness of 1, so that the
shared :func:`~trtqat.eval.nms.non_max_suppression` scores each box by its class score (objectness x class
probability = class score): exactly the Ultralytics convention, through the one NMS. ``end2end`` outputs
were selected in the model: no NMS runs, only the confidence threshold and ``max_det`` (highest scores).
All three end as per-image ``(n, 6)`` rows ``x1, y1, x2, y2, score, class`` in input pixels, which the
caller maps back through the letterbox like every other model.
"""
from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError, UsageError
from .fidelity import decoded_predictions
from .nms import non_max_suppression

YOLOV5 = "yolov5"
ULTRALYTICS = "ultralytics"
END2END = "end2end"
#: layout id -> its shape, in the order messages list them
LAYOUTS: dict[str, str] = {YOLOV5: "[B, N, 5+nc]", ULTRALYTICS: "[B, 4+nc, N]", END2END: "[B, K, 6]"}
KNOWN = ", ".join(f"{k} {v}" for k, v in LAYOUTS.items())
#: how far a score may leave [0, 1] (FP16 rounding of a sigmoid) before the values rule a layout out
SCORE_SLACK = 1e-2

Dim = int | None  # None: symbolic (decided by the first batch)


def check_layout_name(name: str | None, what: str = "--layout") -> str | None:
    """``name`` when it is a layout id (or None); UsageError otherwise."""
    if name is not None and name not in LAYOUTS:
        raise UsageError(f"{what} {name!r} is not a detector layout", f"Use one of {', '.join(LAYOUTS)}")
    return name


@dataclass(frozen=True)
class LayoutHint:
    """What a file or model says about its output: the layout (None: nothing), where from, its class count."""

    layout: str | None = None
    origin: str = ""  # "metadata" | "--layout" | "model"
    nc: int | None = None


def names_count(text: str | None) -> int | None:
    """Number of classes in a ``names`` metadata value (a Python dict or list literal, or JSON), else None."""
    if not text:
        return None
    for parse in (ast.literal_eval, json.loads):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (dict, list, tuple)) and value:
            return len(value)
    return None


def _true(text: str | None) -> bool:
    return str(text).strip().lower() in ("true", "1", "yes")


def _nms_in_graph(args: str | None) -> bool:
    """The Ultralytics exporter's ``args`` metadata (a dict literal) with ``nms: True`` (NMS exported in)."""
    try:
        value = ast.literal_eval(args) if args else None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("nms") is True


def hint_from_metadata(meta: Mapping[str, str], source: str) -> LayoutHint:
    """The layout an ONNX file's ``metadata_props`` declare (see module docstring); LayoutHint() when none.

    Raises:
        InputError: an Ultralytics model of another task (segment, pose, ...), or an unknown ``output_layout``.
    """
    nc = names_count(meta.get("names"))
    if meta.get("output_layout"):
        layout = meta["output_layout"]
        if layout not in LAYOUTS:
            raise InputError(f"{source}: metadata output_layout {layout!r} is none of the detector layouts trtqat "
                             f"reads ({KNOWN})", "Pass the layout with --layout")
        return LayoutHint(layout, "metadata", nc)
    if "end2end" in meta or "task" in meta:  # the Ultralytics package's exporter (YOLOv8 and later)
        task = meta.get("task", "detect")
        if task != "detect":
            raise InputError(f"{source} is an Ultralytics {task!r} model (metadata task); trtqat eval scores "
                             "detection models", "Export a detection model (task=detect)")
        end2end = _true(meta.get("end2end")) or _nms_in_graph(meta.get("args"))
        return LayoutHint(END2END if end2end else ULTRALYTICS, "metadata", nc)
    if meta.get("family") in ("yolov5", "yolov7") and "trtqat_version" in meta:  # trtqat export
        return LayoutHint(YOLOV5, "metadata", nc)
    if "stride" in meta and "names" in meta:  # YOLOv5's export.py writes exactly these two
        return LayoutHint(YOLOV5, "metadata", nc)
    return LayoutHint(None, "", nc)


def square_imgsz(meta: Mapping[str, str]) -> int | None:
    """The square input size an Ultralytics export records (``imgsz``: ``[640, 640]`` or ``640``), else None."""
    try:
        value = ast.literal_eval(meta.get("imgsz") or "None")
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1] and isinstance(value[0], int):
        return value[0] if value[0] > 0 else None
    return None


def onnx_metadata(path: str | Path) -> dict[str, str] | None:
    """The ``metadata_props`` of an ONNX file, or None when it is not a readable ONNX file."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises several types; the caller falls back to the shape
        return None
    return {p.key: p.value for p in model.metadata_props}


def engine_hint(engine: str | Path) -> LayoutHint:
    """An engine's layout from the ONNX it was built from, named in ``<engine>.build.json`` (trtqat build),
    when that file is still there; LayoutHint() otherwise (the engine's shape decides)."""
    from ..trt.engine import read_build_meta

    build = read_build_meta(engine) or {}
    onnx_path = build.get("onnx")
    meta = onnx_metadata(onnx_path) if onnx_path and Path(onnx_path).is_file() else None
    return hint_from_metadata(meta, str(onnx_path)) if meta else LayoutHint()


def _dims(shape: Sequence) -> list[Dim]:
    """Shape entries as ints, None where symbolic (a name, '?', or TensorRT's -1)."""
    return [int(d) if isinstance(d, int) and d > 0 else None for d in shape]


def _fits(layout: str, shape: list[Dim], nc: int | None, nc_min: int = 1,
          declared: bool = False) -> tuple[bool | None, int | None]:
    """(True / False / None = not decidable yet, the class count it implies) for a rank-3 ``shape``.

    When the shape alone decides (not ``declared``) and no exact ``nc`` is known, the candidates must also
    outnumber the channels (N > 5+nc, N > 4+nc): a detector's candidate count does at any practical input
    size, and it tells ``[B, N, 5+nc]`` from ``[B, 4+nc, N]``.
    """
    _, a, c = shape
    if layout == END2END:
        return (None if c is None else c == 6), nc
    channels, count, extra = (c, a, 5) if layout == YOLOV5 else (a, c, 4)
    if channels is None:
        return None, nc
    implied = channels - extra
    if implied < max(1, nc_min) or (nc is not None and implied != nc):
        return False, implied
    if nc is None and not declared:  # nothing to check against: the candidates must outnumber the channels
        if count is None:
            return None, implied
        if count <= channels:
            return False, implied
    return True, implied


def _shown(shape: Sequence) -> list:
    """A shape as messages print it: ints, and the names (or '?') of symbolic dims."""
    return [d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else "?") for d in shape]


def _for_nc(nc: int | None) -> str:
    return f" for nc={nc}" if nc else ""


def _from(origin: str) -> str:
    """Where a layout came from, as messages say it."""
    return {"metadata": "the file's metadata", "model": "the model", "shape": "the output shape"}.get(origin, origin)


def resolve_layout(shape: Sequence, hint: LayoutHint, *, source: str, nc_min: int = 1,
                   final: bool = False) -> tuple[str | None, int | None]:
    """(layout, nc) for an output of ``shape`` given what the file says; (None, nc) when only the first
    batch can tell (symbolic dims; ``final=False``). ``final=True``: ``shape`` is an actual output's.

    Raises:
        InputError: the shape fits no layout, not the declared one, or several with nothing to choose.
    """
    dims = _dims(shape)
    shown = _shown(shape)
    if len(dims) != 3:
        raise InputError(f"{source} has shape {shown}, which is none of the detector layouts trtqat reads "
                         f"({KNOWN}){_for_nc(hint.nc)}", "Evaluate a detection model with one decoded output")
    fits = {name: _fits(name, dims, hint.nc, nc_min) for name in LAYOUTS}
    if hint.layout is not None:
        ok, nc = _fits(hint.layout, dims, hint.nc, declared=True)
        if ok is False:
            others = [name for name, (o, _) in fits.items() if o and name != hint.layout]
            fix = (f"It fits {others[0]} {LAYOUTS[others[0]]}: pass --layout {others[0]}" if others else
                   f"Pass the layout the model writes with --layout ({', '.join(LAYOUTS)})")
            if hint.origin == "metadata":
                fix += ", or fix the file's metadata"
            raise InputError(f"{source} has shape {shown}, which is not the {hint.layout} layout "
                             f"{LAYOUTS[hint.layout]}{_for_nc(hint.nc)} (layout from {_from(hint.origin)})", fix)
        return hint.layout, nc if nc is not None else hint.nc
    sure = [name for name, (ok, _) in fits.items() if ok is True]
    maybe = [] if final else [name for name, (ok, _) in fits.items() if ok is None]
    if not sure and not maybe:
        labels = f" with the labels' {nc_min} classes" if hint.nc is None and nc_min > 1 else ""
        raise InputError(f"{source} has shape {shown}, which is none of the detector layouts trtqat reads "
                         f"({KNOWN}){_for_nc(hint.nc)}{labels}",
                         "Evaluate a detection model with one of these outputs, or pass --layout")
    if len(sure) == 1 and not maybe:
        return sure[0], fits[sure[0]][1]
    if maybe:
        return None, hint.nc
    named = " and ".join(f"{name} {LAYOUTS[name]}" for name in sure)
    raise InputError(f"{source} has shape {shown}, which fits the {named} layouts alike, and the file does not "
                     "say which", f"Pass {' or '.join(f'--layout {n}' for n in sure)}")


class OutputDecoder:
    """Turns one model's outputs into per-image detections, checking its layout on the first batch.

    Args:
        hint: the layout and class count the file, the model or ``--layout`` give (layout None: the shape
            decides, possibly only at the first batch).
        source: how messages name the output (``model.onnx output 'output0'``).
        nc_min: the labels' highest class + 1 (a lower bound on the model's class count; 1 when unknown).
    """

    def __init__(self, hint: LayoutHint, *, source: str, nc_min: int = 1):
        self.hint = hint
        self.source = source
        self.nc_min = nc_min
        self.layout: str | None = hint.layout
        self.origin = hint.origin
        self.nc: int | None = hint.nc
        self._values_checked = False

    def probe(self, shape: Sequence) -> None:
        """Check a declared output shape before anything runs (symbolic dims wait for :meth:`settle`)."""
        layout, nc = resolve_layout(shape, self.hint, source=self.source, nc_min=self.nc_min)
        if layout is not None:
            self.layout, self.nc = layout, nc
            self.origin = self.hint.origin or "shape"

    def settle(self, pred: torch.Tensor) -> None:
        """Decide (first call) and check the layout against an actual output ``pred``."""
        decided = self.hint if self.layout is None else LayoutHint(self.layout, self.origin, self.nc)
        layout, nc = resolve_layout(list(pred.shape), decided, source=self.source, nc_min=self.nc_min, final=True)
        if self.layout is None:
            self.origin = "shape"
        self.layout, self.nc = layout, nc
        if not self._values_checked:
            self._check_values(pred)
            self._values_checked = True

    def _check_values(self, pred: torch.Tensor) -> None:
        pred = pred.detach().float()
        scores = {YOLOV5: pred[..., 4:], ULTRALYTICS: pred[:, 4:, :], END2END: pred[..., 4]}[self.layout]
        finite = scores[torch.isfinite(scores)]
        if finite.numel() and (finite.min() < -SCORE_SLACK or finite.max() > 1 + SCORE_SLACK):
            self._values_error(f"score values from {float(finite.min()):.4g} to {float(finite.max()):.4g}, "
                               "outside [0, 1]")
        if self.layout == END2END:
            cls = pred[..., 5][pred[..., 4] > 0]
            cls = cls[torch.isfinite(cls)]
            top = self.nc if self.nc is not None else float("inf")
            if cls.numel() and (not torch.equal(cls, cls.round()) or cls.min() < 0 or cls.max() >= top):
                self._values_error(f"class column values from {float(cls.min()):.4g} to {float(cls.max()):.4g}, "
                                   f"not class ids in [0, {self.nc or 'nc'})")

    def _values_error(self, what: str) -> None:
        fix = "Pass the layout the model writes with --layout" if self.origin != "--layout" else \
            "Check --layout: this output is not written in that layout"
        raise InputError(f"{self.source} has {what}, so it is not the {self.layout} layout {LAYOUTS[self.layout]} "
                         f"(layout from {_from(self.origin)})", fix)

    def detections(self, out, *, conf_thres: float, iou_thres: float, max_det: int) -> list[torch.Tensor]:
        """Model output -> per image ``(n, 6)``: x1, y1, x2, y2, score, class (input pixels)."""
        pred = decoded_predictions(out)
        self.settle(pred)
        if self.layout == YOLOV5:
            return non_max_suppression(pred, conf_thres, iou_thres, max_det=max_det)
        if self.layout == ULTRALYTICS:
            return non_max_suppression(with_objectness(pred), conf_thres, iou_thres, max_det=max_det)
        return select_end2end(pred, conf_thres, max_det)


def with_objectness(pred: torch.Tensor) -> torch.Tensor:
    """``[B, 4+nc, N]`` -> ``[B, N, 5+nc]`` with objectness 1 (score = class score; see module docstring)."""
    p = pred.float().transpose(1, 2)
    return torch.cat((p[..., :4], torch.ones_like(p[..., :1]), p[..., 4:]), -1)


def select_end2end(pred: torch.Tensor, conf_thres: float, max_det: int) -> list[torch.Tensor]:
    """``[B, K, 6]`` end-to-end rows -> per image the rows above ``conf_thres``, best ``max_det`` first. No NMS:
    the model already selected them."""
    out = []
    for p in pred.float():
        p = p[p[:, 4] > conf_thres]
        p = p[p[:, 4].argsort(descending=True, stable=True)[:max_det]]
        out.append(p)
    return out


def module_hint(model, layout: str | None = None, *, family=None) -> LayoutHint:
    """A torch module's layout: ``layout`` when given, else its family's ``output_layout`` (``family``, else
    :func:`~trtqat.models.family.detect_family`; yolov5 for YOLOv5/YOLOv7 and wherever the family has no
    such attribute), and its detect head's ``nc``."""

    layers = getattr(model, "model", None)
    head = layers[-1] if layers is not None and hasattr(layers, "__getitem__") and len(layers) else None
    nc = getattr(head, "nc", None)
    nc = int(nc) if isinstance(nc, int) and nc > 0 else None
    if layout is not None:
        return LayoutHint(check_layout_name(layout), "--layout", nc)
    if family is None:
        from ..models.family import detect_family

        family = detect_family(model)
    return LayoutHint(check_layout_name(getattr(family, "output_layout", None) or YOLOV5, "output_layout"),
                      "model", nc)


def decoder_for(model, layout: str | None = None) -> OutputDecoder:
    """The decoder of a runner (its own) or of a torch module (:func:`module_hint`)."""
    own = getattr(model, "decoder", None)
    if isinstance(own, OutputDecoder):
        return own
    return OutputDecoder(module_hint(model, layout), source=f"{type(model).__name__} output")
