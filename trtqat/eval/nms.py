"""Non-maximum suppression for YOLO outputs: torchvision's kernel when it imports, else an exact fallback.

Why a fallback: torchvision must match the installed torch build exactly, and on many Jetson/CPU setups
it does not import. trtqat itself never needs it; the fallback below gives the same kept set as greedy
NMS (it is not the approximate "Fast NMS"): blocks of candidates are resolved with IoU matrices and the
Cluster-NMS fixed point, so there is no Python loop per box.
"""
from __future__ import annotations

import functools

import torch

from .._deps import available
from .boxes import box_iou, xywh_to_xyxy


@functools.lru_cache(maxsize=1)
def torchvision_nms_available() -> bool:
    """True when ``torchvision.ops.nms`` can be used (imported lazily, once)."""
    return available("torchvision")


def nms_fallback(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, max_keep: int | None = None,
                 block: int = 2048) -> torch.Tensor:
    """Exact greedy NMS on ``xyxy`` boxes; kept indices sorted by decreasing score (torchvision's order).

    Candidates are taken in score order in blocks of ``block``. A block is first suppressed by every box
    kept so far (one IoU matrix), then resolved internally with the Cluster-NMS fixed point (Zheng et al.,
    2020): ``keep[i] = alive[i] and no kept j < i overlaps i``, iterated until it stops changing, which is
    exactly the greedy result. ``max_keep`` stops after that many kept boxes: greedy NMS keeps boxes in
    score order, so that is the first ``max_keep`` of the full result.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    kept: list[torch.Tensor] = []
    kept_boxes = boxes.new_zeros((0, 4))
    for start in range(0, order.numel(), block):
        idx = order[start:start + block]
        b = boxes[idx]
        alive = torch.ones(idx.numel(), dtype=torch.bool, device=boxes.device)
        if kept_boxes.shape[0]:
            alive = (box_iou(kept_boxes, b) <= iou_thres).all(0)
        over = torch.triu(box_iou(b, b) > iou_thres, diagonal=1)  # over[j, i]: j (higher score) hits i
        keep = alive
        for _ in range(idx.numel() + 1):
            new = alive & ~(over & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        kept.append(idx[keep])
        kept_boxes = torch.cat((kept_boxes, boxes[idx[keep]]))
        if max_keep is not None and kept_boxes.shape[0] >= max_keep:
            break
    out = torch.cat(kept) if kept else torch.empty(0, dtype=torch.long, device=boxes.device)
    return out[:max_keep] if max_keep is not None else out


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, *, use_torchvision: bool | None = None,
        max_keep: int | None = None) -> torch.Tensor:
    """NMS on ``xyxy`` boxes (torchvision when available unless ``use_torchvision`` says otherwise);
    at most ``max_keep`` indices are returned."""
    if use_torchvision is None:
        use_torchvision = torchvision_nms_available()
    if use_torchvision:
        import torchvision

        return torchvision.ops.nms(boxes, scores, iou_thres)[:max_keep]
    return nms_fallback(boxes, scores, iou_thres, max_keep)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_thres: float,
                **kw) -> torch.Tensor:
    """Per-class NMS by offsetting each class's boxes so different classes never overlap."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() + 1)
    return nms(boxes + offset, scores, iou_thres, **kw)


def non_max_suppression(pred: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.65, *,
                        max_det: int = 300, max_nms: int = 30000, multi_label: bool = True,
                        use_torchvision: bool | None = None) -> list[torch.Tensor]:
    """Decoded YOLO predictions ``(B, N, 5 + nc)`` -> per image ``(n, 6)``: x1, y1, x2, y2, conf, class.

    Score = objectness x class probability. ``multi_label`` keeps every class above ``conf_thres`` for
    a box (the COCO-evaluation convention: it raises mAP by a point or so); otherwise the best class.
    At most ``max_nms`` candidates (highest scores) enter NMS and ``max_det`` detections leave it.
    """
    out = []
    for p in pred:
        p = p.float()
        p = p[p[:, 4] > conf_thres]
        if not p.shape[0]:
            out.append(torch.zeros((0, 6), device=pred.device))
            continue
        cls_scores = p[:, 5:] * p[:, 4:5]
        box = xywh_to_xyxy(p[:, :4])
        if multi_label:
            i, j = (cls_scores > conf_thres).nonzero(as_tuple=True)
            det = torch.cat((box[i], cls_scores[i, j, None], j[:, None].float()), 1)
        else:
            conf, j = cls_scores.max(1, keepdim=True)
            det = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if det.shape[0] > max_nms:
            det = det[det[:, 4].argsort(descending=True)[:max_nms]]
        keep = batched_nms(det[:, :4], det[:, 4], det[:, 5], iou_thres, use_torchvision=use_torchvision,
                           max_keep=max_det)
        out.append(det[keep])
    return out
