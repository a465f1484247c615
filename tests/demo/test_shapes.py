"""The generated shapes dataset: deterministic, valid labels, consistent COCO ground truth, varied content."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from trtqat.demo.shapes import CLASSES, MAX_OBJECTS, SIZES, draw_image, main, visible_labels, write_dataset
from trtqat.errors import InputError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    calls = []
    ds = write_dataset(tmp_path_factory.mktemp("shapes") / "ds", train=6, val=4, seed=3, progress=calls.append)
    assert sum(calls) == 10
    return ds


def test_draw_image_is_a_pure_function_of_seed_split_index():
    a_img, a_lab = draw_image(5, "train", seed=1)
    b_img, b_lab = draw_image(5, "train", seed=1)
    assert a_img.dtype == np.uint8 and a_img.ndim == 3 and a_img.shape[2] == 3
    assert np.array_equal(a_img, b_img) and a_lab == b_lab
    assert not np.array_equal(draw_image(5, "val", seed=1)[0], a_img) or draw_image(5, "val", seed=1)[1] != a_lab
    other = draw_image(5, "train", seed=2)
    assert other[1] != a_lab


def test_written_files_are_identical_across_runs(tmp_path, dataset):
    again = write_dataset(tmp_path / "again", train=6, val=4, seed=3)
    for split in ("train", "val"):
        for p in sorted((dataset.root / "images" / split).glob("*.jpg")):
            assert p.read_bytes() == (again.root / "images" / split / p.name).read_bytes()
            lab = dataset.root / "labels" / split / f"{p.stem}.txt"
            assert lab.read_text() == (again.root / "labels" / split / lab.name).read_text()
    assert json.loads(dataset.val_json.read_text()) == json.loads(again.val_json.read_text())


def test_labels_are_valid_boxes_inside_the_image():
    sizes = set()
    for i in range(1, 41):
        img, labels = draw_image(i, "train")
        h, w = img.shape[:2]
        sizes.add((w, h))
        assert (w, h) in SIZES and 320 <= max(w, h) <= 448
        assert 1 <= len(labels) <= MAX_OBJECTS  # 2-12 drawn; an occluded one may be dropped
        for c, cx, cy, bw, bh in labels:
            assert 0 <= c < len(CLASSES)
            assert bw > 0 and bh > 0
            assert cx - bw / 2 >= -1e-9 and cx + bw / 2 <= 1 + 1e-9
            assert cy - bh / 2 >= -1e-9 and cy + bh / 2 <= 1 + 1e-9
    assert len(sizes) >= 4  # several sizes and aspect ratios


def test_occluded_objects_shrink_to_their_visible_pixels_or_are_dropped():
    owner = np.full((100, 200), -1, np.int16)
    square = np.ones((20, 20), bool)
    placed = [(1, 10, 10, square), (2, 50, 10, square), (3, 20, 10, square), (4, 55, 10, square)]
    for k, (_, x0, y0, m) in enumerate(placed):  # paint in order, later objects on top
        owner[y0:y0 + 20, x0:x0 + 20][m] = k
    labels = visible_labels(owner, placed)
    # object 0 keeps x 10..19 (half visible) -> box 10 px wide; object 1 keeps only x 50..54 (25%) -> dropped
    assert [lab[0] for lab in labels] == [1, 3, 4]
    c, cx, cy, bw, bh = labels[0]
    assert (cx - bw / 2) * 200 == pytest.approx(10) and bw * 200 == pytest.approx(10)
    assert (cy - bh / 2) * 100 == pytest.approx(10) and bh * 100 == pytest.approx(20)
    assert labels[1][3] * 200 == pytest.approx(20) and labels[2][3] * 200 == pytest.approx(20)


def test_every_class_appears_and_sizes_span_small_to_large():
    seen, longest = set(), []
    counts = []
    for i in range(1, 41):
        img, labels = draw_image(i, "train")
        h, w = img.shape[:2]
        counts.append(len(labels))
        for c, _, _, bw, bh in labels:
            seen.add(c)
            longest.append(max(bw * w, bh * h))
    assert seen == set(range(len(CLASSES)))
    assert min(longest) < 16 and max(longest) > 100
    assert 20 <= float(np.median(longest)) <= 90
    assert max(counts) >= 9 and min(counts) <= 3


def test_layout_yaml_and_coco_json_match_the_txt_labels(dataset):
    assert dataset.train_images == dataset.root / "images" / "train"
    assert sorted(p.name for p in dataset.train_images.glob("*.jpg")) == [f"{i:012d}.jpg" for i in range(1, 7)]
    assert sorted(p.name for p in dataset.val_images.glob("*.jpg")) == [f"{i:012d}.jpg" for i in range(1, 5)]
    assert len(list((dataset.root / "labels" / "train").glob("*.txt"))) == 6
    doc = yaml.safe_load(dataset.yaml.read_text())
    assert doc == {"path": str(dataset.root), "train": "images/train", "val": "images/val", "nc": 8,
                   "names": list(CLASSES)}
    coco = json.loads(dataset.val_json.read_text())
    assert [c["id"] for c in coco["categories"]] == list(range(1, 9))
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    assert [im["id"] for im in coco["images"]] == [1, 2, 3, 4]
    total = 0
    for im in coco["images"]:
        with Image.open(dataset.val_images / im["file_name"]) as pil:
            assert pil.size == (im["width"], im["height"])
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        lines = (dataset.root / "labels" / "val" / im["file_name"].replace(".jpg", ".txt")).read_text().splitlines()
        assert len(anns) == len(lines)
        total += len(lines)
        _, labels = draw_image(im["id"], "val", seed=3)
        for a, (c, cx, cy, bw, bh) in zip(anns, labels):
            w, h = im["width"], im["height"]
            assert a["category_id"] == c + 1 and a["iscrowd"] == 0
            expect = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            assert np.allclose(a["bbox"], expect, atol=0.01)
            assert np.allclose(a["bbox"], np.round(expect), atol=0.01)  # tight pixel boxes
            assert a["area"] == pytest.approx(bw * w * bh * h, abs=0.1)
    assert len(coco["annotations"]) == total > 0


def test_rewrite_over_existing_dataset_and_refusal_of_other_folders(tmp_path, capsys):
    dest = tmp_path / "ds"
    write_dataset(dest, train=1, val=1)
    write_dataset(dest, train=2, val=1)  # a shapes dataset may be replaced
    assert len(list((dest / "images" / "train").glob("*.jpg"))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp folders left behind
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not a shapes dataset"):
        write_dataset(other, train=1, val=1)
    assert (other / "keep.txt").exists()
    assert main([str(other), "--train", "1", "--val", "1"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("Error: ")
    assert main([str(tmp_path / "cli"), "--train", "2", "--val", "1"]) == 0
    assert "3 images" in capsys.readouterr().out
