"""Bootstrap intervals of COCO mAP over images, and of mAP differences between artifacts on the same images.

Why: an accuracy claim such as "QAT recovers 0.4 pt of the 0.6 pt PTQ lost" is only as good as the
instrument that measures it. A few hundred images give mAP differences that move by tenths of a point
when the image set changes; the bootstrap says by how much, from the data itself. Differences between two
artifacts are *paired*: both are re-scored on the same resampled images, so what the images have in common
(hard scenes, easy scenes) cancels and the interval is much narrower than either artifact's own.

How: pycocotools matches every image once (:func:`trtqat.eval.coco_map.coco_matching`); a resample is a
count per image, and the image's matches enter the accumulation that many times, exactly as if the image
had been in the dataset that often. The accumulation is COCO's (``COCOeval.accumulate``: detections of a
category sorted by score over all images, cumulative true and false positives per IoU threshold, precision
made monotone, read at 101 recall points, the mean over thresholds and categories with objects); with every
count 1 it reproduces pycocotools' mAP@0.5:0.95 and mAP@0.5 (a test pins that), so the intervals are
intervals of the number the rest of trtqat reports. (Exactly tied scores of one image and category are
ordered detection-major in a resample; in a dataset holding the copies they would be copy-major. Both are
arbitrary orders of equal scores, as pycocotools' own is.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .coco_map import coco_matching

#: COCO's 101 recall points
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class _CategoryMatches:
    """One category's detections over all images, sorted by descending score (stable, as pycocotools)."""

    image: np.ndarray  # [D] index of each detection's image in the image list
    tp: np.ndarray  # [T, D] matched and not ignored
    fp: np.ndarray  # [T, D] unmatched and not ignored
    objects: np.ndarray  # [I] not-ignored ground-truth objects per image


@dataclass
class MatchTable:
    """The per-image matches of one artifact's detections on one image set, ready to be re-accumulated."""

    image_ids: list[int]
    categories: list[_CategoryMatches]

    def score(self, counts: np.ndarray | None = None) -> tuple[float, float]:
        """``(mAP@0.5:0.95, mAP@0.5)`` with image ``i`` counted ``counts[i]`` times (default: once each)."""
        counts = np.ones(len(self.image_ids), dtype=np.int64) if counts is None else np.asarray(counts)
        per_threshold = []  # [K_present, T] mean precision over the recall points
        for cat in self.categories:
            objects = int(counts @ cat.objects)
            if objects == 0:
                continue  # pycocotools leaves the category out (precision -1)
            order = np.repeat(np.arange(cat.image.size), counts[cat.image])
            per_threshold.append(_average_precision(np.cumsum(cat.tp[:, order], axis=1),
                                                    np.cumsum(cat.fp[:, order], axis=1), objects))
        if not per_threshold:
            return float("nan"), float("nan")
        ap = np.asarray(per_threshold)
        return max(float(ap.mean()), 0.0), max(float(ap[:, 0].mean()), 0.0)


def _average_precision(tp: np.ndarray, fp: np.ndarray, objects: int) -> np.ndarray:
    """COCO's interpolated precision averaged over the 101 recall points, per IoU threshold (rows of the
    cumulative true / false positive counts ``[T, D]``) of one category."""
    if tp.shape[1] == 0:
        return np.zeros(tp.shape[0])
    recall = tp / objects
    precision = tp / (tp + fp + np.spacing(1))
    precision = np.flip(np.maximum.accumulate(np.flip(precision, axis=1), axis=1), axis=1)  # monotone envelope
    ap = np.empty(tp.shape[0])
    for t in range(tp.shape[0]):
        at = np.searchsorted(recall[t], _RECALL_POINTS, side="left")
        ap[t] = precision[t, at[at < precision.shape[1]]].sum() / _RECALL_POINTS.size
    return ap


def match_table(gt: dict, detections: Sequence[dict], image_ids: Sequence[int]) -> MatchTable:
    """Match ``detections`` (COCO result rows) to ``gt`` on ``image_ids`` with pycocotools, once."""
    ev = coco_matching(gt, detections, image_ids)
    p = ev.params
    ids = list(p.imgIds)
    n_img, n_area, t = len(ids), len(p.areaRng), len(p.iouThrs)
    all_area = p.areaRngLbl.index("all")
    categories = []
    for k in range(len(p.catIds)):
        rows = ev.evalImgs[k * n_area * n_img + all_area * n_img:k * n_area * n_img + (all_area + 1) * n_img]
        image, scores, matched, ignored = [], [], [], []
        objects = np.zeros(n_img, dtype=np.int64)
        for i, e in enumerate(rows):
            if e is None:
                continue
            objects[i] = int(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
            d = len(e["dtScores"])
            if d:
                image.append(np.full(d, i))
                scores.append(np.asarray(e["dtScores"], dtype=np.float64))
                matched.append(np.asarray(e["dtMatches"]).reshape(t, d) != 0)
                ignored.append(np.asarray(e["dtIgnore"], dtype=bool).reshape(t, d))
        if image:
            order = np.argsort(-np.concatenate(scores), kind="mergesort")
            m, ig = np.concatenate(matched, axis=1)[:, order], np.concatenate(ignored, axis=1)[:, order]
            cat = _CategoryMatches(np.concatenate(image)[order], m & ~ig, ~m & ~ig, objects)
        else:
            cat = _CategoryMatches(np.zeros(0, dtype=np.int64), np.zeros((t, 0), bool), np.zeros((t, 0), bool),
                                   objects)
        categories.append(cat)
    return MatchTable(ids, categories)


@dataclass
class Interval:
    """A point estimate (on the images as they are) and its bootstrap percentile interval, in mAP points."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict:
        return {"value": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4)}


def bootstrap(tables: Mapping[str, MatchTable], *, pairs: Sequence[tuple[str, str]] = (), samples: int = 1000,
              seed: int = 0, level: float = 0.95, metric: str = "map") -> dict:
    """Percentile intervals of mAP (``metric`` ``map`` or ``map50``) for each table and of ``a - b`` for each
    pair, in points (x100), from ``samples`` resamples of the images drawn once and shared by every table.

    Every table must cover the same images (the same evaluation set), else the pairing means nothing.
    Returns ``{"samples", "level", "images", "artifacts": {name: Interval}, "differences": {"a - b": Interval}}``.
    """
    names = list(tables)
    ids = tables[names[0]].image_ids
    for name in names[1:]:
        if tables[name].image_ids != ids:
            raise ValueError(f"{name} was scored on other images than {names[0]}: a paired bootstrap needs the same set")
    which = {"map": 0, "map50": 1}[metric]
    rng = np.random.default_rng(seed)
    draws = np.zeros((samples, len(names)))
    for s in range(samples):
        counts = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))
        draws[s] = [100 * tables[n].score(counts)[which] for n in names]
    point = {n: 100 * tables[n].score()[which] for n in names}
    lo, hi = 50 * (1 - level), 50 * (1 + level)

    def interval(value: float, values: np.ndarray) -> Interval:
        return Interval(value, float(np.percentile(values, lo)), float(np.percentile(values, hi)))

    col = {n: i for i, n in enumerate(names)}
    return {"samples": samples, "level": level, "images": len(ids),
            "artifacts": {n: interval(point[n], draws[:, col[n]]) for n in names},
            "differences": {f"{a} - {b}": interval(point[a] - point[b], draws[:, col[a]] - draws[:, col[b]])
                            for a, b in pairs}}
