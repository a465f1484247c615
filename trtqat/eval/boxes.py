"""Box formats and the inverse of the letterbox.

YOLO heads predict ``(cx, cy, w, h)`` in pixels of the *letterboxed* network input; COCO wants
``[x, y, w, h]`` (top-left corner) in pixels of the *original* image. Getting the un-mapping wrong by the
padding or the ratio costs mAP silently, so it lives in exactly one place. Functions accept numpy arrays
or torch tensors (anything with slicing, ``clip`` and ``copy``/``clone``).
"""
from __future__ import annotations

from typing import Any

from ..data.images import Letterbox


def _copy(a: Any) -> Any:
    return a.clone() if hasattr(a, "clone") else a.copy()


def xywh_to_xyxy(b: Any) -> Any:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)`` on the last axis."""
    out = _copy(b)
    out[..., 0] = b[..., 0] - b[..., 2] / 2
    out[..., 1] = b[..., 1] - b[..., 3] / 2
    out[..., 2] = b[..., 0] + b[..., 2] / 2
    out[..., 3] = b[..., 1] + b[..., 3] / 2
    return out


def xyxy_to_xywh(b: Any) -> Any:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    out = _copy(b)
    out[..., 0] = (b[..., 0] + b[..., 2]) / 2
    out[..., 1] = (b[..., 1] + b[..., 3]) / 2
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


def xyxy_to_coco(b: Any) -> Any:
    """``(x1, y1, x2, y2)`` -> COCO ``[x, y, w, h]`` (top-left corner)."""
    out = _copy(b)
    out[..., 2] = b[..., 2] - b[..., 0]
    out[..., 3] = b[..., 3] - b[..., 1]
    return out


def unletterbox(xyxy: Any, lb: Letterbox) -> Any:
    """Map ``xyxy`` boxes from the letterboxed input back to the original image, clipped to it."""
    out = _copy(xyxy)
    left, top = lb.pad
    h, w = lb.shape
    out[..., [0, 2]] = ((xyxy[..., [0, 2]] - left) / lb.ratio).clip(0, w)
    out[..., [1, 3]] = ((xyxy[..., [1, 3]] - top) / lb.ratio).clip(0, h)
    return out


def box_iou(a, b):
    """Pairwise IoU of ``xyxy`` torch boxes: (N, 4) x (M, 4) -> (N, M)."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-12)
