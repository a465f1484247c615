"""Loading upstream YOLOv5/YOLOv7 checkpoints, family detection and deployment fusing.

Security: checkpoints are pickles; loading runs code from the file (``torch.load(weights_only=False)``).
"""
from .checkpoint import LoadedModel, load_checkpoint
from .device import set_memory_format, to_device
from .family import FamilyInfo, detect_family, model_stride
from .fuse import fuse_model

__all__ = ["LoadedModel", "load_checkpoint", "FamilyInfo", "detect_family", "model_stride", "fuse_model",
           "set_memory_format", "to_device"]
