"""Compare engines side by side (e.g. FP16, TensorRT PTQ, QAT without rules, QAT with rules).

Why: the question a QAT user asks is "is my Q/DQ engine as fast as TensorRT's own INT8 build, and if
not, where does it lose?". The table answers the first half (qps, latency, INT8 share, reformats);
the two-engine diff the second (reformats only one engine has, ONNX nodes whose host layer runs in a
different precision, layers whose time changed most).

Inputs are already-parsed :class:`EnginePlan` and :class:`BenchResult` objects; nothing is re-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .._deps import require
from .._io import atomic_path
from .engine import BenchResult
from .plan import EnginePlan
from .report import make_report


@dataclass(frozen=True)
class EngineRow:
    """One line of the comparison table; None where the engine has no bench or no layer info."""

    label: str
    qps: float | None = None
    images_per_s: float | None = None
    batch: int | None = None
    latency_median_ms: float | None = None
    gpu_median_ms: float | None = None
    layers: int | None = None
    reformats: int | None = None
    qdq_reformats: int | None = None
    layout_reformats: int | None = None
    int8_share_layers: float | None = None
    int8_share_time: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def engine_row(label: str, plan: EnginePlan | None = None, bench: BenchResult | None = None) -> EngineRow:
    """Collect the table values of one engine from its plan and/or stored benchmark."""
    values: dict = {"label": label}
    if bench is not None:
        s = bench.summary
        values.update(
            qps=s.throughput_qps,
            images_per_s=bench.images_per_s,
            batch=bench.batch,
            latency_median_ms=s.latency.median if s.latency else None,
            gpu_median_ms=s.gpu_compute.median if s.gpu_compute else None,
        )
    if plan is not None:
        report = make_report(plan, top=0)
        counts = report.reformat_counts
        values.update(
            layers=report.layer_count,
            reformats=counts["total"],
            qdq_reformats=counts["qdq"],
            layout_reformats=counts["layout"],
            int8_share_layers=report.share("INT8"),
            int8_share_time=report.share("INT8", by="time"),
        )
    return EngineRow(**values)


@dataclass(frozen=True)
class PlanDiff:
    """Per-layer differences between engine ``a`` and engine ``b``."""

    a: str
    b: str
    reformats_only_a: tuple[str, ...]
    reformats_only_b: tuple[str, ...]
    precision_changes: tuple[
        tuple[str, str | None, str | None], ...
    ]  #: (onnx node, precision a, precision b)
    time_changes: tuple[tuple[str, float, float], ...]  #: (layer, ms a, ms b), largest |delta| first
    layers_only_a: int
    layers_only_b: int

    def to_dict(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "reformats_only_a": list(self.reformats_only_a),
            "reformats_only_b": list(self.reformats_only_b),
            "precision_changes": [{"onnx_node": n, "a": pa, "b": pb} for n, pa, pb in self.precision_changes],
            "time_changes": [{"layer": n, "a_ms": ta, "b_ms": tb} for n, ta, tb in self.time_changes],
            "layers_only_a": self.layers_only_a,
            "layers_only_b": self.layers_only_b,
        }


def _node_precisions(plan: EnginePlan) -> dict[str, str | None]:
    """ONNX node -> precision of the (non-reformat) engine layer that computes it."""
    out: dict[str, str | None] = {}
    for layer in plan.layers:
        if layer.is_reformat or layer.is_standalone_qdq:
            continue
        for node in layer.onnx_nodes:
            out.setdefault(node, layer.precision)
    return out


def diff_plans(
    a: EnginePlan, b: EnginePlan, *, label_a: str = "a", label_b: str = "b", top: int = 10
) -> PlanDiff:
    """Differences that survive renaming: reformat names, per-ONNX-node precision, same-name layer times."""
    conv_a, conv_b = a.conversions, b.conversions
    ref_a = {r.name for r in conv_a}
    ref_b = {r.name for r in conv_b}
    prec_a, prec_b = _node_precisions(a), _node_precisions(b)
    changes = tuple((n, prec_a[n], prec_b[n]) for n in prec_a if n in prec_b and prec_a[n] != prec_b[n])
    names_a = {layer.name: layer for layer in a.layers}
    names_b = {layer.name: layer for layer in b.layers}
    timed = [
        (n, names_a[n].time_ms, names_b[n].time_ms)
        for n in names_a
        if n in names_b and names_a[n].time_ms is not None and names_b[n].time_ms is not None
    ]
    timed.sort(key=lambda t: -abs(t[2] - t[1]))
    return PlanDiff(
        label_a,
        label_b,
        tuple(r.name for r in conv_a if r.name not in ref_b),
        tuple(r.name for r in conv_b if r.name not in ref_a),
        changes,
        tuple(timed[:top]),
        sum(1 for n in names_a if n not in names_b),
        sum(1 for n in names_b if n not in names_a),
    )


def plot_rows(rows: list[EngineRow], out: str | Path) -> Path:
    """Bar chart PNG/SVG: throughput (images/s, else qps) and reformat counts per engine."""
    matplotlib = require("matplotlib", purpose="the compare bar chart (--plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.label for r in rows]
    speed = [r.images_per_s if r.images_per_s is not None else (r.qps or 0.0) for r in rows]
    speed_label = "images/s" if all(r.images_per_s is not None for r in rows) else "qps"
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(rows) * 2), 4.0))
    ax1.bar(labels, speed, color="#4C72B0")
    ax1.set_title(f"Throughput ({speed_label})")
    qdq = [r.qdq_reformats or 0 for r in rows]
    layout = [r.layout_reformats or 0 for r in rows]
    ax2.bar(labels, qdq, color="#C44E52", label="Q/DQ reformats")
    ax2.bar(labels, layout, bottom=qdq, color="#DD8452", label="layout reformats")
    ax2.set_title("Reformat layers")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return out
