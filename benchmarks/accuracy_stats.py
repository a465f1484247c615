"""When the accuracy benchmark may call a difference real: it must exceed both its bootstrap interval over
images and the spread of the same artifacts across kernel settings and reloads.

Why two yardsticks: they measure different things. The bootstrap (:mod:`trtqat.eval.bootstrap`) says how
far the mAP difference of two artifacts would move on another draw of images of the same kind; it shrinks
with more images (about 1/sqrt(N)). The kernel spread says how far the *same* artifact lands when another
machine runs it: another CPU's convolution kernels (AVX2 instead of AVX-512), another thread count
(another reduction order), or the checkpoint reloaded from disk instead of the model in memory. Floats
differ in the last bits, int8 roundings flip and a sharp detector moves a few boxes; more images do not
shrink that. A claim such as "QAT recovers 0.4 pt over PTQ" holds only if it is larger than both.

The settings emulate machines on one (the same three ``../shared/tools/kernel-matrix`` uses): each is an
environment under which ``trtqat eval`` rescoring the saved artifacts runs in a fresh process.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

#: environment of each rescoring run, over the benchmark child's own (``threads`` is filled in at run time)
KERNEL_SETTINGS: dict[str, dict[str, str]] = {
    "reload": {},  # the same kernels and threads, the artifacts reloaded from their files
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "threads": {},  # every core instead of the child's share: another reduction order
}
#: the run inside the benchmark child: the models as they are in memory, never saved and reloaded
IN_MEMORY = "in_memory"


def setting_env(name: str, base: Mapping[str, str], threads: int) -> dict[str, str]:
    """The environment of rescoring run ``name``: ``base`` with the setting's variables; ``threads`` is the
    child's thread count (``threads`` runs with every core instead)."""
    env = {**base, **KERNEL_SETTINGS[name], "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if name == "threads":
        cores = os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cores if cores != threads else max(1, cores // 2))
    return env


def spread(values: Sequence[float]) -> float:
    """max - min, in the values' unit."""
    return max(values) - min(values) if values else 0.0


def artifact_spreads(runs: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """``{artifact: max - min of its mAP points over the runs that scored it}`` from ``{run: {artifact: mAP}}``."""
    names = {a for scores in runs.values() for a in scores}
    return {a: round(spread([s[a] for s in runs.values() if a in s]), 4) for a in sorted(names)}


def difference(a: str, b: str, interval: Mapping[str, float], runs: Mapping[str, Mapping[str, float]]) -> dict:
    """The difference ``a - b`` (points) with its paired bootstrap ``interval`` (``value``/``low``/``high``), its
    spread over the runs that scored both, and whether it is resolved: larger in size than the interval's
    half-width and than that spread."""
    value, low, high = interval["value"], interval["low"], interval["high"]
    half = (high - low) / 2
    both = [s[a] - s[b] for s in runs.values() if a in s and b in s]
    kernels = spread(both)
    return {"value": round(value, 4), "low": round(low, 4), "high": round(high, 4), "half_width": round(half, 4),
            "kernel_spread": round(kernels, 4), "noise_floor": round(max(half, kernels), 4),
            "resolved": abs(value) > half and abs(value) > kernels}
