"""Drawing primitives for the generated shapes dataset: outlines, fills, backgrounds and clutter.

Why a separate module: ``shapes.py`` decides *what* goes into an image (classes, sizes, occlusion,
labels); this file only knows *how* to paint it quickly. Everything is vectorised numpy or PIL
ImageDraw into a mask, never a per-pixel Python loop, so 2,200 images take well under two minutes on one
core. Every function takes the caller's ``numpy.random.Generator`` so an image is a pure function of
its seed.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["shape_mask", "fill_texture", "background", "draw_clutter", "outline_of", "random_colour"]


def random_colour(rng: np.random.Generator, avoid: np.ndarray | None = None, min_dist: float = 70.0) -> np.ndarray:
    """An RGB colour (float32), at least ``min_dist`` away from ``avoid`` when a few draws allow it.

    Why: an object painted in the background's own colour is invisible, which no detector can learn;
    keeping a minimum contrast leaves the task hard (textures, clutter, occlusion) but fair.
    """
    c = rng.uniform(0, 255, 3)
    for _ in range(8):
        if avoid is None or float(np.linalg.norm(c - avoid)) >= min_dist:
            break
        c = rng.uniform(0, 255, 3)
    return c.astype(np.float32)


def _polygon(cls_name: str, rng: np.random.Generator) -> list[tuple[float, float]] | None:
    """Unit-size vertices (roughly within [-1, 1]) of a polygonal class, before aspect and rotation."""
    if cls_name == "square":
        return [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    if cls_name == "triangle":
        return [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if cls_name == "star":
        inner = rng.uniform(0.38, 0.5)
        return [((1 if i % 2 == 0 else inner) * math.cos(-math.pi / 2 + i * math.pi / 5),
                 (1 if i % 2 == 0 else inner) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
    if cls_name == "cross":
        t = rng.uniform(0.28, 0.4)
        return [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t),
                (-1, -t), (-t, -t)]
    if cls_name == "diamond":
        # a rhombus whose diagonals differ clearly (ratio 1.5-2), so it never looks like a rotated square
        r = rng.uniform(0.5, 0.67)
        return [(0, -1), (r, 0), (0, 1), (-r, 0)]
    if cls_name == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in np.arange(6) * math.pi / 3]
    return None


def shape_mask(cls_name: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """A tight boolean mask of one shape whose longest side is about ``size`` pixels.

    Polygons get a mild aspect jitter (0.8-1.25) and a random rotation; circles and rings only the
    aspect jitter (a rotated ellipse is still an ellipse, and rotation would hide nothing). A ring is an
    annulus: its hole is ``False`` so the background shows through.
    """
    aspect = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    if cls_name in ("circle", "ring"):
        rx, ry = (size / 2, size / 2 / aspect) if aspect >= 1 else (size / 2 * aspect, size / 2)
        w, h = max(2, int(round(2 * rx))), max(2, int(round(2 * ry)))
        im = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(im)
        d.ellipse([0, 0, w - 1, h - 1], fill=255)
        if cls_name == "ring":
            k = rng.uniform(0.45, 0.68)
            iw, ih = (w - 1) * k, (h - 1) * k
            cx, cy = (w - 1) / 2, (h - 1) / 2
            d.ellipse([cx - iw / 2, cy - ih / 2, cx + iw / 2, cy + ih / 2], fill=0)
        return np.asarray(im) > 127
    pts = np.asarray(_polygon(cls_name, rng), dtype=np.float64)
    if cls_name != "diamond":  # the rhombus has its own diagonal ratio; jitter could bring it near a square
        pts = pts * np.array([aspect, 1.0])
    a = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    pts = pts @ rot.T
    pts -= pts.min(axis=0)
    pts *= size / max(float(pts.max()), 1e-6)
    w, h = int(math.ceil(pts[:, 0].max())) + 1, int(math.ceil(pts[:, 1].max())) + 1
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(im) > 127


def outline_of(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner border (``width`` px) of a mask: mask minus its erosion, so it stays inside the shape."""
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    eroded = np.asarray(im.filter(ImageFilter.MinFilter(2 * width + 1))) > 127
    return mask & ~eroded


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: np.float32) -> np.ndarray:
    """Gaussian noise in float32 (float64 noise was half of the generation time)."""
    return rng.standard_normal(shape, dtype=np.float32) * sigma


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:h, 0:w].astype(np.float32)


