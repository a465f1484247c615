"""Detect which YOLO family a module tree is, from its structure (not from file names).

Why structure: users rename checkpoints freely, and forks keep upstream class names. The family picks
the default ignore policy (keep the final detect convs in float: TensorRT runs an INT8-input conv with
a float output for free, and the box regression is the most quantization-sensitive layer) and the
family's rule file.
"""
from __future__ import annotations

from dataclasses import dataclass

DETECT_CLASSES = ("Detect", "IDetect", "IAuxDetect", "IBin", "IKeypoint", "Segment")
YOLOV7_MARKERS = {"MP", "SPPCSPC", "RepConv", "IDetect", "IAuxDetect", "ImplicitA", "ImplicitM", "SP", "ReOrg"}
YOLOV5_MARKERS = {"C3", "SPPF", "C3TR", "C3Ghost", "C3SPP"}


@dataclass(frozen=True)
class FamilyInfo:
    """What trtqat knows about a model's family."""

    name: str  # "yolov5" | "yolov7" | "unknown"
    detect_index: int | None  # index of the Detect layer in model.model
    detect_name: str | None  # dotted module name, e.g. "model.105"
    num_layers: int

    @property
    def default_ignore(self) -> tuple[str, ...]:
        """Keep the detect head's output convs in float (``model\\.24\\.m\\..*`` for yolov5s)."""
        if self.detect_name is None:
            return ()
        return (self.detect_name.replace(".", r"\.") + r"\.m\..*",)

    def to_dict(self) -> dict:
        return {"family": self.name, "detect": self.detect_name, "layers": self.num_layers}


def detect_family(model) -> FamilyInfo:
    """Classify ``model`` as yolov5 / yolov7 / unknown by the classes it contains."""
    classes = {type(m).__name__ for m in model.modules()}
    layers = getattr(model, "model", None)
    seq = list(layers) if layers is not None and hasattr(layers, "__iter__") else []
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
    return FamilyInfo(name=name, detect_index=detect_index, detect_name=detect_name, num_layers=len(seq))


def model_stride(model) -> int:
    """The largest stride of the detect outputs (input sizes must be a multiple of it)."""
    stride = getattr(model, "stride", None)
    try:
        return int(max(float(s) for s in stride))  # tensor or list
    except Exception:
        return 32
