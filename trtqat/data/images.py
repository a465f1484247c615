"""Calibration/training images: discovery, decoding, letterbox, batching.

Why letterbox: YOLO models are calibrated and deployed on letterboxed inputs (aspect kept, grey 114
padding, RGB, 0..1). Calibrating on a different preprocessing gives activation ranges that do not match
deployment, which is a classic source of PTQ accuracy loss.

Decoding uses Pillow (a core dependency); unreadable files are skipped and counted, never fatal, unless
nothing at all could be read.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PAD_VALUE = 114


def find_images(folder: str | Path) -> list[Path]:
    """All images under ``folder`` (recursive, sorted), or an InputError naming the folder."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"image folder not found: {root}", "Pass an existing folder of .jpg/.png/.bmp images")
    if not root.is_dir():
        raise InputError(f"not a folder: {root}", "Pass a folder of .jpg/.png/.bmp images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no images (.jpg/.jpeg/.png/.bmp) found under {root}",
                         "Point the option at a folder that contains images")
    return files


@dataclass(frozen=True)
class Letterbox:
    """How an image was mapped into the network input (to map boxes back)."""

    ratio: float
    pad: tuple[float, float]  # (left, top) padding in pixels
    shape: tuple[int, int]  # original (h, w)


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize ``img`` (H, W, 3 uint8 RGB) to fit ``size`` x ``size`` keeping aspect, pad with 114."""
    from PIL import Image

    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    if (nh, nw) != (h, w):
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    top, left = (size - nh) // 2, (size - nw) // 2
    out = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    out[top:top + nh, left:left + nw] = img
    return out, Letterbox(ratio=r, pad=(float(left), float(top)), shape=(h, w))


def read_rgb(path: Path) -> np.ndarray | None:
    """Decode an image as RGB uint8, or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises many types for corrupt files
        log.debug("skipping unreadable image %s: %s", path, exc)
        return None


@dataclass
class ImageStream:
    """Letterboxed float batches (N, 3, size, size) in 0..1 from a list of image files.

    ``skipped`` counts unreadable files seen so far; iteration raises InputError when no file at all
    could be read (an "images" folder full of corrupt files is a user error, not an empty calibration).
    """

    files: Sequence[Path]
    size: int
    batch_size: int = 8
    max_batches: int | None = None
    skipped: int = 0
    used: int = 0
    boxes: list[Letterbox] = field(default_factory=list)

    def __len__(self) -> int:
        n = -(-len(self.files) // self.batch_size)
        return min(n, self.max_batches) if self.max_batches else n

    def __iter__(self) -> Iterator[np.ndarray]:
        batch: list[np.ndarray] = []
        emitted = 0
        for path in self.files:
            if self.max_batches is not None and emitted >= self.max_batches:
                break
            img = read_rgb(path)
            if img is None:
                self.skipped += 1
                continue
            boxed, lb = letterbox(img, self.size)
            self.boxes.append(lb)
            batch.append(boxed)
            if len(batch) == self.batch_size:
                yield self._stack(batch)
                emitted += 1
                batch = []
        if batch and (self.max_batches is None or emitted < self.max_batches):
            yield self._stack(batch)
        if self.used == 0:
            raise InputError(f"none of the {len(self.files)} images could be read ({self.skipped} unreadable)",
                             "Check the image folder")

    def _stack(self, batch: list[np.ndarray]) -> np.ndarray:
        self.used += len(batch)
        arr = np.stack(batch).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(arr, dtype=np.float32) / 255.0


def image_stream(folder: str | Path, size: int, batch_size: int = 8, max_batches: int | None = None) -> ImageStream:
    """Convenience: :func:`find_images` + :class:`ImageStream`."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    return ImageStream(find_images(folder), size=size, batch_size=batch_size, max_batches=max_batches)


def seeded_noise(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Deterministic image-like input in 0..1 (for checks when no images are given)."""
    rng = np.random.default_rng(seed)
    return rng.random((batch, 3, size, size), dtype=np.float32)
