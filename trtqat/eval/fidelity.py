"""Label-free accuracy: how closely the quantized model follows the float model.

Why: most users quantize with a folder of unlabelled images. Two measures need no labels:

* per-output fidelity: cosine similarity and SQNR (signal-to-quantization-noise ratio,
  ``10 log10(sum ref^2 / sum (ref - test)^2)`` in dB) of every model output against the float model on
  the same letterboxed batch. Sums are accumulated over all batches, so the numbers are dataset-level.
* agreement mAP: the float model's own detections (score >= ``gt_conf``) are the ground truth and the
  quantized model's detections are scored against them with the COCO evaluator. 1.0 means "finds the
  same boxes"; it is the mAP a deployment would lose relative to the float model, without labels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .boxes import xyxy_to_coco
from .coco_map import coco_map


def flatten_outputs(out, name: str = "out") -> list[tuple[str, torch.Tensor]]:
    """Name every tensor in a nested tuple/list output: ``out[0]``, ``out[1][2]`` ..."""
    if isinstance(out, torch.Tensor):
        return [(name, out)]
    if isinstance(out, (list, tuple)):
        items = []
        for i, o in enumerate(out):
            items += flatten_outputs(o, f"{name}[{i}]")
        return items
    return []


def decoded_predictions(out) -> torch.Tensor:
    """The decoded tensor of a YOLO output (the first element in eval mode), in the model's layout
    (:mod:`trtqat.eval.layouts`)."""
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out


def sqnr_db(signal: float, noise: float) -> float:
    """SQNR in dB; ``inf`` for identical outputs."""
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


@dataclass
class _Sums:
    dot: float = 0.0
    ref2: float = 0.0
    test2: float = 0.0
    noise: float = 0.0

    def to_dict(self) -> dict:
        denom = math.sqrt(self.ref2 * self.test2)
        return {"cosine": self.dot / denom if denom > 0 else (1.0 if self.noise == 0 else 0.0),
                "sqnr_db": sqnr_db(self.ref2, self.noise)}


@dataclass
class FidelityMeter:
    """Accumulates cosine/SQNR sums per output over batches."""

    sums: dict[str, _Sums] = field(default_factory=dict)

    def update(self, reference, test) -> None:
        ref, tst = flatten_outputs(reference), flatten_outputs(test)
        for (name, r), (_, t) in zip(ref, tst):
            r, t = r.detach().double(), t.detach().double()
            s = self.sums.setdefault(name, _Sums())
            s.dot += float((r * t).sum())
            s.ref2 += float((r * r).sum())
            s.test2 += float((t * t).sum())
            s.noise += float(((r - t) ** 2).sum())

    def result(self) -> dict[str, dict]:
        return {name: s.to_dict() for name, s in self.sums.items()}

    def score(self) -> float:
        return fidelity_score(self.result())


def fidelity_score(result: dict[str, dict]) -> float:
    """Mean SQNR (dB) over outputs, each capped at 200 dB: the label-free scalar (best QAT epoch,
    sensitivity ranking). Higher is better."""
    values = [min(v["sqnr_db"], 200.0) for v in result.values()]
    return sum(values) / len(values) if values else float("nan")


@dataclass
class AgreementMeter:
    """Agreement mAP: the reference model's detections are the ground truth (see module docstring)."""

    size: int
    gt_conf: float = 0.25
    images: list = field(default_factory=list)
    truth: list = field(default_factory=list)
    dets: list = field(default_factory=list)

    def update(self, reference: list[torch.Tensor], test: list[torch.Tensor]) -> None:
        """Add per-image NMS outputs ``(n, 6)`` (xyxy, conf, class) in network-input pixels.

        Boxes are clipped to the input; boxes with no area after clipping (outside the input) are dropped
        on both sides, so a model compared with itself scores exactly 1.0.
        """
        for ref, tst in zip(reference, test):
            image_id = len(self.images) + 1
            self.images.append({"id": image_id, "width": self.size, "height": self.size})
            ref = ref[ref[:, 4] >= self.gt_conf].detach().cpu()
            for (x, y, w, h), cls in zip(self._coco_boxes(ref), ref[:, 5].tolist()):
                if w > 0 and h > 0:
                    self.truth.append({"id": len(self.truth) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                       "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            tst = tst.detach().cpu()
            for box, score, cls in zip(self._coco_boxes(tst), tst[:, 4].tolist(), tst[:, 5].tolist()):
                if box[2] > 0 and box[3] > 0:
                    self.dets.append({"image_id": image_id, "category_id": int(cls) + 1, "bbox": box, "score": score})

    def _coco_boxes(self, det: torch.Tensor) -> list[list[float]]:
        return xyxy_to_coco(det[:, :4].clamp(0, self.size)).tolist()

    def result(self) -> dict:
        """``{"map", "map50", "objects"}``; the maps are None when the reference found nothing."""
        cats = sorted({a["category_id"] for a in self.truth} | {d["category_id"] for d in self.dets})
        gt = {"images": self.images, "annotations": self.truth, "categories": [{"id": c} for c in cats]}
        return {**coco_map(gt, self.dets), "objects": len(self.truth)}
