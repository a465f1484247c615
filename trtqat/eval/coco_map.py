"""COCO mAP@0.5:0.95 and mAP@0.5 with pycocotools (the evaluator the published YOLO numbers use).

pycocotools prints its progress on stdout; it is captured here so ``--json`` output stays clean.
Detections use COCO's result format: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
original-image pixels. Only the images that were actually run are evaluated (``params.imgIds``): a val
folder that holds a subset of an annotation file is scored on that subset.

:func:`coco_matching` stops after pycocotools' per-image matching (``COCOeval.evaluate``): the bootstrap of
:mod:`trtqat.eval.bootstrap` re-accumulates those matches over resampled image sets.
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence

from .._deps import require


def _ids(gt: dict, image_ids: Sequence[int] | None) -> list[int]:
    return sorted(set(image_ids)) if image_ids is not None else sorted(im["id"] for im in gt["images"])


def _has_truth(gt: dict, ids: list[int]) -> bool:
    id_set = set(ids)
    return any(a["image_id"] in id_set for a in gt["annotations"])


def coco_matching(gt: dict, detections: Sequence[dict], image_ids: Sequence[int] | None = None):
    """pycocotools' ``COCOeval`` on these images after ``evaluate()`` (per-image matching, not accumulated).

    ``detections`` may be empty (every ground-truth object is then missed).
    """
    require("pycocotools", purpose="COCO mAP evaluation")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset = copy.copy(gt)
    dataset.setdefault("info", {})
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = dataset
        truth.createIndex()
        if detections:
            dets = truth.loadRes([dict(d) for d in detections])
        else:  # loadRes refuses an empty list: an empty result set over the same images
            dets = COCO()
            dets.dataset = {"images": list(gt["images"]), "annotations": [], "categories": gt["categories"]}
            dets.createIndex()
        ev = COCOeval(truth, dets, "bbox")
        ev.params.imgIds = _ids(gt, image_ids)
        ev.evaluate()
    return ev


def coco_map(gt: dict, detections: Sequence[dict], image_ids: Sequence[int] | None = None) -> dict:
    """Return ``{"map": mAP@0.5:0.95, "map50": mAP@0.5}`` (None values when the ground truth is empty).

    Args:
        gt: COCO-format ground truth (images, annotations, categories).
        detections: COCO result rows.
        image_ids: the images to score (default: every image of ``gt``).
    """
    ids = _ids(gt, image_ids)
    if not _has_truth(gt, ids):
        return {"map": None, "map50": None}
    if not detections:
        return {"map": 0.0, "map50": 0.0}
    ev = coco_matching(gt, detections, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
        ev.summarize()
    return {"map": max(float(ev.stats[0]), 0.0), "map50": max(float(ev.stats[1]), 0.0)}
