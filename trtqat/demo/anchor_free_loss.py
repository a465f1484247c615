"""The anchor-free YOLO detection loss for trtqat's Ultralytics-shaped fixtures (written from the method).

Why: like :mod:`trtqat.demo.detection_loss` (the anchor-based YOLOv5/YOLOv7 loss), this trains trtqat's own
scratch models on the shapes dataset so that quantization claims rest on a model that has learnt something;
no upstream (AGPL) code is used, only the published method: the anchor-free decoupled head of YOLOv8 /
YOLO11 / YOLO26, the Task-Aligned Assigner of TOOD (Feng et al., 2021), the Distribution Focal Loss of GFL
(Li et al., 2020), CIoU (Zheng et al., 2020) and the one-to-one branch of YOLOv10 / YOLO26.

Interface
---------
``AnchorFreeLoss(nc, strides=(8, 16, 32), reg_max=16, gains=AnchorFreeGains())``, called as
``loss(preds, targets) -> (total, parts)``:

* ``preds``: the head's training-mode output, either a list of one tensor per level ``[B, 4*reg_max + nc, H_l,
  W_l]`` (raw logits, box channels first, then class logits; levels in ``strides`` order), or a dict
  ``{"one2many": [...], "one2one": [...]}`` of two such lists (YOLO26's dual head; the one-to-one branch is
  assigned with top-k 1 and its loss is added to the one-to-many branch's). A branch may also be given
  flattened, as newer Ultralytics heads (and trtqat's fixture ``Detect``) return it: ``{"boxes": [B,
  4*reg_max, N], "scores": [B, nc, N], "feats": [P3, P4, P5]}`` (the same logits, levels concatenated; only
  the map sizes of ``feats`` are used).
* ``targets``: ``[M, 6]`` rows ``image index, class, cx, cy, w, h`` in input pixels, exactly what
  :class:`~trtqat.demo.detection_loss.DetectionLoss` takes (``train_fixtures.augmented_batch`` makes them).
* ``total``: scalar, ``(box + cls + dfl) * B`` (summed over branches), to call ``backward()`` on; ``parts``:
  detached ``[3]`` tensor ``box, cls, dfl`` (gains applied, not multiplied by ``B``; names in :data:`PARTS`).
  Unlike ``DetectionLoss`` (a dict with an objectness entry) there is no objectness: log
  ``dict(zip(PARTS, parts.tolist()))``.

Head output convention (what :func:`decode` computes; the model's ``Detect`` must match it exactly)
--------------------------------------------------------------------------------------------------
Per level ``l`` of stride ``s`` and map ``H x W``, the anchor point of row ``i``, column ``j`` is the cell
centre ``(ax, ay) = ((j + 0.5) * s, (i + 0.5) * s)`` in input pixels. The levels are flattened row-major
(``index = i * W + j``) and concatenated in level order, giving ``N = sum H_l * W_l`` anchors.

* **Box channels** ``0 .. 4*reg_max - 1`` are four groups of ``reg_max``, side-major: channel
  ``side * reg_max + k`` for sides ``left, top, right, bottom``. The distance of a side, in stride units, is
  ``d = sum_k k * softmax_k(logits of that side)`` (the expectation over the bins ``0 .. reg_max - 1``;
  upstream implements it as a softmax and a fixed 1x1 convolution with weights ``0 .. reg_max - 1``) for
  ``reg_max > 1`` (YOLOv8 / YOLO11: 16), and **the raw channel itself, with no activation or clamp**, for
  ``reg_max == 1`` (YOLO26: "DFL removed", direct regression; the exported graph of that head has no op
  after the box convolution, and we want the fixture's graph to have the same ops).
* **Box**: ``x1 = ax - d_left * s``, ``y1 = ay - d_top * s``, ``x2 = ax + d_right * s``,
  ``y2 = ay + d_bottom * s``; output ``cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1``.
* **Scores**: ``sigmoid`` of channels ``4*reg_max .. 4*reg_max + nc - 1`` (independent per class, no
  objectness).
* Eval output ``[B, 4 + nc, N]``: ``cx, cy, w, h`` (input pixels), then the ``nc`` scores.

:func:`decode` is the reference implementation of that convention (the tests check the loss against it).
The fixture models under ``trtqat/demo/repos`` must not import trtqat (their checkpoints unpickle in a
user's clone), so their ``Detect`` carries its own copy of the decode, as upstream's does; the fixture's
tests should compare that copy against this function.

Recommended head initialisation (model side): a positive box-branch output bias (e.g. 1.0 or 2.0: for
``reg_max == 16`` the bins start uniform, distances 7.5 strides; for ``reg_max == 1`` the distances start at
that many strides, so the first boxes are valid, non-inverted ones), class-branch bias
``log(5 / nc / (640 / s) ** 2)`` (a low prior score). With ``reg_max == 1`` nothing keeps a distance
positive: an anchor whose decoded box is inverted (``x2 <= x1``) has IoU 0 with every ground truth, so it is
never a positive and only its class score is trained (towards 0); positives are trained towards their
(positive) ground-truth distances by CIoU.

The method
----------
* **Task-aligned assignment** (:class:`TaskAlignedAssigner`, per image, on detached predictions). Candidates
  of a ground truth are the anchors whose point lies strictly inside its box (every level). Their alignment
  ``t = s**0.5 * u**6``, with ``s`` the predicted score of the ground truth's class and ``u`` the IoU of the
  decoded predicted box with the ground truth. The 10 candidates of highest ``t`` are its positives (one for
  the one-to-one branch). An anchor that is a positive of several ground truths keeps the one it overlaps
  most (highest IoU). Per ground truth, the alignment of its positives is rescaled so that its best positive
  gets the best IoU among them: ``t * max_iou / max_t``. That normalised alignment, at the ground truth's
  class, is the anchor's soft class target (0 elsewhere and for background anchors).
* **Classification**: BCE with logits over every anchor and class against those soft targets.
* **Box**: ``1 - CIoU`` of the decoded predicted box and the assigned ground truth at each positive,
  weighted by the positive's target score.
* **DFL** (``reg_max > 1`` only): the target distance ``y`` of each side (stride units, clamped to
  ``0 .. reg_max - 1.01`` so the upper bin exists) lies between bins ``k = floor(y)`` and ``k + 1``; the loss
  is the cross entropy of the side's softmax against the two-bin target ``(k + 1 - y, y - k)``, averaged over
  the four sides, weighted by the target score. Its minimum is the target's entropy, not 0. ``reg_max == 1``
  has no DFL term (``dfl`` part 0).
* Each term is summed and divided by the sum of all target scores (at least 1), then scaled by the gains
  (box 7.5, cls 0.5, dfl 1.5); the total is multiplied by the batch size, as ``DetectionLoss`` does.

Not implemented: YOLO26's ProgLoss (a schedule shifting weight between the two branches) and STAL (extra
candidates for tiny boxes); a ground truth whose box contains no anchor point has no positive (as in TOOD).
The one-to-one branch's features are detached from the neck in YOLOv10/YOLO26: that is the model's business.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .detection_loss import ciou

STRIDES = (8, 16, 32)
#: the order of the parts tensor ``AnchorFreeLoss`` returns
PARTS = ("box", "cls", "dfl")
BRANCHES = ("one2many", "one2one")


@dataclass(frozen=True)
class AnchorFreeGains:
    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


# ----------------------------------------------------------------------------------------------- decode


def make_anchors(shapes: Sequence[tuple[int, int]], strides: Sequence[float], device=None,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points ``(N, 2)`` (x, y cell centres in input pixels) and their strides ``(N, 1)`` of levels
    of map sizes ``shapes`` (``(H, W)`` each), row-major per level, levels concatenated in order."""
    points, stride_rows = [], []
    for (h, w), s in zip(shapes, strides):
        ys = (torch.arange(int(h), device=device, dtype=dtype) + 0.5) * float(s)
        xs = (torch.arange(int(w), device=device, dtype=dtype) + 0.5) * float(s)
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((xx, yy), -1).reshape(-1, 2))
        stride_rows.append(torch.full((int(h) * int(w), 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(stride_rows)


def flatten_levels(preds, strides: Sequence[float] = STRIDES):
    """``(x [B, C, N], anchors [N, 2], strides [N, 1])`` of one branch's predictions: per-level maps
    ``[B, C, H, W]``, or the flattened dict ``{"boxes": [B, 4*reg_max, N], "scores": [B, nc, N], "feats":
    [per-level maps]}`` (the map sizes are read from ``feats``)."""
    if isinstance(preds, Mapping):
        missing = {"boxes", "scores", "feats"} - set(preds)
        if missing:
            raise ValueError(f"a prediction dict needs 'boxes', 'scores' and 'feats' (missing {sorted(missing)})")
        x, shapes = torch.cat((preds["boxes"], preds["scores"]), 1), [f.shape[-2:] for f in preds["feats"]]
    else:
        x, shapes = torch.cat([p.flatten(2) for p in preds], 2), [p.shape[-2:] for p in preds]
    if len(shapes) != len(strides):
        raise ValueError(f"{len(shapes)} prediction levels but {len(strides)} strides {tuple(strides)}")
    if sum(int(h) * int(w) for h, w in shapes) != x.shape[2]:
        raise ValueError(f"{x.shape[2]} predictions but the levels {[tuple(s) for s in shapes]} have a different count")
    anchors, stride = make_anchors(shapes, strides, x.device, torch.float32)
    return x, anchors, stride


def box_distances(box_logits: torch.Tensor, reg_max: int) -> torch.Tensor:
    """``[..., 4 * reg_max]`` box logits -> ``[..., 4]`` distances left, top, right, bottom in stride units:
    the expectation over the bins for ``reg_max > 1``, the raw values for ``reg_max == 1``."""
    if reg_max == 1:
        return box_logits
    prob = box_logits.unflatten(-1, (4, reg_max)).softmax(-1)
    return prob @ torch.arange(reg_max, device=box_logits.device, dtype=prob.dtype)


def distances_to_xyxy(dist: torch.Tensor, anchors: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """``[..., N, 4]`` ltrb distances (stride units) -> ``[..., N, 4]`` boxes x1, y1, x2, y2 in pixels."""
    return torch.cat((anchors - dist[..., :2] * stride, anchors + dist[..., 2:] * stride), -1)


def xyxy_to_distances(boxes: torch.Tensor, anchors: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`distances_to_xyxy`."""
    return torch.cat((anchors - boxes[..., :2], boxes[..., 2:] - anchors), -1) / stride


def xyxy_to_xywh(b: torch.Tensor) -> torch.Tensor:
    return torch.cat(((b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]), -1)


def xywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    return torch.cat((b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2), -1)


def decode(preds, reg_max: int = 16, strides: Sequence[float] = STRIDES) -> torch.Tensor:
    """The eval-mode output ``[B, 4 + nc, N]`` (``cx, cy, w, h`` in input pixels, then sigmoid class scores)
    of one branch's training-mode output (maps ``[B, 4*reg_max + nc, H_l, W_l]`` or the flattened dict, see
    :func:`flatten_levels`): the reference decode (module docstring)."""
    x, anchors, stride = flatten_levels(preds, strides)
    x = x.float()
    dist = box_distances(x[:, : 4 * reg_max].transpose(1, 2), reg_max)
    boxes = xyxy_to_xywh(distances_to_xyxy(dist, anchors, stride)).transpose(1, 2)
    return torch.cat((boxes, x[:, 4 * reg_max:].sigmoid()), 1)


# --------------------------------------------------------------------------------------------- assigner


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU ``[B, G, N]`` of xyxy boxes ``a [B, G, 4]`` and ``b [B, N, 4]``; an inverted box has area 0."""
    a, b = a[:, :, None], b[:, None]
    iw = (torch.min(a[..., 2], b[..., 2]) - torch.max(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.min(a[..., 3], b[..., 3]) - torch.max(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih

    def area(x):
        return (x[..., 2] - x[..., 0]).clamp(min=0) * (x[..., 3] - x[..., 1]).clamp(min=0)

    return inter / (area(a) + area(b) - inter + eps)


class Assignment(NamedTuple):
    """Per anchor of each image: ``fg [B, N]`` positive or not; ``gt_index [B, N]`` the ground truth (slot in
    the image's padded list, 0 for background) it trains; ``boxes [B, N, 4]`` that ground truth's xyxy box
    in pixels; ``scores [B, N, nc]`` soft class targets (normalised alignment, 0 for background)."""
    fg: torch.Tensor
    gt_index: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor


@dataclass(frozen=True)
class TaskAlignedAssigner:
    """TOOD's task-aligned label assignment (module docstring); ``topk=1`` is the one-to-one branch's."""

    topk: int = 10
    alpha: float = 0.5
    beta: float = 6.0
    eps: float = 1e-9

    @torch.no_grad()
    def __call__(self, scores: torch.Tensor, boxes: torch.Tensor, anchors: torch.Tensor, gt_labels: torch.Tensor,
                 gt_boxes: torch.Tensor, gt_mask: torch.Tensor) -> Assignment:
        """``scores [B, N, nc]`` predicted probabilities, ``boxes [B, N, 4]`` decoded predicted xyxy boxes
        (pixels), ``anchors [N, 2]`` anchor points (pixels), ``gt_labels [B, G]`` classes, ``gt_boxes
        [B, G, 4]`` xyxy pixels and ``gt_mask [B, G]`` which of the padded slots are real."""
        bs, n, nc = scores.shape
        g = gt_boxes.shape[1]
        device = scores.device
        if g == 0:
            return Assignment(torch.zeros(bs, n, dtype=torch.bool, device=device),
                              torch.zeros(bs, n, dtype=torch.long, device=device),
                              torch.zeros(bs, n, 4, device=device), torch.zeros_like(scores))
        gt_labels = gt_labels.long().clamp(0, nc - 1)
        ax, ay = anchors[:, 0], anchors[:, 1]
        gx1, gy1, gx2, gy2 = (gt_boxes[..., i, None] for i in range(4))  # [B, G, 1] each
        margin = torch.stack((ax - gx1, ay - gy1, gx2 - ax, gy2 - ay), -1).amin(-1)  # [B, G, N]
        cand = (margin > self.eps) & gt_mask.bool()[..., None]
        iou = pairwise_iou(gt_boxes, boxes) * cand
        cls_score = scores.gather(2, gt_labels[:, None, :].expand(bs, n, g)).transpose(1, 2)  # [B, G, N]
        metric = cls_score.pow(self.alpha) * iou.pow(self.beta) * cand
        # top-k per ground truth among its candidates (non-candidates ranked below any candidate)
        k = min(self.topk, n)
        top = torch.where(cand, metric, torch.full_like(metric, -1.0)).topk(k, dim=-1).indices
        mask = torch.zeros_like(cand).scatter_(-1, top, True) & cand
        # an anchor positive for several ground truths keeps the one it overlaps most
        multi = mask.sum(1, keepdim=True) > 1
        best = torch.where(mask, iou, torch.full_like(iou, -1.0)).argmax(1)  # [B, N]
        mask = torch.where(multi, F.one_hot(best, g).transpose(1, 2).bool() & mask, mask)
        # normalised alignment: per ground truth, best positive -> its best IoU
        align = metric * mask
        norm = align * ((iou * mask).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + self.eps))
        fg = mask.any(1)
        gt_index = mask.to(torch.uint8).argmax(1)
        target = norm.amax(1) * fg
        labels = gt_labels.gather(1, gt_index)
        t_boxes = gt_boxes.gather(1, gt_index[..., None].expand(bs, n, 4))
        t_scores = F.one_hot(labels, nc).to(scores.dtype) * target[..., None]
        return Assignment(fg, gt_index, t_boxes, t_scores)


# ------------------------------------------------------------------------------------------------- loss


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[..., reg_max]`` bin logits and ``[...]`` target distances in ``0 .. reg_max - 1`` (exclusive at the
    top) -> ``[...]`` cross entropy against the two bins around the target, linearly weighted."""
    left = target.floor().long()
    w_right = target - left
    logp = logits.log_softmax(-1)
    lp_left = logp.gather(-1, left[..., None])[..., 0]
    lp_right = logp.gather(-1, (left + 1)[..., None])[..., 0]
    return -(lp_left * (1 - w_right) + lp_right * w_right)


def targets_to_padded(targets: torch.Tensor, batch_size: int, device=None):
    """``[M, 6]`` rows ``image, class, cx, cy, w, h`` -> ``labels [B, G]``, xyxy ``boxes [B, G, 4]`` and
    ``mask [B, G]`` (G: the most boxes of one image)."""
    t = targets.to(device=device, dtype=torch.float32).reshape(-1, 6)
    img = t[:, 0].long()
    if t.shape[0] and (img.min() < 0 or img.max() >= batch_size):
        raise ValueError(f"target image indices {img.min().item()}..{img.max().item()} outside a batch of {batch_size}")
    counts = torch.bincount(img, minlength=batch_size)
    g = int(counts.max()) if t.shape[0] else 0
    labels = torch.zeros(batch_size, g, dtype=torch.long, device=device)
    boxes = torch.zeros(batch_size, g, 4, device=device)
    mask = torch.zeros(batch_size, g, dtype=torch.bool, device=device)
    for b in range(batch_size):
        rows = t[img == b]
        k = rows.shape[0]
        labels[b, :k] = rows[:, 1].long()
        boxes[b, :k] = xywh_to_xyxy(rows[:, 2:6])
        mask[b, :k] = True
    return labels, boxes, mask


class AnchorFreeLoss:
    """Loss of an anchor-free (YOLOv8 / YOLO11 / YOLO26) ``Detect`` head in training mode (module docstring).

    Args:
        nc: number of classes.
        strides: the levels' strides, in the order of ``preds``.
        reg_max: bins per box side (16: YOLOv8/YOLO11, DFL; 1: YOLO26, direct distances, no DFL).
        gains: box / cls / dfl weights.
        topk, alpha, beta: the one-to-many assignment (TOOD); ``one2one_topk`` the one-to-one branch's k.
    """

    def __init__(self, nc: int, strides: Sequence[float] = STRIDES, reg_max: int = 16,
                 gains: AnchorFreeGains = AnchorFreeGains(), topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                 one2one_topk: int = 1):
        if reg_max < 1:
            raise ValueError(f"reg_max must be >= 1, got {reg_max}")
        self.nc, self.reg_max, self.gains = int(nc), int(reg_max), gains
        self.strides = tuple(float(s) for s in strides)
        self.no = 4 * self.reg_max + self.nc
        self.assigners = {"one2many": TaskAlignedAssigner(topk, alpha, beta),
                          "one2one": TaskAlignedAssigner(one2one_topk, alpha, beta)}

    def __call__(self, preds, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(preds, Mapping) and "boxes" not in preds:
            unknown = set(preds) - set(BRANCHES)
            if unknown or not preds:
                raise ValueError(f"prediction branches {sorted(preds)}; expected keys among {BRANCHES}")
            branches = [(preds[k], self.assigners[k]) for k in BRANCHES if k in preds]
        else:
            branches = [(preds, self.assigners["one2many"])]
        parts = torch.stack([self.branch_loss(p, targets, assigner) for p, assigner in branches]).sum(0)
        first = branches[0][0]
        bs = (first["boxes"] if isinstance(first, Mapping) else first[0]).shape[0]
        return parts.sum() * bs, parts.detach()

    def branch_loss(self, preds, targets: torch.Tensor, assigner: TaskAlignedAssigner) -> torch.Tensor:
        """``[3]`` box, cls, dfl of one branch (gains applied)."""
        x, anchors, stride = flatten_levels(preds, self.strides)
        x = x.float()
        bs, c, _ = x.shape
        if c != self.no:
            raise ValueError(f"predictions have {c} channels; expected 4 * reg_max + nc = {self.no}")
        r = self.reg_max
        box_logits = x[:, : 4 * r].transpose(1, 2)  # [B, N, 4r]
        cls_logits = x[:, 4 * r:].transpose(1, 2)  # [B, N, nc]
        pred_boxes = distances_to_xyxy(box_distances(box_logits, r), anchors, stride)  # [B, N, 4] pixels
        gt_labels, gt_boxes, gt_mask = targets_to_padded(targets, bs, x.device)
        a = assigner(cls_logits.detach().sigmoid(), pred_boxes.detach(), anchors, gt_labels, gt_boxes, gt_mask)
        norm = a.scores.sum().clamp(min=1.0)
        lcls = F.binary_cross_entropy_with_logits(cls_logits, a.scores, reduction="sum") / norm
        lbox = x.new_zeros(())
        ldfl = x.new_zeros(())
        if a.fg.any():
            weight = a.scores.sum(-1)[a.fg]  # [P]
            iou = ciou(xyxy_to_xywh(pred_boxes[a.fg]), xyxy_to_xywh(a.boxes[a.fg]))
            lbox = ((1.0 - iou) * weight).sum() / norm
            if r > 1:
                fg_anchors = a.fg.nonzero()[:, 1]
                target = xyxy_to_distances(a.boxes[a.fg], anchors[fg_anchors], stride[fg_anchors])
                dfl = distribution_focal_loss(box_logits[a.fg].unflatten(-1, (4, r)), target.clamp(0, r - 1.01))
                ldfl = (dfl.mean(-1) * weight).sum() / norm
        return torch.stack((lbox * self.gains.box, lcls * self.gains.cls, ldfl * self.gains.dfl))
