"""Benchmark 1: amax search, trtqat.calib.amax vs pytorch-quantization 2.1.3, on real calibration histograms.

The histograms come from a real calibration run of the YOLOv7 fixture (trtqat's collector, same binning as
pytorch-quantization's ``HistogramCalibrator``). Each method is timed over all activation quantizers of the
model (a shared quantizer counts once), trtqat's pass before and after each reference pass. The reference
MSE takes about a second per quantizer, so it runs once; the fast side's time is the median of its runs.
The reference entropy search is O(bins^2) in Python (several seconds per quantizer):
it is timed on the first ``cfg.entropy_subset`` quantizers only, and its ratio is
reported for that subset (``entropy_subset`` in the result names them).

Agreement: every trtqat amax must be within one histogram bin of the reference's (+0.1 % for the float32
rounding of bin centres far from zero).
"""
from __future__ import annotations

import time

import numpy as np

from .common import Config, Workspace, log, median, ratio, timed
from .reference_flow import reference_amax


def collect_histograms(ws: Workspace, cfg: Config) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], dict]:
    """Calibrate the YOLOv7 fixture (trtqat's plan and collector) and return every activation histogram."""
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint
    from trtqat.quant.calibrate import collect_statistics
    from trtqat.quant.calibrator import FastHistogramCalibrator
    from trtqat.quant.ptq import QuantConfig, prepare_quantized
    from trtqat.quant.quantizers import named_quantizers

    ckpt, repo = ws.checkpoint("yolov7")
    images = ws.images(cfg.amax_images)
    loaded = load_checkpoint(ckpt, repo)
    model, _, groups, _ = prepare_quantized(loaded, QuantConfig())
    t0 = time.perf_counter()
    collect_statistics(model, image_stream(images, cfg.size, cfg.batch))
    seconds = time.perf_counter() - t0
    hists = []
    for name, q in named_quantizers(model):
        cal = q._calibrator
        if isinstance(cal, FastHistogramCalibrator):
            counts, edges = cal.histogram()
            if counts is not None:
                hists.append((name, counts, edges))
    return hists, {"images": cfg.amax_images, "size": cfg.size, "groups": len(groups), "seconds_collect": seconds,
                   "bins_min": min(len(h[1]) for h in hists), "bins_max": max(len(h[1]) for h in hists)}


def _ours(method: str, hists) -> list[float]:
    from trtqat.calib.amax import histogram_amax

    return [histogram_amax(method, c, e) for _, c, e in hists]


def _theirs(method: str, hists) -> list[float]:
    return [float(reference_amax(method, c, e)) for _, c, e in hists]


def compare_method(method: str, hists, repeats: int, inner: int = 1) -> dict:
    """Interleaved timing of both implementations on ``hists`` (trtqat, reference, trtqat, ... trtqat:
    the fast side brackets every slow run), plus per-quantizer agreement. ``inner`` repeats each side's
    pass to make microsecond-scale methods measurable (times are per pass)."""
    results: dict = {}

    def ours():
        for _ in range(inner):
            results["ours"] = _ours(method, hists)

    def theirs():
        for _ in range(inner):
            results["theirs"] = _theirs(method, hists)

    t_ours, t_ref = [], []
    for _ in range(repeats):
        t_ours.append(timed(ours)[0] / inner)
        t_ref.append(timed(theirs)[0] / inner)
    t_ours.append(timed(ours)[0] / inner)
    widths = [float(e[1] - e[0]) for _, _, e in hists]
    off_bins = [abs(a - b) / w for a, b, w in zip(results["ours"], results["theirs"], widths)]
    return {"quantizers": len(hists), "seconds_trtqat": median(t_ours), "seconds_reference": median(t_ref),
            "speedup": ratio(median(t_ref), median(t_ours)), "times_trtqat": t_ours, "times_reference": t_ref,
            "max_diff_bins": max(off_bins), "within_one_bin": bool(max(off_bins) <= 1.0 + 1e-3),
            "exact_matches": int(sum(d == 0 for d in off_bins))}


def run(ws: Workspace, cfg: Config) -> dict:
    hists, calib = collect_histograms(ws, cfg)
    hists = hists[:cfg.amax_quantizers] if cfg.amax_quantizers else hists
    log(f"amax: {len(hists)} histograms ({calib['bins_min']}..{calib['bins_max']} bins)")
    out = {"calibration": calib, "methods": {}}
    for method, repeats, inner in (("mse", 1, 1), ("percentile", cfg.repeats, 20)):
        out["methods"][method] = compare_method(method, hists, repeats, inner)
        log(f"amax {method}: {out['methods'][method]['speedup']:.1f}x")
    subset = hists[:cfg.entropy_subset]
    ent = compare_method("entropy", subset, 1)
    ent["subset"] = [n for n, _, _ in subset]
    ent["note"] = (f"reference entropy is O(bins^2) Python; timed on the first {len(subset)} of {len(hists)} "
                   "quantizers, one repeat")
    out["methods"]["entropy"] = ent
    log(f"amax entropy (subset {len(subset)}): {ent['speedup']:.1f}x")
    out["mse_speedup"] = out["methods"]["mse"]["speedup"]
    return out
