"""Detection head of the scratch ``ultralytics`` fixture (YOLOv8 / YOLO11 / YOLO26), written for trtqat's tests.

What matches upstream (and matters to trtqat): the class name ``Detect``, the attributes ``cv2`` (box
branches: Conv, Conv, Conv2d(4 * reg_max)), ``cv3`` (class branches: Conv, Conv, Conv2d(nc) in the legacy
YOLOv8 form, DWConv+Conv pairs since YOLO11), ``dfl`` (DFL, or Identity when ``reg_max`` is 1),
``one2one_cv2``/``one2one_cv3`` (YOLO26's NMS-free head), ``stride``/``anchors``/``strides``/``shape``, the
``end2end`` property, ``fuse()`` dropping the branch that does not run, and the outputs:

* training: ``{"boxes": [B, 4*reg_max, N], "scores": [B, nc, N], "feats": [P3, P4, P5]}`` (nested under
  ``"one2many"``/``"one2one"`` when the head has both);
* eval: ``(y, preds)`` with ``y`` ``[B, 4 + nc, N]`` (xywh boxes in input pixels, sigmoid class scores), or,
  when ``end2end``, ``[B, min(max_det, N), 6]`` rows ``x1, y1, x2, y2, score, class`` (top-k, no NMS);
  ``y`` alone when ``export`` is set.
"""
import copy
import math

import torch
from torch import nn

from .block import DFL
from .conv import Conv, DWConv


def _anchor_points(feats, strides, offset=0.5):
    """Cell centres in grid units ``(N, 2)`` and the stride of each ``(N, 1)``, level by level."""
    points, stride_col = [], []
    for i, f in enumerate(feats):
        h, w = f.shape[2:]
        ys = torch.arange(h, dtype=f.dtype, device=f.device) + offset
        xs = torch.arange(w, dtype=f.dtype, device=f.device) + offset
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((gx, gy), -1).view(-1, 2))
        stride_col.append(torch.full((h * w, 1), float(strides[i]), dtype=f.dtype, device=f.device))
    return torch.cat(points), torch.cat(stride_col)


def _distances_to_boxes(dist, points, xywh=True, dim=1):
    """Left/top/right/bottom distances from ``points`` -> xywh (or xyxy) boxes, along ``dim``."""
    lt, rb = dist.chunk(2, dim)
    top_left, bottom_right = points - lt, points + rb
    if xywh:
        return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim)
    return torch.cat((top_left, bottom_right), dim)


