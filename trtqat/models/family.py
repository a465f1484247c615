"""Detect which YOLO family a module tree is, from its structure (not from file names).

Why structure: users rename checkpoints freely, and forks keep upstream class names. The family picks
the default ignore policy (keep the final detect convs in float: TensorRT runs an INT8-input conv with
a float output for free, and the box regression is the most quantization-sensitive layer), the family's
rule file and the layout of the model's decoded output.

Families:

- ``yolov5`` / ``yolov7``: upstream clones (``models.yolo``); ``Detect``/``IDetect``... with per-level
  output convs ``m``; output ``[B, N, 5 + nc]`` (layout ``yolov5``).
- ``ultralytics``: the ``ultralytics`` package (YOLOv8, YOLO11, YOLO26); ``Detect`` with box branches
  ``cv2``, class branches ``cv3``, ``dfl`` and, for YOLO26, the NMS-free ``one2one_cv2``/``one2one_cv3``;
  output ``[B, 4 + nc, N]`` (layout ``ultralytics``), or ``[B, 300, 6]`` (layout ``end2end``) when the
  head runs its one-to-one branch (``Detect.end2end``, what the checkpoint says; upstream 8.4 saves it off).

A model whose detect head trtqat does not know (no detect head, a head class of another task, a
``Detect`` without the expected attributes) gets ``problem`` set; :func:`check_supported` turns that into
one line, so it is never quantized with another family's policy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import InputError

DETECT_CLASSES = ("Detect", "IDetect", "IAuxDetect", "IBin", "IKeypoint", "Segment")
YOLOV7_MARKERS = {"MP", "SPPCSPC", "RepConv", "IDetect", "IAuxDetect", "ImplicitA", "ImplicitM", "SP", "ReOrg"}
YOLOV5_MARKERS = {"C3", "SPPF", "C3TR", "C3Ghost", "C3SPP"}
YOLO11_MARKERS = {"C3k2", "C2PSA"}
ULTRALYTICS_PACKAGE = "ultralytics"

#: output layouts (``FamilyInfo.output_layout``); trtqat.eval decodes each
LAYOUT_YOLOV5 = "yolov5"  # [B, N, 5 + nc]: xywh, objectness, class scores
LAYOUT_ULTRALYTICS = "ultralytics"  # [B, 4 + nc, N]: xywh, class scores (no objectness)
LAYOUT_END2END = "end2end"  # [B, max_det, 6]: x1, y1, x2, y2, score, class (no NMS needed)

#: versions of the ultralytics family (``FamilyInfo.version``)
VERSION_V8, VERSION_11, VERSION_26 = "v8", "11", "26"


@dataclass(frozen=True)
class FamilyInfo:
    """What trtqat knows about a model's family.

    ``detect_outputs`` (ultralytics) holds the dotted names of the head's branch lists that run at
    inference, with the index of their last (output) conv, e.g. ``(("model.22.cv2", 2), ("model.22.cv3", 2))``;
    ``dfl`` names the DFL module when it has a conv (``reg_max > 1``).
    """

    name: str  # "yolov5" | "yolov7" | "ultralytics" | "unknown"
    detect_index: int | None  # index of the Detect layer in model.model
    detect_name: str | None  # dotted module name, e.g. "model.105"
    num_layers: int
    version: str = ""  # ultralytics: "v8" | "11" | "26" ("" when the backbone is none of those)
    output_layout: str = ""  # "yolov5" | "ultralytics" | "end2end" ("" for unknown models)
    detect_outputs: tuple[tuple[str, int], ...] = field(default=(), repr=False)
    dfl: str | None = None
    problem: str = ""  # why trtqat refuses the model ("" when supported)

    @property
    def label(self) -> str:
        """``yolov5``, ``ultralytics 11`` ...: the family with its version, for tables."""
        return f"{self.name} {self.version}" if self.version else self.name

    @property
    def default_ignore(self) -> tuple[str, ...]:
        """Keep the detect head's output convs in float.

        YOLOv5/YOLOv7: ``model\\.24\\.m\\..*`` (every per-level output conv). Ultralytics: the last conv of
        every box and class branch that runs (``model\\.22\\.cv2\\.\\d+\\.2``, ``model\\.22\\.cv3\\.\\d+\\.2``, or
        YOLO26's ``one2one_cv2``/``one2one_cv3`` when its one-to-one head runs) and the DFL integral conv
        (``model\\.22\\.dfl\\..*``; YOLO26 has none).
        """
        if self.detect_name is None:
            return ()
        if self.name == ULTRALYTICS_PACKAGE:
            out = tuple(re.escape(branch) + r"\.\d+\." + str(last) for branch, last in self.detect_outputs)
            return out + ((re.escape(self.dfl) + r"\..*",) if self.dfl else ())
        return (self.detect_name.replace(".", r"\.") + r"\.m\..*",)

    def to_dict(self) -> dict:
        return {"family": self.name, "version": self.version, "output_layout": self.output_layout,
                "detect": self.detect_name, "layers": self.num_layers}


def _layers(model) -> list:
    layers = getattr(model, "model", None)
    return list(layers) if layers is not None and hasattr(layers, "__iter__") else []


def is_ultralytics(model) -> bool:
    """Classes from the ``ultralytics`` package, or a last layer named like a Detect head with Ultralytics'
    ``cv2``/``cv3`` branches (a fork that renamed the package)."""
    if any(type(m).__module__.split(".")[0] == ULTRALYTICS_PACKAGE for m in model.modules()):
        return True
    seq = _layers(model)
    return bool(seq) and "Detect" in type(seq[-1]).__name__ and hasattr(seq[-1], "cv2") and hasattr(seq[-1], "cv3")


def detect_family(model) -> FamilyInfo:
    """Classify ``model`` as yolov5 / yolov7 / ultralytics / unknown by the classes it contains.

    Never raises: an unsupported model gets ``problem`` set (see :func:`check_supported`).
    """
    if is_ultralytics(model):
        return _ultralytics_family(model)
    classes = {type(m).__name__ for m in model.modules()}
    seq = _layers(model)
    detect_index = None
    for i in range(len(seq) - 1, -1, -1):
        if type(seq[i]).__name__ in DETECT_CLASSES:
            detect_index = i
            break
    if classes & YOLOV7_MARKERS:
        name = "yolov7"
    elif classes & YOLOV5_MARKERS or (detect_index is not None and "Detect" in classes):
        name = "yolov5"
    else:
        name = "unknown"
    detect_name = f"model.{detect_index}" if detect_index is not None else None
    problem = ""
    if detect_index is None:
        problem = (f"no detect head found in {type(model).__name__} (expected a {'/'.join(DETECT_CLASSES[:2])} "
                   "layer at the end of model.model, or Ultralytics' Detect)")
    elif name == "unknown":
        problem = f"the {type(seq[detect_index]).__name__} head at {detect_name} belongs to no YOLO family trtqat knows"
    else:
        head = seq[detect_index]
        missing = [a for a in ("m", "anchors", "nl") if not hasattr(head, a)]
        if missing:
            problem = (f"the {type(head).__name__} head at {detect_name} has no {'/'.join(missing)} attribute, "
                       f"so it is not a {name} detect head trtqat knows")
    return FamilyInfo(name=name if not problem else "unknown", detect_index=detect_index, detect_name=detect_name,
                      num_layers=len(seq), output_layout=LAYOUT_YOLOV5 if not problem else "", problem=problem)


def _ultralytics_family(model) -> FamilyInfo:
    seq = _layers(model)
    n = len(seq)
    if not seq:
        return FamilyInfo(ULTRALYTICS_PACKAGE, None, None, 0,
                          problem=f"{type(model).__name__} has no layer list (model.model), so no detect head")
    index, head = n - 1, seq[-1]
    name = f"model.{index}"
    cls = type(head).__name__

    def refused(problem: str) -> FamilyInfo:
        return FamilyInfo(ULTRALYTICS_PACKAGE, index, name, n, problem=problem)

    if cls != "Detect":
        return refused(f"the Ultralytics {cls} head at {name} is not supported: trtqat quantizes detection models "
                       "(Detect heads of YOLOv8, YOLO11 and YOLO26)")
    missing = [a for a in ("cv2", "cv3", "dfl", "nc", "reg_max", "stride") if not hasattr(head, a)]
    if missing:
        return refused(f"the Detect head at {name} has no {'/'.join(missing)} attribute, so it is not an "
                       "Ultralytics YOLOv8/YOLO11/YOLO26 detect head trtqat knows")
    one2one = getattr(head, "one2one_cv2", None) is not None and getattr(head, "one2one_cv3", None) is not None
    end2end = bool(getattr(head, "end2end", False)) and one2one
    prefix = "one2one_" if end2end else ""
    outputs = []
    for branch in (f"{prefix}cv2", f"{prefix}cv3"):
        seqs = getattr(head, branch, None)
        lasts = {len(s) - 1 for s in seqs} if _branch_list(seqs) else set()
        if len(lasts) != 1 or not all(hasattr(s[-1], "weight") for s in seqs):
            return refused(f"the Detect head at {name} has no usable {branch} branches (per-level sequences "
                           "ending in a conv), so its output convs cannot be kept float")
        outputs.append((f"{name}.{branch}", lasts.pop()))
    dfl = getattr(head, "dfl", None)
    has_dfl = dfl is not None and hasattr(getattr(dfl, "conv", None), "weight")
    classes = {type(m).__name__ for m in model.modules()}
    if one2one or int(getattr(head, "reg_max", 16)) == 1:
        version = VERSION_26
    elif classes & YOLO11_MARKERS:
        version = VERSION_11
    elif "C2f" in classes:
        version = VERSION_V8
    else:
        version = ""
    return FamilyInfo(ULTRALYTICS_PACKAGE, index, name, n, version=version,
                      output_layout=LAYOUT_END2END if end2end else LAYOUT_ULTRALYTICS,
                      detect_outputs=tuple(outputs), dfl=f"{name}.dfl" if has_dfl else None)


def _branch_list(seqs) -> bool:
    try:
        return seqs is not None and len(seqs) > 0 and all(hasattr(s, "__len__") and len(s) > 0 for s in seqs)
    except TypeError:
        return False


def check_supported(family: FamilyInfo, source: str = "the model") -> None:
    """Refuse a model whose detect head trtqat does not know, in one line (never quantize it as YOLOv5).

    Raises:
        InputError: ``family.problem`` is set.
    """
    if family.problem:
        raise InputError(f"{source}: {family.problem}",
                         "trtqat supports YOLOv5/YOLOv7 checkpoints (with --repo) and Ultralytics YOLOv8/YOLO11/YOLO26 "
                         "detection checkpoints")


def model_stride(model) -> int:
    """The largest stride of the detect outputs (input sizes must be a multiple of it)."""
    stride = getattr(model, "stride", None)
    try:
        return int(max(float(s) for s in stride))  # tensor or list
    except Exception:
        return 32
