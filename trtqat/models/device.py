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
    model.to(dev)
    if memory_format is not None:
        set_memory_format(model, memory_format)
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


def set_memory_format(model: torch.nn.Module, memory_format: torch.memory_format) -> torch.nn.Module:
    """Lay out every 4-D parameter and buffer in ``memory_format`` (what ``model.to(memory_format=...)``
    does), without going through ``Module._apply``.

    Why: YOLOv5's Model overrides ``_apply`` to map the same function over its detect head's ``stride`` and
    grid lists, 1-D or empty tensors, and ``Tensor.to(memory_format=torch.channels_last)`` refuses anything
    but 4-D: ``model.to(memory_format=torch.channels_last)`` raises on every real YOLOv5 checkpoint.
    """
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for tensor in store.values():
                if tensor is not None and tensor.dim() == 4 and not tensor.is_contiguous(memory_format=memory_format):
                    tensor.data = tensor.data.contiguous(memory_format=memory_format)
    return model

