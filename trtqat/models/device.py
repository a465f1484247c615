"""Move a YOLO model between devices, including the tensors upstream keeps outside parameters and buffers.

Why: YOLOv7's Detect/IDetect cache their grids in a plain list (``self.grid``), rebuild them only when
the feature-map size changes, and its Model has no ``_apply`` override (YOLOv5's has one). ``model.to``
does not move such tensors, so a model run on one device and moved to another keeps using the grid of
the first at the same input size: "Expected all tensors to be on the same device". Found on a GPU
machine: the rules trace (CPU) followed by calibration on CUDA at the same size, and a CUDA calibration
followed by saving (a pickled CUDA grid) or export.
"""
from __future__ import annotations

import torch


def to_device(model: torch.nn.Module, device: str | torch.device,
              memory_format: torch.memory_format | None = None) -> torch.nn.Module:
    """``model.to(device[, memory_format])`` plus every public plain tensor attribute, or list of tensors,
    of its modules (grids, anchor grids, strides); returns ``model``."""
    dev = torch.device(device)
    if memory_format is None:
        model.to(dev)
    else:
        model.to(dev, memory_format=memory_format)
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if name.startswith("_"):
                continue  # parameters, buffers and submodules live in _parameters/_buffers/_modules
            if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
                if value.device != dev:
                    setattr(module, name, value.to(dev))
            elif (isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value)
                  and any(v.device != dev for v in value)):
                setattr(module, name, [v.to(dev) for v in value])
    return model
