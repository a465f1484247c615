"""The anchor-based YOLO detection loss used to train trtqat's reference fixtures (written from the method).

Why trtqat has a training loss at all: quantization error is only visible on a model that has learnt
something, and trtqat cannot ship upstream weights or upstream (GPL) code. So the fixtures are trained here,
with the loss described in the YOLOv4/YOLOv5 publications and documentation:

* **Assignment by shape, not IoU.** A ground-truth box is matched to an anchor of a level when the
  width and height ratios box/anchor are both within ``1/anchor_t .. anchor_t`` (4 by default). Every
  level and every anchor that passes is a positive, so a box may train several anchors.
* **Neighbouring cells.** Besides the cell holding the box centre, the two adjacent cells nearest the
  centre (left or right, up or down) also predict it: the decoded centre ``2*sigmoid - 0.5`` spans
  ``-0.5 .. 1.5`` cells, so a neighbour can reach it. Three times as many positives, faster training.
* **Box loss** ``1 - CIoU`` between the decoded prediction (``xy = 2*sigmoid - 0.5``, ``wh =
  (2*sigmoid)^2 * anchor``, the same decode as the models' heads) and the target, in grid units.
* **Objectness** BCE over every cell and anchor; positives have the (detached, clamped) CIoU as target,
  so the confidence learns box quality. Levels are weighted 4 / 1 / 0.4 (P3 / P4 / P5): small-object
  levels have many more negatives.
* **Classes** BCE on the positives only (independent sigmoids, as the heads decode them).

The gains (box 0.05, objectness 1.0, classes 0.5) are scaled by 3 / levels, objectness by
``(image size / 640)^2`` (fewer cells) and classes by ``classes / 80``, as the YOLOv5 documentation
describes; the sum is multiplied by the batch size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

LEVEL_BALANCE = (4.0, 1.0, 0.4)


@dataclass(frozen=True)
class LossGains:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0


def ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of paired ``(cx, cy, w, h)`` boxes (N, 4): IoU minus the normalised centre distance
    and an aspect-ratio consistency term (Zheng et al., 2020, "Distance-IoU Loss")."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    w1, h1, w2, h2 = w1.clamp(min=eps), h1.clamp(min=eps), w2.clamp(min=eps), h2.clamp(min=eps)
    l1, r1, t1, b1 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    l2, r2, t2, b2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(r1, r2) - torch.max(l1, l2)).clamp(0) * (torch.min(b1, b2) - torch.max(t1, t2)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw, ch = torch.max(r1, r2) - torch.min(l1, l2), torch.max(b1, b2) - torch.min(t1, t2)
    diag2 = cw ** 2 + ch ** 2 + eps
    dist2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (dist2 / diag2 + v * alpha)


class DetectionLoss:
    """Loss of a YOLOv5/YOLOv7 ``Detect``/``IDetect`` head in training mode.

    Args:
        head: the detect module (``anchors`` (levels, anchors, 2) in grid units, ``stride``, ``nc``).
        image_size: the square training input size in pixels.
    """

    def __init__(self, head: nn.Module, image_size: int, gains: LossGains = LossGains()):
        self.anchors = head.anchors.detach().float().clone()  # grid units, (nl, na, 2)
        self.nl, self.na, self.nc = int(head.nl), int(head.na), int(head.nc)
        self.gains = gains
        self.image_size = float(image_size)
        scale = 3 / self.nl
        self.box_gain = gains.box * scale
        self.obj_gain = gains.obj * scale * (image_size / 640) ** 2
        self.cls_gain = gains.cls * scale * self.nc / 80
        self.balance = LEVEL_BALANCE if self.nl == 3 else (4.0, 1.0, 0.25, 0.06, 0.02)[: self.nl]
        self.bce = nn.BCEWithLogitsLoss()

    def __call__(self, preds: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``preds``: per level (bs, na, ny, nx, 5 + nc) raw logits; ``targets``: (n, 6) rows of
        ``image index, class, cx, cy, w, h`` in input pixels. Returns the loss and its parts."""
        device = preds[0].device
        lbox = torch.zeros((), device=device)
        lobj = torch.zeros((), device=device)
        lcls = torch.zeros((), device=device)
        bs = preds[0].shape[0]
        for level, pred in enumerate(preds):
            pred = pred.float()
            tobj = torch.zeros(pred.shape[:4], device=device)
            b, a, gj, gi, tbox, tcls, anchors = self._build_targets(level, pred.shape, targets.to(device))
            if b.numel():
                p = pred[b, a, gj, gi]
                pxy = p[:, :2].sigmoid() * 2 - 0.5
                pwh = (p[:, 2:4].sigmoid() * 2) ** 2 * anchors
                iou = ciou(torch.cat((pxy, pwh), 1), tbox)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.zeros_like(p[:, 5:])
                    t[torch.arange(t.shape[0], device=device), tcls] = 1.0
                    lcls = lcls + self.bce(p[:, 5:], t)
            lobj = lobj + self.bce(pred[..., 4], tobj) * self.balance[level]
        lbox, lobj, lcls = lbox * self.box_gain, lobj * self.obj_gain, lcls * self.cls_gain
        total = (lbox + lobj + lcls) * bs
        return total, {"box": lbox.item(), "obj": lobj.item(), "cls": lcls.item()}

    def _build_targets(self, level: int, shape: torch.Size, targets: torch.Tensor):
        """Positives of one level: (image, anchor, row, col) indices, target boxes relative to their cell
        (grid units), classes and the matched anchors."""
        _, _, ny, nx, _ = shape
        device = targets.device
        anchors = self.anchors[level].to(device)  # (na, 2) grid units
        empty = torch.zeros(0, dtype=torch.long, device=device)
        nothing = (empty, empty, empty, empty, torch.zeros(0, 4, device=device), empty, torch.zeros(0, 2, device=device))
        if not targets.shape[0]:
            return nothing
        # boxes in grid units of this level: pixels / stride == pixels / image size * cells
        scale = torch.tensor([nx, ny, nx, ny], device=device, dtype=torch.float32) / self.image_size
        gbox = targets[:, 2:6] * scale
        ratio = gbox[None, :, 2:4] / anchors[:, None]  # (na, nt, 2)
        match = torch.max(ratio, 1 / ratio).max(2).values < self.gains.anchor_t  # (na, nt)
        ai, ti = match.nonzero(as_tuple=True)
        if not ai.numel():
            return nothing
        g = gbox[ti]
        gxy = g[:, :2]
        gxy_inv = torch.stack((nx - gxy[:, 0], ny - gxy[:, 1]), 1)
        left, up = ((gxy % 1 < 0.5) & (gxy > 1)).T
        right, down = ((gxy_inv % 1 < 0.5) & (gxy_inv > 1)).T
        offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * 0.5
        use = torch.stack((torch.ones_like(left), left, up, right, down))  # (5, matches)
        k, m = use.nonzero(as_tuple=True)
        cells = (gxy[m] - offsets[k]).long()
        gi = cells[:, 0].clamp(0, nx - 1)
        gj = cells[:, 1].clamp(0, ny - 1)
        tbox = torch.cat((gxy[m] - torch.stack((gi, gj), 1).float(), g[m, 2:4]), 1)
        t = ti[m]
        return targets[t, 0].long(), ai[m], gj, gi, tbox, targets[t, 1].long(), anchors[ai[m]]
