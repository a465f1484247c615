"""Shared benchmark plumbing: sizes, fixtures, machine info, interleaved timing, result files.

Why interleaved repeats: the benchmarks run on shared 2-core machines where background load changes
over seconds. Timing A several times and then B several times folds that drift into the ratio; running
A B B A A B ... and taking each side's median keeps both sides under the same conditions.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Config:
    """Sizes and repeat counts. ``full()`` is ``make bench``; ``smoke()`` is the test suite's tiny run."""

    size: int = 640  # network input for PTQ, throughput, export
    ptq_images: int = 32
    batch: int = 8
    amax_images: int = 8  # images of the calibration run whose histograms feed the amax benchmark
    entropy_subset: int = 3  # quantizers timed with the O(bins^2) reference entropy
    amax_quantizers: int | None = None  # None: every activation quantizer (mse, percentile)
    repeats: int = 2  # interleaved repeats per side (medians reported)
    qat_size: int = 320
    qat_batch: int = 4
    qat_steps: int = 2  # timed steps per repeat (after one warm-up step)
    placement_size: int = 128
    throughput_images: int = 16
    threads: int | None = None  # torch intra-op threads (None: torch's default, one per core)
    smoke: bool = False

    @classmethod
    def full(cls) -> "Config":
        return cls()

    @classmethod
    def smoke_config(cls) -> "Config":
        return cls(size=64, ptq_images=4, batch=2, amax_images=2, entropy_subset=1, amax_quantizers=2, repeats=1, qat_size=64,
                   qat_batch=1, qat_steps=1, placement_size=64, throughput_images=2, threads=1, smoke=True)

    def with_(self, **kw) -> "Config":
        return replace(self, **kw)


@dataclass
class Workspace:
    """Scratch fixtures (checkpoints, images) built once per ``make bench`` under ``root``."""

    root: Path
    checkpoints: dict[str, tuple[Path, Path]] = field(default_factory=dict)
    _images: dict[int, Path] = field(default_factory=dict)
    width: float | None = None  # fixture width multiple (None: the fixtures' thin default)

    def checkpoint(self, family: str) -> tuple[Path, Path]:
        """(checkpoint, fake repo) of the ``family`` fixture (fp16 ``ema`` form, as upstream saves)."""
        if family not in self.checkpoints:
            from trtqat.demo.fixtures import make_checkpoint

            self.checkpoints[family] = make_checkpoint(family, self.root / family, width=self.width)
        return self.checkpoints[family]

    def images(self, n: int) -> Path:
        """A folder of ``n`` synthetic jpg/png images of mixed sizes (the demo's generator)."""
        if n not in self._images:
            from trtqat.demo.fixtures import make_images

            folder = self.root / f"images_{n}"
            make_images(folder, n=n)
            self._images[n] = folder
        return self._images[n]


def machine_info() -> dict:
    """Where the absolute numbers come from (a ratio is portable, a time is not)."""
    import torch

    try:
        import pytorch_quantization

        pq = pytorch_quantization.__version__
    except Exception:  # pragma: no cover
        pq = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    return {"cpu_count": os.cpu_count(), "cpu_usable": usable, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "pytorch_quantization": pq, "python": platform.python_version(),
            "platform": platform.platform(), "processor": _cpu_model(), "device": "cpu",
            "cuda_available": bool(torch.cuda.is_available()), "loadavg_1m": _loadavg()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, alternating the order every round (A B, B A, A B ...)."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(timed(fns[n])[0])
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("inf")


def rnd(x, nd: int = 4):
    """Round floats (recursively) for readable JSON."""
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: rnd(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rnd(v, nd) for v in x]
    return x


def write_result(name: str, payload: dict, cfg: Config, out_dir: Path = RESULTS_DIR) -> Path:
    """``<out_dir>/<name>.json`` with the machine, the command and the config it was measured with."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "machine": machine_info(), "command": command_line(), "config": asdict(cfg),
           **rnd(payload)}
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def chosen_families(all_families: tuple[str, ...]) -> list[str]:
    """The families a per-family benchmark measures now: ``TRTQAT_BENCH_FAMILIES`` (comma-separated), else all.

    Why: one family's fixture can change (a retrained detector) without re-running hours of the other's."""
    chosen = [f for f in os.environ.get("TRTQAT_BENCH_FAMILIES", ",".join(all_families)).split(",") if f]
    unknown = sorted(set(chosen) - set(all_families))
    if unknown:
        raise ValueError(f"TRTQAT_BENCH_FAMILIES names unknown families {unknown}; choose from {all_families}")
    return chosen


def carried_over(name: str, families: set[str]) -> dict:
    """The committed per-family results of benchmark ``name`` for ``families`` (not measured in this run),
    each marked ``carried_over`` and with ``measured_on`` (the machine block and command of the file it is
    carried from, unless the row already names its own), so a partial run keeps, and says it keeps, their
    last measurement: the new file's own machine block is the new run's."""
    path = RESULTS_DIR / f"{name}.json"
    doc = json.loads(path.read_text()) if path.is_file() and families else {}
    old = doc.get("families", {})
    # files written before results named their command came from the full run
    where = {"machine": doc.get("machine"), "command": doc.get("command", "python -m benchmarks.run (make bench)")}
    return {f: {**old[f], "carried_over": True, "measured_on": old[f].get("measured_on", where)}
            for f in sorted(families) if f in old}


def command_line() -> str:
    """How a result was produced: the environment variables that choose what runs, then the command line."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("TRTQAT_BENCH_FAMILIES", "TRTQAT_MODELOPT_PYTHON", "OMP_NUM_THREADS")
                   if os.environ.get(k))
    prog = f"python -m benchmarks.{Path(sys.argv[0]).stem}" if Path(sys.argv[0]).parent.name == "benchmarks" \
        else Path(sys.argv[0]).name
    return " ".join(x for x in (env, prog, *sys.argv[1:]) if x)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
