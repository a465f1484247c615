"""Ground truth for evaluation: YOLO txt labels or COCO JSON, both turned into one COCO-format dict.

YOLO convention (upstream ``img2label_paths``): ``.../images/<sub>/x.jpg`` has its labels in
``.../labels/<sub>/x.txt`` (the *last* ``images`` path component replaced by ``labels``), one line
``class cx cy w h`` per object, normalised to the image size. When no path component is called
``images``, the ``labels/`` folder beside the image folder is used (what ``trtqat demo`` writes).

COCO JSON: images are matched to the files of the folder by ``file_name`` (base name), falling back to a
numeric stem equal to the image id. Model class ``i`` maps to the ``i``-th category id in ascending
order when the file has as many categories as the model has classes (that is COCO's 80-in-91 mapping);
otherwise to category ``i`` itself, or ``i + 1`` when the ids start at 1.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass
class GroundTruth:
    """COCO-format ground truth plus how files and model classes map onto it."""

    coco: dict  # {"images": [...], "annotations": [...], "categories": [...]}
    image_ids: dict[str, int]  # str(image path) -> COCO image id (only images of the evaluated folder)
    class_to_category: list[int]  # model class index -> COCO category id
    source: str = "yolo"  # "yolo" | "coco"
    missing: list[str] = field(default_factory=list)  # folder images without ground truth (not evaluated)

    @property
    def num_objects(self) -> int:
        ids = set(self.image_ids.values())
        return sum(1 for a in self.coco["annotations"] if a["image_id"] in ids)


def label_path(image: str | Path) -> Path:
    """The YOLO label file of ``image`` (see module docstring)."""
    image = Path(image)
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.parent.parent / "labels" / f"{image.stem}.txt"


def read_yolo_labels(path: str | Path) -> list[tuple[int, float, float, float, float]]:
    """Rows ``(class, cx, cy, w, h)`` of a YOLO label file (empty when the file is absent or empty)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            c, cx, cy, w, h = fields[:5]
            rows.append((int(float(c)), float(cx), float(cy), float(w), float(h)))
        except ValueError as exc:
            raise InputError(f"{path}:{n}: not a YOLO label line ({line.strip()!r})",
                             "Each line must be 'class cx cy w h' with normalised coordinates") from exc
    return rows


def has_yolo_labels(images: Sequence[Path]) -> bool:
    """True when at least one image has a label file."""
    return any(label_path(p).exists() for p in images)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size  # (w, h)


def _image_id(path: Path, fallback: int) -> int:
    return int(path.stem) if path.stem.isdigit() else fallback


def gt_from_yolo(images: Sequence[Path], nc: int) -> GroundTruth:
    """Convert YOLO labels of ``images`` to COCO ground truth (category id = class + 1)."""
    coco: dict = {"images": [], "annotations": [],
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(nc)]}
    ids: dict[str, int] = {}
    used: set[int] = set()
    for k, path in enumerate(map(Path, images), 1):
        image_id = _image_id(path, k)
        if image_id in used:  # non-numeric or duplicate stems: number them after the largest id
            image_id = max(used) + 1
        used.add(image_id)
        w, h = _image_size(path)
        ids[str(path)] = image_id
        coco["images"].append({"id": image_id, "file_name": path.name, "width": w, "height": h})
        for c, cx, cy, bw, bh in read_yolo_labels(label_path(path)):
            if not 0 <= c < nc:
                raise InputError(f"{label_path(path)}: class {c} outside the model's {nc} classes",
                                 "Check the labels or the checkpoint")
            pw, ph = bw * w, bh * h
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": image_id,
                                        "category_id": c + 1, "bbox": [cx * w - pw / 2, cy * h - ph / 2, pw, ph],
                                        "area": pw * ph, "iscrowd": 0})
    return GroundTruth(coco=coco, image_ids=ids, class_to_category=list(range(1, nc + 1)), source="yolo")


def class_mapping(categories: Sequence[dict], nc: int) -> list[int]:
    """Model class index -> category id (see module docstring)."""
    cat_ids = sorted(int(c["id"]) for c in categories)
    if len(cat_ids) == nc:
        return cat_ids
    start = 1 if cat_ids and min(cat_ids) >= 1 else 0
    log.warning("annotations have %d categories but the model has %d classes; mapping class i to id i%s",
                len(cat_ids), nc, " + 1" if start else "")
    return [i + start for i in range(nc)]


def gt_from_coco_json(ann: str | Path, images: Sequence[Path], nc: int) -> GroundTruth:
    """Read COCO JSON ground truth and match it to the files in ``images``."""
    ann = Path(ann)
    if not ann.is_file():
        raise InputError(f"annotation file not found: {ann}", "Pass a COCO JSON file (instances_val2017.json)")
    try:
        coco = json.loads(ann.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{ann} is not valid JSON ({exc})", "Pass a COCO-format annotation file") from exc
    if not isinstance(coco, dict) or not {"images", "annotations", "categories"} <= set(coco):
        raise InputError(f"{ann} is not COCO detection ground truth (needs images, annotations, categories)",
                         "Pass a COCO-format annotation file")
    by_name = {im["file_name"].rsplit("/", 1)[-1]: im["id"] for im in coco["images"]}
    known = {im["id"] for im in coco["images"]}
    ids: dict[str, int] = {}
    missing: list[str] = []
    for path in map(Path, images):
        image_id = by_name.get(path.name)
        if image_id is None and path.stem.isdigit() and int(path.stem) in known:
            image_id = int(path.stem)
        if image_id is None:
            missing.append(str(path))
        else:
            ids[str(path)] = image_id
    if not ids:
        raise InputError(f"none of the {len(images)} images is listed in {ann}",
                         "Pass the annotation file that belongs to the --val folder")
    if missing:
        log.warning("%d images have no entry in %s and are not evaluated", len(missing), ann)
    coco.setdefault("info", {})
    for a in coco["annotations"]:
        a.setdefault("iscrowd", 0)
        a.setdefault("area", a["bbox"][2] * a["bbox"][3])
    return GroundTruth(coco=coco, image_ids=ids, class_to_category=class_mapping(coco["categories"], nc),
                       source="coco", missing=missing)


def load_ground_truth(images: Sequence[Path], ann: str | Path | None, nc: int) -> GroundTruth | None:
    """COCO JSON when ``ann`` is given, YOLO labels when the images have some, else None (label-free)."""
    if ann is not None:
        return gt_from_coco_json(ann, images, nc)
    if has_yolo_labels(images):
        return gt_from_yolo(images, nc)
    return None


def yolo_class_floor(images: Sequence[Path]) -> int:
    """The highest class the YOLO labels of ``images`` use, + 1 (1 without labels): a lower bound on the
    model's class count, which helps an output shape tell the layouts apart (:mod:`trtqat.eval.layouts`)."""
    top = -1
    for path in images:
        for c, *_ in read_yolo_labels(label_path(path)):
            top = max(top, c)
    return max(1, top + 1)


def labels_class_count(images: Sequence[Path], ann: str | Path | None) -> int:
    """How many classes the labels name: COCO JSON categories, else the highest YOLO class + 1. Used only for
    a model that does not say (an end-to-end output without ``names`` metadata)."""
    if ann is not None:
        try:
            coco = json.loads(Path(ann).read_text())
            return max(1, len(coco.get("categories", [])))
        except (OSError, ValueError, AttributeError):
            pass  # the ground truth loader reports an unreadable file in its own words
    return yolo_class_floor(images)
