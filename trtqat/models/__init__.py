"""Loading upstream YOLOv5/YOLOv7 and Ultralytics YOLOv8/YOLO11/YOLO26 checkpoints, family detection and
deployment fusing.

Security: checkpoints are pickles; loading runs code from the file (``torch.load(weights_only=False)``).
"""
from .checkpoint import LoadedModel, load_checkpoint
from .device import set_memory_format, to_device
from .family import (
    LAYOUT_END2END,
    LAYOUT_ULTRALYTICS,
    LAYOUT_YOLOV5,
    FamilyInfo,
    check_supported,
    detect_family,
    model_stride,
)
from .fuse import fuse_model

__all__ = ["LoadedModel", "load_checkpoint", "FamilyInfo", "detect_family", "check_supported", "model_stride",
           "fuse_model", "set_memory_format", "to_device", "LAYOUT_YOLOV5", "LAYOUT_ULTRALYTICS", "LAYOUT_END2END"]
