"""COCO mAP on hand-made cases, YOLO-label -> COCO conversion, and evaluate() end to end with a fake model."""
import json

import pytest
import torch

from trtqat.demo import fixtures
from trtqat.errors import InputError
from trtqat.eval.coco_map import coco_map
from trtqat.eval.evaluate import EvalConfig, eval_set, evaluate
from trtqat.eval.labels import class_mapping, gt_from_coco_json, gt_from_yolo, label_path, read_yolo_labels

GT = {"images": [{"id": 1, "width": 200, "height": 100}, {"id": 2, "width": 200, "height": 100}],
      "categories": [{"id": 1}, {"id": 2}],
      "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0},
                      {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 20, 50, 50], "area": 2500, "iscrowd": 0},
                      {"id": 3, "image_id": 2, "category_id": 1, "bbox": [60, 40, 30, 30], "area": 900, "iscrowd": 0}]}


def dets(shift=0.0, drop=()):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
             "bbox": [a["bbox"][0] + shift, a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
            for a in GT["annotations"] if a["id"] not in drop]


def test_perfect_detections_score_one():
    assert coco_map(GT, dets()) == {"map": 1.0, "map50": 1.0}


def test_shifted_boxes_score_lower():
    shifted = coco_map(GT, dets(shift=6.0))  # IoU 0.714 / 0.786 / 0.667: counted at 0.5-0.65 or 0.7 only
    assert shifted["map50"] == 1.0 and 0.1 < shifted["map"] < 0.6
    assert coco_map(GT, dets(shift=40.0)) == {"map": 0.0, "map50": 0.0}


def test_missing_detection_scores_lower():
    # category 1 finds 1 of 2 objects (AP ~0.5), category 2 is perfect
    res = coco_map(GT, dets(drop=(3,)))
    assert res["map"] == pytest.approx(0.752475, abs=1e-4) and res["map50"] == res["map"]


def test_empty_cases():
    assert coco_map(GT, []) == {"map": 0.0, "map50": 0.0}
    assert coco_map({**GT, "annotations": []}, dets()) == {"map": None, "map50": None}
    assert coco_map(GT, dets(), image_ids=[2]) == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0)}


def test_label_path_convention(tmp_path):
    assert label_path(tmp_path / "coco/images/val2017/1.jpg") == tmp_path / "coco/labels/val2017/1.txt"
    assert label_path(tmp_path / "data/pics/1.png") == tmp_path / "data/labels/1.txt"


def test_yolo_to_coco_conversion_matches_pixels(tmp_path):
    img = fixtures.make_images(tmp_path / "images", n=1, size=(200, 100))[0]
    (tmp_path / "labels").mkdir()
    label_path(img).write_text("3 0.25 0.5 0.1 0.4\n\n7 0.5 0.5 1.0 1.0\n")
    assert read_yolo_labels(label_path(img)) == [(3, 0.25, 0.5, 0.1, 0.4), (7, 0.5, 0.5, 1.0, 1.0)]
    gt = gt_from_yolo([img], nc=80)
    anns = gt.coco["annotations"]
    assert [a["bbox"] for a in anns] == [pytest.approx([40, 30, 20, 40]), pytest.approx([0, 0, 200, 100])]
    assert [a["category_id"] for a in anns] == [4, 8] and gt.class_to_category[3] == 4
    assert gt.image_ids == {str(img): 1} and gt.coco["images"][0]["width"] == 200


def test_yolo_and_fixture_coco_json_agree(tmp_path):
    imgs = fixtures.make_images(tmp_path / "images", n=3, labels=True)
    ann = fixtures.make_coco_json(imgs, tmp_path / "ann.json")
    from_yolo = gt_from_yolo(imgs, nc=80)
    from_json = gt_from_coco_json(ann, imgs, nc=80)
    assert from_json.class_to_category == list(fixtures.COCO80_TO_91)
    for a, b in zip(from_yolo.coco["annotations"], from_json.coco["annotations"]):
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)
        assert from_json.class_to_category[a["category_id"] - 1] == b["category_id"]


def test_coco_json_errors(tmp_path):
    imgs = fixtures.make_images(tmp_path / "images", n=1)
    with pytest.raises(InputError, match="not found"):
        gt_from_coco_json(tmp_path / "nope.json", imgs, 80)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        gt_from_coco_json(tmp_path / "bad.json", imgs, 80)
    (tmp_path / "other.json").write_text(json.dumps({"images": [{"id": 99, "file_name": "x.jpg"}],
                                                     "annotations": [], "categories": []}))
    with pytest.raises(InputError, match="none of the 1 images"):
        gt_from_coco_json(tmp_path / "other.json", imgs, 80)


def test_class_mapping():
    assert class_mapping([{"id": 5}, {"id": 2}], 2) == [2, 5]
    assert class_mapping([{"id": 1}, {"id": 2}], 3) == [1, 2, 3]
    assert class_mapping([{"id": 0}], 2) == [0, 1]


class OracleModel(torch.nn.Module):
    """Returns, batch after batch, decoded predictions that are the letterboxed ground-truth boxes."""

    def __init__(self, per_image, nc=80, shift=0.0):
        super().__init__()
        self.per_image, self.nc, self.shift, self.calls = per_image, nc, shift, 0
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        rows = []
        for _ in range(x.shape[0]):
            boxes = self.per_image[self.calls]
            self.calls += 1
            pred = torch.zeros(20, 5 + self.nc)
            for k, (c, cx, cy, w, h) in enumerate(boxes):
                pred[k, :5] = torch.tensor([cx + self.shift, cy, w, h, 1.0])
                pred[k, 5 + c] = 0.9
            rows.append(pred)
        return torch.stack(rows), []


def letterboxed_truth(files, size):
    from trtqat.data.images import letterbox, read_rgb

    out = []
    for f in files:
        h, w = read_rgb(f).shape[:2]
        _, lb = letterbox(read_rgb(f), size)
        out.append([(c, cx * w * lb.ratio + lb.pad[0], cy * h * lb.ratio + lb.pad[1], bw * w * lb.ratio, bh * h * lb.ratio)
                    for c, cx, cy, bw, bh in read_yolo_labels(label_path(f))])
    return out


@pytest.mark.parametrize("source", ["yolo", "coco"])
def test_evaluate_oracle_reaches_one_and_shift_lowers(tmp_path, source):
    imgs = fixtures.make_images(tmp_path / "images", n=5, labels=True)
    ann = fixtures.make_coco_json(imgs, tmp_path / "ann.json") if source == "coco" else None
    cfg = EvalConfig(size=128, batch_size=2, conf_thres=0.01)
    data = eval_set(tmp_path / "images", cfg, ann=ann, nc=80)
    assert data.gt.source == source
    truth = letterboxed_truth(data.files, 128)
    perfect = evaluate(OracleModel(truth), data, quantized=False)
    assert perfect.images == 5 and perfect.map == pytest.approx(1.0) and perfect.map50 == pytest.approx(1.0)
    shifted = evaluate(OracleModel(truth, shift=4.0), data, quantized=False)
    assert shifted.map < 0.9
    fewer = [t[:-1] if len(t) > 1 else t for t in truth]
    assert evaluate(OracleModel(fewer), data, quantized=False).map < 0.95
