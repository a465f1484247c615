"""Draw an engine graph: layers coloured by precision, Reformat layers highlighted.

Why our own drawing: the reference tool renders TREx's graph through graphviz, and TREx is not on
pip (and its TensorRT 10 release broke the 8.x files). A layered layout in pure Python is enough
for the question the picture answers -- "where does the engine leave INT8, and which reformats sit
there?" -- and keeps a YOLOv7-sized engine (a few hundred layers) readable: one row per dependency
depth, boxes ordered by their producers' positions, hover text (SVG ``<title>``) with full names.

SVG is written without dependencies; PNG (``-o x.png``) uses matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from .._deps import require
from .._io import atomic_path, write_text
from ..errors import UsageError
from .plan import EnginePlan, Layer

PRECISION_COLORS = {
    "INT8": "#59a14f",
    "FP16": "#4e79a7",
    "FP32": "#f28e2b",
    "BF16": "#b07aa1",
    "FP8": "#76b7b2",
    "INT32": "#bab0ac",
    "INT64": "#bab0ac",
    "BOOL": "#bab0ac",
    "UINT8": "#bab0ac",
}
UNKNOWN_COLOR = "#dddddd"
HIGHLIGHT = {"QDQ": "#d62728", "REFORMAT": "#ff7f0e"}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN, LEGEND_H = 230, 46, 24, 34, 20, 40
SKIP_LANE, MIN_W = 80, 760  #: room right of the boxes for edges that skip rows; minimum width for the legend


@dataclass(frozen=True)
class Box:
    layer: Layer
    x: float
    y: float


@dataclass(frozen=True)
class Layout:
    boxes: tuple[Box, ...]
    edges: tuple[tuple[int, int, str | None], ...]  #: (from box, to box, tensor precision)
    width: float
    height: float


def layout(plan: EnginePlan) -> Layout:
    """Rows by longest-path depth (layers come in execution order, so producers precede consumers)."""
    producer: dict[str, int] = {}
    for i, layer in enumerate(plan.layers):
        for t in layer.outputs:
            producer[t.name] = i
    rank: list[int] = []
    edges: list[tuple[int, int, str | None]] = []
    for i, layer in enumerate(plan.layers):
        srcs = [(producer[t.name], t.precision) for t in layer.inputs if producer.get(t.name, i) < i]
        edges += [(s, i, p) for s, p in srcs]
        rank.append(1 + max((rank[s] for s, _ in srcs), default=-1))
    rows: dict[int, list[int]] = {}
    for i, r in enumerate(rank):
        rows.setdefault(r, []).append(i)
    xpos: dict[int, float] = {}
    preds: dict[int, list[int]] = {}
    for s, d, _ in edges:
        preds.setdefault(d, []).append(s)
    widest = max((len(v) for v in rows.values()), default=1)
    width = max(2 * MARGIN + widest * (BOX_W + GAP_X) + SKIP_LANE, MIN_W)
    boxes: dict[int, Box] = {}
    for r in sorted(rows):
        members = rows[r]
        # barycenter of producers keeps chains vertical and branches side by side
        members.sort(
            key=lambda i: (sum(xpos[p] for p in preds.get(i, [])) / len(preds[i]) if preds.get(i) else 0.0, i)
        )
        row_w = len(members) * (BOX_W + GAP_X) - GAP_X
        x0 = (width - row_w) / 2
        for k, i in enumerate(members):
            x = x0 + k * (BOX_W + GAP_X)
            xpos[i] = x
            boxes[i] = Box(plan.layers[i], x, MARGIN + LEGEND_H + r * (BOX_H + GAP_Y))
    height = 2 * MARGIN + LEGEND_H + len(rows) * (BOX_H + GAP_Y)
    ordered = tuple(boxes[i] for i in range(len(plan.layers)))
    return Layout(ordered, tuple(edges), width, height)


def edge_curve(a: Box, b: Box) -> tuple[tuple[float, float], ...]:
    """Four cubic-Bezier control points. Adjacent rows: straight down. Edges that skip rows leave and
    enter on the right side and bulge right (more for longer skips) so they do not cross the boxes
    of a single-column chain (a ResNet/YOLO backbone draws mostly as one column)."""
    if b.y - a.y <= BOX_H + GAP_Y + 1:
        x1, y1, x2, y2 = a.x + BOX_W / 2, a.y + BOX_H, b.x + BOX_W / 2, b.y
        mid = (y1 + y2) / 2
        return (x1, y1), (x1, mid), (x2, mid), (x2, y2)
    rows = (b.y - a.y) / (BOX_H + GAP_Y)
    bulge = min(SKIP_LANE - 10, 20 + 8 * rows)
    x1, y1, x2, y2 = a.x + BOX_W, a.y + BOX_H / 2, b.x + BOX_W, b.y + BOX_H / 2
    return (x1, y1), (max(x1, x2) + bulge, y1), (max(x1, x2) + bulge, y2), (x2, y2)


def _short(text: str, n: int = 34) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _caption(layer: Layer) -> str:
    parts = [layer.type, f"{layer.precision or '?'}\u2192{layer.output_precision or '?'}"]
    if layer.time_ms is not None:
        parts.append(f"{layer.time_ms * 1000:.0f} \u00b5s")
    return " \u00b7 ".join(parts)


def _fill(layer: Layer) -> str:
    return PRECISION_COLORS.get(layer.precision or "", UNKNOWN_COLOR)


def _legend_items() -> list[tuple[str, str, str | None]]:
    items = [(p, PRECISION_COLORS[p], None) for p in ("INT8", "FP16", "FP32", "BF16", "FP8")]
    return items + [
        ("Q/DQ reformat", "#ffffff", HIGHLIGHT["QDQ"]),
        ("layout reformat", "#ffffff", HIGHLIGHT["REFORMAT"]),
    ]


def render_svg(plan: EnginePlan) -> str:
    """The engine graph as SVG text."""
    lay = layout(plan)
    header = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" height="{lay.height:.0f}" '
        f'font-family="Helvetica, Arial, sans-serif" font-size="11">'
    )
    title = (
        f'<text x="{MARGIN}" y="{MARGIN + 4}" font-size="14" font-weight="bold">{escape(plan.name)}: '
        f"{len(plan.layers)} layers, {len(plan.conversions)} reformats</text>"
    )
    out = [header, '<rect width="100%" height="100%" fill="white"/>', title]
    x = MARGIN
    for label, fill, stroke in _legend_items():
        out.append(
            f'<rect x="{x}" y="{MARGIN + 14}" width="14" height="14" fill="{fill}" '
            f'stroke="{stroke or "#333"}" stroke-width="{3 if stroke else 1}"/>'
        )
        out.append(f'<text x="{x + 18}" y="{MARGIN + 25}">{escape(label)}</text>')
        x += 30 + 7 * len(label)
    for s, d, prec in lay.edges:
        (x1, y1), c1, c2, (x2, y2) = edge_curve(lay.boxes[s], lay.boxes[d])
        color = PRECISION_COLORS.get(prec or "", "#999999")
        out.append(
            f'<path d="M{x1:.1f},{y1:.1f} C{c1[0]:.1f},{c1[1]:.1f} {c2[0]:.1f},{c2[1]:.1f} '
            f'{x2:.1f},{y2:.1f}" fill="none" stroke="{color}" stroke-width="1.5" opacity="0.8"/>'
        )
    for box in lay.boxes:
        layer = box.layer
        stroke = HIGHLIGHT.get(layer.origin or "", "#333333") if layer.is_reformat or layer.is_standalone_qdq else "#333333"
        width = 4 if layer.is_reformat or layer.is_standalone_qdq else 1
        tip = "\n".join([layer.name, _caption(layer), "ONNX: " + ", ".join(layer.onnx_nodes)])
        out.append(
            f"<g><title>{escape(tip)}</title>"
            f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="6" '
            f'fill="{_fill(layer)}" fill-opacity="0.85" stroke="{stroke}" stroke-width="{width}"/>'
            f'<text x="{box.x + 8:.1f}" y="{box.y + 18:.1f}">{escape(_short(layer.name))}</text>'
            f'<text x="{box.x + 8:.1f}" y="{box.y + 35:.1f}" font-size="10">{escape(_caption(layer))}</text>'
            f"</g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_png(plan: EnginePlan, out: Path, dpi: int = 100) -> Path:
    """Draw the same layout with matplotlib (for a PNG to paste into a report)."""
    matplotlib = require("matplotlib", purpose="PNG engine drawings (use -o file.svg to avoid it)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch, PathPatch, Rectangle
    from matplotlib.path import Path as MplPath

    lay = layout(plan)
    fig = plt.figure(figsize=(lay.width / dpi, lay.height / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, lay.width)
    ax.set_ylim(lay.height, 0)
    ax.axis("off")
    ax.text(
        MARGIN,
        MARGIN + 4,
        f"{plan.name}: {len(plan.layers)} layers, {len(plan.conversions)} reformats",
        fontsize=11,
        weight="bold",
        va="center",
    )
    x = MARGIN
    for label, fill, stroke in _legend_items():
        ax.add_patch(
            Rectangle(
                (x, MARGIN + 14),
                14,
                14,
                facecolor=fill,
                edgecolor=stroke or "#333",
                linewidth=2.5 if stroke else 0.8,
            )
        )
        ax.text(x + 18, MARGIN + 21, label, fontsize=8, va="center")
        x += 30 + 7 * len(label)
    for s, d, prec in lay.edges:
        curve = edge_curve(lay.boxes[s], lay.boxes[d])
        path = MplPath(curve, [MplPath.MOVETO, MplPath.CURVE4, MplPath.CURVE4, MplPath.CURVE4])
        ax.add_patch(
            PathPatch(
                path,
                facecolor="none",
                edgecolor=PRECISION_COLORS.get(prec or "", "#999999"),
                lw=1.0,
                alpha=0.8,
            )
        )
    for box in lay.boxes:
        layer = box.layer
        stroke = HIGHLIGHT.get(layer.origin or "", "#333333") if layer.is_reformat or layer.is_standalone_qdq else "#333333"
        ax.add_patch(
            FancyBboxPatch(
                (box.x, box.y),
                BOX_W,
                BOX_H,
                boxstyle="round,pad=0,rounding_size=6",
                facecolor=_fill(layer),
                edgecolor=stroke,
                alpha=0.9,
                linewidth=3 if layer.is_reformat or layer.is_standalone_qdq else 0.8,
            )
        )
        ax.text(box.x + 8, box.y + 16, _short(layer.name), fontsize=8, va="center")
        ax.text(box.x + 8, box.y + 33, _caption(layer), fontsize=7, va="center")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return out


def draw(plan: EnginePlan, out: str | Path) -> Path:
    """Write ``out`` as SVG or PNG depending on its suffix."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix == ".svg":
        return write_text(out, render_svg(plan))
    if suffix == ".png":
        return render_png(plan, out)
    raise UsageError(f"-o must end in .svg or .png, got {out.name}")
