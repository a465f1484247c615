"""Post-training calibration: collect activation histograms, then compute every amax.

Activation amax comes from the histogram by ``mse`` (default: Histogram(MSE) was best for YOLOv7 in the
reference study), ``entropy``, ``percentile`` or ``max``; weights get per-channel max. A quantizer shared
by the scale-sharing rules gets, with ``mse``, the amax that balances its members' relative errors
(:mod:`trtqat.quant.member_histograms`); the other methods read its merged histogram. Everything runs on
CPU or CUDA alike: the amax search is trtqat's own numpy code (pytorch-quantization's MSE path needs CUDA).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ..calib.amax import balanced_mse_amax, histogram_amax
from ..data.images import ImageStream
from ..errors import InputError
from ..models.device import set_memory_format
from .calibrator import FastHistogramCalibrator, release_buffers
from .distributed import DistEnv, active, dist_env, init_process_group
from .member_histograms import member_histograms
from .modes import calibration_mode
from .quantizers import is_weight_quantizer, named_quantizers, set_amax, weight_amax
from .sharded_calibration import collect_sharded, split_amax_search

log = logging.getLogger(__name__)


@dataclass
class CalibResult:
    """What calibration saw and produced."""

    method: str
    batches: int = 0
    images: int = 0
    seconds_collect: float = 0.0
    seconds_amax: float = 0.0
    amax: dict[str, float] = field(default_factory=dict)  # activation quantizer name -> amax
    unseen: list[str] = field(default_factory=list)  # quantizers that saw no tensor
    ranks: int = 1  # processes that shared the batches (torchrun)

    def to_dict(self) -> dict:
        return {"method": self.method, "batches": self.batches, "images": self.images, "ranks": self.ranks,
                "seconds_collect": round(self.seconds_collect, 3), "seconds_amax": round(self.seconds_amax, 3),
                "unseen": self.unseen}


def collect_statistics(model, batches: Iterable, device: str | torch.device = "cpu",
                       progress: Callable[[int], None] | None = None,
                       memory_format: torch.memory_format | None = None) -> tuple[int, int]:
    """Run ``batches`` (numpy or torch, N×3×H×W in 0..1) through ``model`` in calibration mode.

    The forward runs in ``memory_format``, channels-last (NHWC) by default: oneDNN's convolutions are 1.7x
    faster in it on the CPU (YOLOv7 fixture), and on an H100 calibration of a real-width YOLOv7 was 10 %
    faster in it (``benchmarks/results/cuda_width1.json``). Histograms do not depend on the layout. The
    model is returned to the default layout afterwards.
    """
    n_batches = n_images = 0
    fmt = memory_format or torch.channels_last
    set_memory_format(model, fmt)
    try:
        with calibration_mode(model), torch.no_grad():
            for batch in batches:
                x = torch.as_tensor(batch).to(device, non_blocking=True).contiguous(memory_format=fmt)
                model(x)
                n_batches += 1
                n_images += int(x.shape[0])
                if progress:
                    progress(int(x.shape[0]))
    finally:
        release_buffers()  # the calibrators' shared scratch buffer and tensor cache
        set_memory_format(model, torch.contiguous_format)
    return n_batches, n_images


def compute_amax(model, method: str = "mse", percentile: float = 99.99,
                 env: DistEnv | None = None) -> tuple[dict[str, float], list[str]]:
    """Load amax into every quantizer from its collected histogram (activations) or weights.

    Under torchrun (``env`` distributed, histograms already merged) each rank searches its share of the
    activation quantizers and the values are gathered, so every rank loads the same amax.
    """
    amax: dict[str, float] = {}
    unseen: list[str] = []
    modules = dict(model.named_modules())
    histograms = {}
    for name, q in named_quantizers(model):
        if is_weight_quantizer(name):
            owner = modules[name.rsplit(".", 1)[0]]
            axis = q.axis[0] if isinstance(q.axis, (tuple, list)) else q.axis
            set_amax(q, weight_amax(owner.weight, axis))
            continue
        cal = q._calibrator
        if not isinstance(cal, FastHistogramCalibrator):
            continue
        counts, edges = cal.histogram()
        if counts is None:
            unseen.append(name)
            continue
        histograms[name] = (q, cal, counts, edges)

    def search(name: str) -> float | None:
        q, cal, counts, edges = histograms[name]
        members = [m.histogram() for m in getattr(cal, "members", {}).values()]
        if method == "mse" and len(members) > 1:  # a shared quantizer: every member's error counts alike
            return balanced_mse_amax(members, num_bits=q.num_bits, unsigned=q.unsigned)
        return cal.max_seen if method == "max" else histogram_amax(method, counts, edges, num_bits=q.num_bits,
                                                                   unsigned=q.unsigned, percentile=percentile)

    env = env or DistEnv()
    found = split_amax_search(list(histograms), search, env) if active(env) else {n: search(n) for n in histograms}
    for name, (q, cal, _, _) in histograms.items():
        value = found[name]
        if value is None or not np.isfinite(value) or value <= 0:
            value = max(cal.max_seen, 1e-8)
        set_amax(q, value)
        amax[name] = float(value)
    return amax, unseen


def reset_statistics(model) -> None:
    """Drop collected histograms (they are large and must not be pickled into checkpoints)."""
    for _, q in named_quantizers(model):
        if q._calibrator is not None:
            q._calibrator.reset()


def calibrate(model, batches: Iterable, *, method: str = "mse", percentile: float = 99.99,
              device: str | torch.device = "cpu", progress: Callable[[int], None] | None = None,
              env: DistEnv | None = None) -> CalibResult:
    """Collect statistics over ``batches``, compute all amax, clear the histograms.

    Raises InputError when no batch was seen. Quantizers that saw no tensor (modules never run in eval,
    e.g. auxiliary heads) are reported in ``unseen`` and disabled, rather than failing the run as the
    reference flow does ("Calibrator returned None").

    Under torchrun (``env``, default: the torchrun variables) with an :class:`ImageStream`, every rank
    calibrates its share of the batches and the ranks merge their histograms
    (:mod:`trtqat.quant.sharded_calibration`): all ranks end with the amax of a single-process run.
    """
    env = env or dist_env()
    result = CalibResult(method=method, ranks=env.world_size)
    t0 = time.perf_counter()
    sharded = env.distributed and isinstance(batches, ImageStream)
    with member_histograms(model) if method == "mse" else contextlib.nullcontext():
        if sharded:
            init_process_group(env)
            result.batches, result.images, _ = collect_sharded(model, batches, env, collect_statistics, device,
                                                               progress)
        else:
            result.batches, result.images = collect_statistics(model, batches, device, progress)
        result.seconds_collect = time.perf_counter() - t0
        if result.batches == 0:
            raise InputError("calibration saw no images", "Pass a --calib folder with readable images")
        t1 = time.perf_counter()
        result.amax, result.unseen = compute_amax(model, method, percentile, env if sharded else None)
        result.seconds_amax = time.perf_counter() - t1
    for name, q in named_quantizers(model):
        if name in result.unseen:
            q.disable()
            log.warning("quantizer %s saw no tensor during calibration; disabled", name)
    reset_statistics(model)
    return result