class Detect(nn.Module):
    """Anchor-free decoupled head: per level a box branch (``cv2``) and a class branch (``cv3``)."""

    dynamic = False
    export = False
    format = None
    max_det = 300
    agnostic_nms = False
    shape = None
    anchors = torch.empty(0)
    strides = torch.empty(0)
    legacy = False
    xyxy = False

    def __init__(self, nc=80, reg_max=16, end2end=False, ch=(), legacy=None):
        super().__init__()
        legacy = type(self).legacy if legacy is None else legacy  # an argument here, not process-wide state
        self.nc = nc
        self.nl = len(ch)
        self.reg_max = reg_max
        self.no = nc + 4 * reg_max
        self.stride = torch.zeros(self.nl)
        c_box = max(16, ch[0] // 4, 4 * reg_max)
        c_cls = max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, c_box, 3), Conv(c_box, c_box, 3), nn.Conv2d(c_box, 4 * reg_max, 1)) for c in ch)
        if legacy:  # YOLOv8
            self.cv3 = nn.ModuleList(
                nn.Sequential(Conv(c, c_cls, 3), Conv(c_cls, c_cls, 3), nn.Conv2d(c_cls, nc, 1)) for c in ch)
        else:  # YOLO11 / YOLO26: depth-wise 3x3 + 1x1 pairs
            self.cv3 = nn.ModuleList(
                nn.Sequential(nn.Sequential(DWConv(c, c, 3), Conv(c, c_cls, 1)),
                              nn.Sequential(DWConv(c_cls, c_cls, 3), Conv(c_cls, c_cls, 1)),
                              nn.Conv2d(c_cls, nc, 1)) for c in ch)
        self.dfl = DFL(reg_max) if reg_max > 1 else nn.Identity()
        if end2end:
            self.one2one_cv2 = copy.deepcopy(self.cv2)
            self.one2one_cv3 = copy.deepcopy(self.cv3)

    @property
    def one2many(self):
        return {"box_head": self.cv2, "cls_head": self.cv3}

    @property
    def one2one(self):
        return {"box_head": self.one2one_cv2, "cls_head": self.one2one_cv3}

    @property
    def end2end(self):
        """The NMS-free one-to-one branch runs: asked for (``end2end = True``) or the only one left after fuse()."""
        if getattr(self, "one2one_cv2", None) is None:
            return False
        return bool(getattr(self, "_end2end", False)) or self.cv2 is None

    @end2end.setter
    def end2end(self, value):
        self._end2end = value

    def forward_head(self, x, box_head=None, cls_head=None):
        if box_head is None or cls_head is None:  # the branch fuse() removed
            return {}
        b = x[0].shape[0]
        boxes = torch.cat([box_head[i](x[i]).view(b, 4 * self.reg_max, -1) for i in range(self.nl)], -1)
        scores = torch.cat([cls_head[i](x[i]).view(b, self.nc, -1) for i in range(self.nl)], -1)
        return {"boxes": boxes, "scores": scores, "feats": x}

    def forward(self, x):
        preds = self.forward_head(x, **self.one2many)
        if getattr(self, "one2one_cv2", None) is not None:
            inputs = [t.detach() for t in x] if self.training else x
            preds = {"one2many": preds, "one2one": self.forward_head(inputs, **self.one2one)}
        if self.training:
            return preds
        chosen = preds
        if "one2one" in preds:
            chosen = preds["one2one"] if self.end2end else preds["one2many"]
        y = self._inference(chosen)
        if self.end2end:
            y = self.postprocess(y.permute(0, 2, 1))
        return y if self.export else (y, preds)

    def _inference(self, x):
        """``[B, 4 + nc, N]``: boxes in input pixels, class probabilities."""
        shape = x["feats"][0].shape
        if self.dynamic or self.shape != shape:
            points, strides = _anchor_points(x["feats"], self.stride)
            self.anchors, self.strides = points.transpose(0, 1), strides.transpose(0, 1)
            self.shape = shape
        dist = self.dfl(x["boxes"])
        boxes = _distances_to_boxes(dist, self.anchors.unsqueeze(0), xywh=not self.end2end and not self.xyxy)
        return torch.cat((boxes * self.strides, x["scores"].sigmoid()), 1)

    def postprocess(self, preds):
        """``[B, N, 4 + nc]`` -> the ``min(max_det, N)`` best (anchor, class) pairs ``[B, k, 6]``."""
        boxes, scores = preds.split((4, self.nc), dim=-1)
        n = scores.shape[1]
        k = min(self.max_det, n)
        best_anchor = scores.amax(-1).topk(k, dim=1).indices  # (B, k) anchors with the best class score
        cand = scores.gather(1, best_anchor.unsqueeze(-1).expand(-1, -1, self.nc))  # (B, k, nc)
        top, flat = cand.flatten(1).topk(k, dim=1)  # best (anchor, class) pairs among them
        anchor = best_anchor.gather(1, flat // self.nc)
        cls = (flat % self.nc).unsqueeze(-1).float()
        picked = boxes.gather(1, anchor.unsqueeze(-1).expand(-1, -1, 4))
        return torch.cat((picked, top.unsqueeze(-1), cls), -1)

    def bias_init(self):
        """Box logits start at 2.0; class logits at the prior of ~5 objects per 640x640 image."""
        heads = [self.one2many]
        if getattr(self, "one2one_cv2", None) is not None:
            heads.append(self.one2one)
        for head in heads:
            for box, cls, s in zip(head["box_head"], head["cls_head"], self.stride):
                box[-1].bias.data[:] = 2.0
                cls[-1].bias.data[: self.nc] = math.log(5 / self.nc / (640 / float(s)) ** 2)

    def fuse(self):
        """Drop the branch that does not run at inference (the one-to-many one when ``end2end``)."""
        e2e = self.end2end
        for name in [n for n in self._modules if n.startswith("one2one_")]:
            setattr(self, name[len("one2one_"):] if e2e else name, None)
