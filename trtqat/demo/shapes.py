"""A deterministic generated detection dataset: 8 classes of textured shapes on cluttered backgrounds.

Why: every accuracy number trtqat reports (float / PTQ / QAT / exported ONNX mAP) needs a detector that
was trained on *something* and a held-out split to score it on, and neither COCO nor upstream weights
can ship with the project. This dataset is written in seconds, identical on every machine, and hard
enough (small objects, occlusion, textures, look-alike clutter) that a small model stays well below a
perfect mAP, so that quantization error shows up in the numbers.

Each image is a pure function of ``(seed, split, index)``; ``write_dataset`` writes the usual upstream
layout (``images/`` + ``labels/`` with YOLO txt files), a COCO JSON for the validation split and an
upstream-style data yaml. ``python -m trtqat.demo.shapes DEST`` does the same from the shell.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter

from trtqat.demo.shapes_draw import background, draw_clutter, fill_texture, outline_of, random_colour, shape_mask
from trtqat.errors import InputError

__all__ = ["CLASSES", "SIZES", "ShapesDataset", "draw_image", "visible_labels", "write_dataset"]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")

#: (width, height) choices: landscape, portrait and square, longest side 320-448.
SIZES: tuple[tuple[int, int], ...] = ((320, 240), (240, 320), (384, 288), (288, 384), (352, 352), (416, 312),
                                      (320, 320), (448, 336))

MIN_VISIBLE = 0.4      # an object less visible than this (occluded by later ones) is dropped from the labels
MIN_OBJECTS, MAX_OBJECTS = 2, 12
MIN_SIZE, MAX_SIZE = 10.0, 150.0

Label = tuple[int, float, float, float, float]


@dataclass(frozen=True)
class ShapesDataset:
    root: Path            # dest
    train_images: Path    # root/images/train
    val_images: Path      # root/images/val
    val_json: Path        # root/val.json (COCO ground truth of the val split)
    yaml: Path            # root/shapes.yaml (upstream-style data yaml: path, train, val, nc, names)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index)])


def _object_size(rng: np.random.Generator) -> float:
    """Longest side in pixels: mostly log-uniform in 20-90, a fifth log-uniform over the full 10-150."""
    lo, hi = (20.0, 90.0) if rng.random() < 0.8 else (MIN_SIZE, MAX_SIZE)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def visible_labels(owner: np.ndarray, placed: list[tuple[int, int, int, np.ndarray]]) -> list[Label]:
    """Labels of the objects in ``placed`` (cls, x0, y0, full mask) given the final per-pixel owner map.

    An object keeps its label only if at least ``MIN_VISIBLE`` of its pixels still belong to it; its box
    is the tight box of those visible pixels, normalised to the image size.
    """
    h, w = owner.shape
    labels: list[Label] = []
    for k, (cls, x0, y0, mask) in enumerate(placed):
        mh, mw = mask.shape
        visible = owner[y0:y0 + mh, x0:x0 + mw] == k
        if visible.sum() < MIN_VISIBLE * mask.sum():
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        bx0, bx1 = x0 + cols[0], x0 + cols[-1] + 1
        by0, by1 = y0 + rows[0], y0 + rows[-1] + 1
        labels.append((cls, float((bx0 + bx1) / 2 / w), float((by0 + by1) / 2 / h), float((bx1 - bx0) / w),
                       float((by1 - by0) / h)))
    return labels


def draw_image(index: int, split: str, seed: int = 0) -> tuple[np.ndarray, list[Label]]:
    """One RGB uint8 image (H, W, 3) and its labels ``[(cls, cx, cy, w, h)]`` normalised to 0..1.

    Objects are painted in order; a per-pixel object-id map records which object owns each pixel, so
    a label is the tight box of the pixels of its object that are still visible, and an object that
    later ones hide for more than ``1 - MIN_VISIBLE`` of its area is dropped.
    """
    rng = _rng(seed, split, index)
    w, h = SIZES[int(rng.integers(len(SIZES)))]
    bg = Image.fromarray(np.clip(background(h, w, rng), 0, 255).astype(np.uint8))
    draw_clutter(bg, rng)
    canvas = np.asarray(bg, dtype=np.float32).copy()
    owner = np.full((h, w), -1, np.int16)
    placed: list[tuple[int, int, int, np.ndarray]] = []  # (cls, x0, y0, mask)
    for k in range(int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(CLASSES)))
        mask = shape_mask(CLASSES[cls], _object_size(rng), rng)
        mh, mw = mask.shape
        x0, y0 = int(rng.integers(0, w - mw + 1)), int(rng.integers(0, h - mh + 1))
        region = canvas[y0:y0 + mh, x0:x0 + mw]
        under = region[mask].mean(axis=0)
        tex = fill_texture(mh, mw, rng, avoid=under)
        if rng.random() < 0.3:
            tex = tex.copy()
            tex[outline_of(mask, int(rng.integers(1, 4)))] = random_colour(rng, avoid=tex[mask].mean(axis=0))
        region[mask] = tex[mask]
        owner[y0:y0 + mh, x0:x0 + mw][mask] = k
        placed.append((cls, x0, y0, mask))

    labels = visible_labels(owner, placed)

    # global photometric jitter: contrast/brightness, and sometimes a slight blur
    canvas = (canvas - 128) * rng.uniform(0.75, 1.15) + 128 + rng.uniform(-20, 20)
    out = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
    return np.asarray(out), labels


def _label_text(labels: list[Label]) -> str:
    return "".join(f"{c} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n" for c, cx, cy, bw, bh in labels)


def _write_yaml(path: Path, root: Path) -> None:
    import yaml

    doc = {"path": str(root), "train": "images/train", "val": "images/val", "nc": len(CLASSES),
           "names": list(CLASSES)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def write_dataset(dest: str | Path, *, train: int = 2000, val: int = 200, seed: int = 0,
                  progress: Callable[[int], None] | None = None) -> ShapesDataset:
    """Write the dataset under ``dest`` and return its paths.

    Everything is written into a temporary folder beside ``dest`` and renamed onto it at the end, so an
    interrupted run never leaves a half dataset that looks complete. An existing shapes dataset at
    ``dest`` is replaced; any other non-empty folder is refused. ``progress`` is called with 1 per image.
    """
    from trtqat.demo.fixtures import make_coco_json

    if train < 0 or val < 1 or seed < 0:
        raise InputError(f"invalid dataset size or seed (train={train}, val={val}, seed={seed})",
                         "Use train >= 0, val >= 1 and seed >= 0")
    root = Path(dest).resolve()
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / "shapes.yaml").exists())):
        raise InputError(f"{root} exists and is not a shapes dataset", "Choose a new or empty folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for split, count in (("train", train), ("val", val)):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(1, count + 1):
                pixels, labels = draw_image(i, split, seed)
                stem = f"{i:012d}"
                Image.fromarray(pixels).save(tmp / "images" / split / f"{stem}.jpg", quality=90)
                (tmp / "labels" / split / f"{stem}.txt").write_text(_label_text(labels))
                if progress:
                    progress(1)
        make_coco_json(sorted((tmp / "images" / "val").glob("*.jpg")), tmp / "val.json",
                       labels_dir=tmp / "labels" / "val", nc=len(CLASSES), names=CLASSES)
        _write_yaml(tmp / "shapes.yaml", root)
        if root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old.", dir=root.parent))
            root.rename(old / root.name)
            tmp.rename(root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShapesDataset(root=root, train_images=root / "images" / "train", val_images=root / "images" / "val",
                         val_json=root / "val.json", yaml=root / "shapes.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtqat.demo.shapes",
                                     description="Write the generated shapes detection dataset.")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--val", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    total = args.train + args.val
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if done % 100 == 0 or done == total:
            print(f"\r{done}/{total} images", end="", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    try:
        ds = write_dataset(args.dest, train=args.train, val=args.val, seed=args.seed, progress=tick)
    except InputError as e:
        print(f"Error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    seconds = time.perf_counter() - t0
    print("", file=sys.stderr)
    objects = sum(len(p.read_text().splitlines()) for p in (ds.root / "labels").rglob("*.txt"))
    print(f"{total} images ({args.train} train, {args.val} val), {objects} objects "
          f"({objects / max(total, 1):.1f}/image), {seconds:.1f} s -> {ds.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