def fill_texture(h: int, w: int, rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """An (h, w, 3) float32 fill: solid, two-colour stripes, checker, noise texture or gradient."""
    kind = rng.choice(5, p=[0.3, 0.2, 0.15, 0.15, 0.2])
    c1 = random_colour(rng, avoid)
    if kind == 0:
        return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    c2 = random_colour(rng, c1, min_dist=60)
    yy, xx = _grid(h, w)
    if kind == 1:  # stripes
        a = rng.uniform(0, math.pi)
        period = rng.uniform(4, 12)
        t = ((xx * math.cos(a) + yy * math.sin(a)) % period < period / 2).astype(np.float32)
    elif kind == 2:  # checker
        cell = int(rng.integers(3, 10))
        t = (((xx // cell) + (yy // cell)) % 2).astype(np.float32)
    elif kind == 3:  # noise texture around one colour
        return np.clip(c1 + _noise(rng, (h, w, 3), np.float32(rng.uniform(15, 45))), 0, 255)
    else:  # linear gradient
        a = rng.uniform(0, 2 * math.pi)
        p = xx * math.cos(a) + yy * math.sin(a)
        t = (p - p.min()) / max(float(p.max() - p.min()), 1.0)
    return c1 + (c2 - c1) * t[..., None]


def _low_freq(h: int, w: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth colour blobs: a tiny random image upsampled bicubically."""
    small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)


def background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) float32 background: gradient, gaussian noise, low-frequency blobs or stripes (or a blend)."""
    kinds = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
    out = np.zeros((h, w, 3), np.float32)
    yy, xx = _grid(h, w)
    for kind in kinds:
        if kind == 0:
            a = rng.uniform(0, 2 * math.pi)
            p = xx * math.cos(a) + yy * math.sin(a)
            t = ((p - p.min()) / np.float32(max(float(p.max() - p.min()), 1.0)))[..., None]
            c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
            layer = c1 + (c2 - c1) * t
        elif kind == 1:
            sigma = np.float32(rng.uniform(10, 40))
            layer = rng.uniform(40, 215, 3).astype(np.float32) + _noise(rng, (h, w, 3), sigma)
        elif kind == 2:
            layer = _low_freq(h, w, rng, int(rng.integers(3, 8)))
        else:
            a = rng.uniform(0, math.pi)
            period = rng.uniform(8, 40)
            t = (0.5 + 0.5 * np.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period))[..., None]
            c1, c2 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
            layer = c1 + (c2 - c1) * t
        out += layer / len(kinds)
    out += _noise(rng, (h, w, 1), np.float32(rng.uniform(2, 8)))  # sensor-like grain everywhere
    return out


def draw_clutter(img: Image.Image, rng: np.random.Generator) -> None:
    """Paint distractors that are none of the classes: thin lines and curves, irregular blobs, specks.

    Irregular blobs have many vertices with strongly varying radii, so they never read as a circle,
    square or star; lines stay thin (1-3 px) so they never read as a cross.
    """
    w, h = img.size
    d = ImageDraw.Draw(img)

    def colour() -> tuple[int, int, int]:
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    for _ in range(int(rng.integers(0, 6))):  # straight lines
        x0, y0, x1, y1 = rng.uniform(0, 1, 4) * [w, h, w, h]
        d.line([(x0, y0), (x1, y1)], fill=colour(), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 4))):  # smooth random curves
        n = 12
        start = rng.uniform(0, 1, 2) * [w, h]
        heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.35, n))
        step = rng.uniform(4, 14)
        pts = start + np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * step, axis=0)
        d.line([tuple(p) for p in pts], fill=colour(), width=int(rng.integers(1, 3)), joint="curve")
    for _ in range(int(rng.integers(0, 4))):  # irregular many-vertex blobs
        n = int(rng.integers(9, 16))
        r = rng.uniform(6, 30) * rng.uniform(0.35, 1.0, n)
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        c = rng.uniform(0, 1, 2) * [w, h]
        d.polygon([(c[0] + ri * math.cos(a), c[1] + ri * math.sin(a)) for ri, a in zip(r, ang)], fill=colour())
    for _ in range(int(rng.integers(0, 25))):  # specks
        x, y = rng.uniform(0, 1, 2) * [w, h]
        s = rng.uniform(0.5, 2.0)
        d.ellipse([x - s, y - s, x + s, y + s], fill=colour())
