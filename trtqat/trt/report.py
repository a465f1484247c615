"""Engine report data: what TensorRT actually did with the Q/DQ placement.

Why these numbers: a QAT engine is only worth it when it runs (almost) everything in INT8 without
extra conversions. The tell-tale signs, after TREx's linters:

- ``Reformat`` layers with ``Origin: "QDQ"``: a Q or DQ TensorRT could not fuse into a neighbour
  (float residual, unshared Concat scale, a Q blocked by a float consumer), each costing a memory pass;
- ``Reformat`` layers with ``Origin: "REFORMAT"``: layout/precision copies between kernels;
- INT8 convolutions writing float: free at a head, but inside the backbone they mean the next
  block's input needs a standalone Q;
- the precision mix by layer count and by time, and the slowest layers.

The report is plain data (``to_dict`` for ``--json``); tables are printed by the CLI.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .plan import FLOAT_PRECISIONS, EnginePlan, Layer, ReformatEntry, engine_layers_summary


@dataclass(frozen=True)
class PrecisionShare:
    precision: str
    layers: int
    time_ms: float | None
    time_share: float | None  #: fraction of the summed layer time (0..1)

    def to_dict(self) -> dict:
        return {
            "precision": self.precision,
            "layers": self.layers,
            "time_ms": self.time_ms,
            "time_share": self.time_share,
        }


@dataclass(frozen=True)
class LayerTime:
    name: str
    type: str
    precision: str | None
    output_precision: str | None
    time_ms: float | None
    time_share: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EngineReport:
    """Everything ``trtqat report`` shows for one engine."""

    name: str
    layer_count: int
    layer_types: dict[str, int]
    precision_mix: tuple[PrecisionShare, ...]
    reformats: tuple[ReformatEntry, ...]
    int8_float_out: tuple[LayerTime, ...]
    top_layers: tuple[LayerTime, ...]
    total_time_ms: float | None

    @property
    def qdq_unfused(self) -> tuple[ReformatEntry, ...]:
        """Q/DQ nodes TensorRT ran as standalone Reformat layers."""
        return tuple(r for r in self.reformats if r.origin == "QDQ")

    @property
    def reformat_counts(self) -> dict[str, int]:
        """Reformat layers split by origin: ``qdq`` (unfused Q/DQ) vs ``layout`` (Origin REFORMAT)."""
        by_origin = Counter(r.origin for r in self.reformats)
        return {
            "total": len(self.reformats),
            "qdq": by_origin.get("QDQ", 0),
            "layout": by_origin.get("REFORMAT", 0),
            "other": len(self.reformats) - by_origin.get("QDQ", 0) - by_origin.get("REFORMAT", 0),
        }

    @property
    def reformat_time_ms(self) -> float | None:
        if self.total_time_ms is None:
            return None
        return sum(r.time_ms or 0.0 for r in self.reformats)

    def share(self, precision: str, by: str = "layers") -> float | None:
        """Fraction of layers (``by="layers"``) or of time (``by="time"``) in ``precision``."""
        row = next((r for r in self.precision_mix if r.precision == precision), None)
        if by == "time":
            if self.total_time_ms is None:
                return None
            return (row.time_share or 0.0) if row else 0.0
        return (row.layers if row else 0) / max(self.layer_count, 1)

    def to_dict(self) -> dict:
        reformat_time = self.reformat_time_ms
        return {
            "name": self.name,
            "layers": self.layer_count,
            "layer_types": dict(self.layer_types),
            "total_time_ms": self.total_time_ms,
            "precision_mix": [p.to_dict() for p in self.precision_mix],
            "int8_share": {"layers": self.share("INT8"), "time": self.share("INT8", by="time")},
            "reformat_counts": self.reformat_counts,
            "reformat_time_ms": reformat_time,
            "reformat_time_share": (
                reformat_time / self.total_time_ms
                if reformat_time is not None and self.total_time_ms
                else None
            ),
            "reformats": [r.to_dict() for r in self.reformats],
            "qdq_unfused": [r.name for r in self.qdq_unfused],
            "int8_convs_with_float_output": [layer.to_dict() for layer in self.int8_float_out],
            "top_layers": [layer.to_dict() for layer in self.top_layers],
        }


def _layer_time(layer: Layer, total: float | None) -> LayerTime:
    share = layer.time_ms / total if layer.time_ms is not None and total else None
    return LayerTime(layer.name, layer.type, layer.precision, layer.output_precision, layer.time_ms, share)


def precision_mix(plan: EnginePlan) -> tuple[PrecisionShare, ...]:
    """Layers and time per precision (a layer's precision is what its kernel reads), largest first."""
    total = plan.total_time_ms
    counts: Counter = Counter()
    times: Counter = Counter()
    for layer in plan.layers:
        key = layer.precision or "unknown"
        counts[key] += 1
        times[key] += layer.time_ms or 0.0
    rows = [
        PrecisionShare(p, n, times[p] if total is not None else None, times[p] / total if total else None)
        for p, n in counts.items()
    ]
    return tuple(sorted(rows, key=lambda r: (-r.layers, r.precision)))


def int8_convs_with_float_output(plan: EnginePlan) -> list[Layer]:
    """Convolutions (incl. fused conv+add) that read INT8 and write FP32/FP16/BF16."""
    return [
        layer
        for layer in plan.layers
        if layer.is_convolution and layer.precision == "INT8" and layer.output_precision in FLOAT_PRECISIONS
    ]


def make_report(plan: EnginePlan, top: int = 10) -> EngineReport:
    """Summarize ``plan``; ``top`` is the number of slowest layers to list (needs a profile)."""
    total = plan.total_time_ms
    timed = sorted((layer for layer in plan.layers if layer.time_ms is not None), key=lambda x: -x.time_ms)
    return EngineReport(
        name=plan.name,
        layer_count=len(plan.layers),
        layer_types=dict(Counter(layer.type for layer in plan.layers).most_common()),
        precision_mix=precision_mix(plan),
        reformats=tuple(engine_layers_summary(plan)),
        int8_float_out=tuple(_layer_time(layer, total) for layer in int8_convs_with_float_output(plan)),
        top_layers=tuple(_layer_time(layer, total) for layer in timed[:top]),
        total_time_ms=total,
    )
