"""The bootstrap of mAP over images: its accumulation is pycocotools' (same numbers with every image once and
with images repeated), and its intervals behave as intervals (paired differences cancel shared variation)."""
from __future__ import annotations

import numpy as np
import pytest

from trtqat.eval.bootstrap import bootstrap, match_table
from trtqat.eval.coco_map import coco_map


def _dataset(seed: int, images: int = 40, categories: int = 4, noise: float = 3.0, miss: float = 0.15,
             tied: bool = True):
    """Ground truth of ``images`` images and detections that find most objects with jittered boxes, plus false
    positives, a category without objects (pycocotools must leave it out) and, with ``tied``, scores rounded to
    one decimal, so many are exactly tied."""
    rng = np.random.default_rng(seed)

    def score(low, high):
        s = float(rng.uniform(low, high))
        return round(s, 1) if tied else s

    gt = {"images": [{"id": i + 1, "width": 320, "height": 320} for i in range(images)],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(categories + 1)], "annotations": []}
    dets = []
    for img in gt["images"]:
        for _ in range(rng.integers(0, 6)):
            c = int(rng.integers(1, categories + 1))
            x, y, w, h = rng.uniform(0, 200, 2).tolist() + rng.uniform(10, 100, 2).tolist()
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": img["id"], "category_id": c,
                                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            if rng.random() > miss:
                j = rng.normal(0, noise, 4)
                dets.append({"image_id": img["id"], "category_id": c, "score": score(0.3, 1),
                             "bbox": [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)]})
        for _ in range(rng.integers(0, 3)):  # false positives, some in the category without objects
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, categories + 2)),
                         "score": score(0, 0.8), "bbox": rng.uniform(0, 200, 4).tolist()})
    return gt, dets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_image_once_reproduces_pycocotools(seed):
    gt, dets = _dataset(seed)
    ids = [im["id"] for im in gt["images"]]
    expected = coco_map(gt, dets, ids)
    got = match_table(gt, dets, ids).score()
    assert got == pytest.approx((expected["map"], expected["map50"]), abs=1e-12)
    assert 0.2 < expected["map"] < 0.95  # a dataset where both numbers mean something


def test_repeated_images_score_as_a_dataset_holding_them_that_often():
    """Exact when no two detections of one image and category tie (the copies are then ordered copy-major in the
    dataset and detection-major in the resample; either is an arbitrary order of equal scores)."""
    gt, dets = _dataset(3, images=12, tied=False)
    counts = np.array([0, 3, 1, 2, 0, 1, 1, 4, 0, 2, 1, 1])
    copies = {"images": [], "annotations": [], "categories": gt["categories"]}
    copy_dets = []
    for im, n in zip(gt["images"], counts):  # image i written counts[i] times under new ids, in order
        for _ in range(n):
            new = len(copies["images"]) + 1
            copies["images"].append({**im, "id": new})
            copies["annotations"] += [{**a, "id": len(copies["annotations"]) + k + 1, "image_id": new}
                                      for k, a in enumerate(a for a in gt["annotations"] if a["image_id"] == im["id"])]
            copy_dets += [{**d, "image_id": new} for d in dets if d["image_id"] == im["id"]]
    expected = coco_map(copies, copy_dets)
    got = match_table(gt, dets, [im["id"] for im in gt["images"]]).score(counts)
    assert got == pytest.approx((expected["map"], expected["map50"]), abs=1e-9)


def test_no_detections_scores_zero():
    gt, _ = _dataset(4, images=5)
    table = match_table(gt, [], [im["id"] for im in gt["images"]])
    assert table.score() == (0.0, 0.0)


def test_intervals_hold_the_point_and_pairing_cancels_shared_variation():
    gt, dets = _dataset(5, images=200)
    rng = np.random.default_rng(9)
    worse = [{**d, "bbox": (np.asarray(d["bbox"]) + rng.normal(0, 1.5, 4)).tolist()} for d in dets]
    ids = [im["id"] for im in gt["images"]]
    tables = {"a": match_table(gt, dets, ids), "b": match_table(gt, worse, ids), "a again": match_table(gt, dets, ids)}
    res = bootstrap(tables, pairs=[("a", "b"), ("a", "a again")], samples=300, seed=0)
    a, b = res["artifacts"]["a"], res["artifacts"]["b"]
    assert a.low <= a.value <= a.high and b.low <= b.value <= b.high
    assert a.value == pytest.approx(100 * coco_map(gt, dets, ids)["map"], abs=1e-9)
    diff = res["differences"]["a - b"]
    assert diff.value == pytest.approx(a.value - b.value)
    assert diff.low > 0  # the jittered boxes are worse on (nearly) every resample: resolved
    assert diff.half_width < 0.6 * min(a.half_width, b.half_width)  # paired: the images' own spread cancels
    same = res["differences"]["a - a again"]
    assert (same.low, same.value, same.high) == (0.0, 0.0, 0.0)
    # the same seed draws the same resamples; another seed other ones
    again = bootstrap(tables, samples=300, seed=0)["artifacts"]["a"]
    other = bootstrap(tables, samples=300, seed=1)["artifacts"]["a"]
    assert (again.low, again.high) == (a.low, a.high) and (other.low, other.high) != (a.low, a.high)


def test_tables_of_other_images_are_refused():
    gt, dets = _dataset(6, images=10)
    ids = [im["id"] for im in gt["images"]]
    with pytest.raises(ValueError, match="other images"):
        bootstrap({"a": match_table(gt, dets, ids), "b": match_table(gt, dets, ids[:5])}, samples=10)
