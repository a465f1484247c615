"""Per-layer quantization sensitivity: which top-level layers cost the most accuracy in int8.

Why: a few layers (often the first conv and the detect head) carry most of the int8 error. Keeping just
those in float (``--ignore-policy``) recovers most of the accuracy while TensorRT still runs nearly
everything in int8. The reference ``sensitive`` tool ranks layers by disabling one layer's quantizers at a
time; trtqat does the same (``mode="drop"``) and also offers the converse (``mode="single"``: only that
layer quantized), which isolates each layer's own error from interactions.

Scores come from a caller-supplied ``score(model) -> float`` (higher is better: COCO mAP with labels, mean
SQNR against the float model without), evaluated with the quantizers exactly as set here. ``impact`` is
"accuracy the layer costs":

* drop: ``score(layer in float) - score(all quantized)``;
* single: ``ceiling - score(only layer quantized)``, with ``ceiling`` the float model's score when it is
  finite (mAP), else the best single-layer score (SQNR of the float model against itself is infinite).
"""
from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .modes import validation_mode
from .quantizers import named_quantizers

MODES = ("drop", "single")


def quantizers_by_layer(model) -> list[tuple[int, str, list]]:
    """``(index, "model.i", [quantizers])`` for every top-level layer that owns quantizers."""
    groups: dict[int, list] = {}
    for name, q in named_quantizers(model):
        parts = name.split(".")
        if len(parts) > 2 and parts[0] == "model" and parts[1].isdigit():
            groups.setdefault(int(parts[1]), []).append(q)
    return [(i, f"model.{i}", qs) for i, qs in sorted(groups.items())]


@contextlib.contextmanager
def _enabled_only(model, enabled: set[int]) -> Iterator[None]:
    """Disable every quantizer whose id is not in ``enabled``; restore the flags afterwards."""
    snap = [(q, q._disabled) for _, q in named_quantizers(model)]
    try:
        for q, _ in snap:
            if id(q) not in enabled:
                q._disabled = True
        yield
    finally:
        for q, flag in snap:
            q._disabled = flag


@dataclass
class LayerRow:
    index: int
    name: str
    quantizers: int
    score: float
    impact: float = 0.0

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "quantizers": self.quantizers, "score": self.score,
                "impact": self.impact}


@dataclass
class SensitivityResult:
    """Rows ranked most sensitive first."""

    mode: str
    metric: str
    baseline: float  # all layers quantized
    float_score: float | None
    rows: list[LayerRow] = field(default_factory=list)
    seconds: float = 0.0

    def top(self, k: int) -> list[LayerRow]:
        return self.rows[:max(k, 0)]

    def ignore_policy(self, k: int) -> str | None:
        """The ``--ignore-policy`` regex keeping the ``k`` most sensitive layers in float."""
        return ignore_regex([r.index for r in self.top(k)])

    def to_dict(self, top_k: int = 3) -> dict:
        return {"mode": self.mode, "metric": self.metric, "baseline": self.baseline, "float": self.float_score,
                "rows": [r.to_dict() for r in self.rows], "top_k": top_k, "ignore_policy": self.ignore_policy(top_k),
                "seconds": round(self.seconds, 2)}


def ignore_regex(indices: list[int]) -> str | None:
    """``[3, 17]`` -> ``model\\.(?:3|17)\\..*`` (matches ``model.3.conv`` but not ``model.31.conv``)."""
    if not indices:
        return None
    alt = "|".join(str(i) for i in sorted(set(indices)))
    body = alt if len(set(indices)) == 1 else f"(?:{alt})"
    pattern = rf"model\.{body}\..*"
    re.compile(pattern)
    return pattern


def run_sensitivity(model, score: Callable[[object], float], *, mode: str = "drop", metric: str = "score",
                    float_score: float | None = None, progress: Callable[[int], None] | None = None
                    ) -> SensitivityResult:
    """Score the model once per quantized top-level layer and rank the layers (see module docstring).

    Args:
        model: a calibrated quantized model (every layer quantized, no scale sharing: one layer's
            quantizers must not be another's).
        score: evaluates the model with its quantizers as they are; higher is better.
        float_score: the float model's score, when finite (used as the ceiling of ``single`` mode).
        progress: called with 1 after each layer.
    """
    if mode not in MODES:
        raise UsageError(f"--mode {mode!r} is not supported", f"Choose one of {', '.join(MODES)}")
    t0 = time.perf_counter()
    layers = quantizers_by_layer(model)
    if not layers:
        raise UsageError("the model has no quantized layers", "Run sensitivity on a PTQ model")
    every = {id(q) for _, q in named_quantizers(model)}
    rows: list[LayerRow] = []
    with validation_mode(model):
        with _enabled_only(model, every):
            baseline = float(score(model))
        for index, name, qs in layers:
            mine = {id(q) for q in qs}
            with _enabled_only(model, every - mine if mode == "drop" else mine):
                rows.append(LayerRow(index=index, name=name, quantizers=len(qs), score=float(score(model))))
            if progress:
                progress(1)
    if mode == "drop":
        for r in rows:
            r.impact = r.score - baseline
    else:
        finite = float_score is not None and math.isfinite(float_score)
        ceiling = float_score if finite else max(r.score for r in rows)
        for r in rows:
            r.impact = ceiling - r.score
    rows.sort(key=lambda r: (-r.impact, r.index))
    return SensitivityResult(mode=mode, metric=metric, baseline=baseline, float_score=float_score, rows=rows,
                             seconds=time.perf_counter() - t0)


def plot_sensitivity(result: SensitivityResult, path: str | Path, top: int = 30) -> Path:
    """Horizontal bar chart of the ``top`` most sensitive layers' impact, written atomically (PNG)."""
    from .._deps import require
    from .._io import atomic_path

    matplotlib = require("matplotlib", purpose="the sensitivity bar chart (--plot)")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.rows[:top][::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.28 * len(rows) + 1)))
    try:
        ax.barh([r.name for r in rows], [r.impact for r in rows], color="#c0392b")
        what = "float layer recovers" if result.mode == "drop" else "layer alone costs"
        ax.set_xlabel(f"{result.metric}: {what} (baseline {result.baseline:.4g})")
        ax.set_title(f"Quantization sensitivity ({result.mode})")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(path)
