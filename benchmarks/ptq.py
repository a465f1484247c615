"""Benchmark 2: PTQ wall time end to end, trtqat vs the reference flow vs the floor, with peak memory.

Each flow runs in its own child Python (``python -m benchmarks.ptq FLOW SPEC``) so that its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own; the clock starts after the imports (torch,
pytorch-quantization, trtqat: identical for every flow) and covers:

- ``trtqat``: ``trtqat.quant.ptq.run_ptq`` — load, fuse, replacement, rules, calibration, amax, save;
- ``reference``: the same steps the reference tool's way (:func:`benchmarks.reference_flow.reference_ptq`);
- ``floor``: decode + letterbox every image with the same ``image_stream`` and run the fused float model's
  plain forward under ``no_grad`` (no load, no quantizers). Image decoding is *in* the floor: a PTQ run
  cannot avoid reading its images, so the floor is the least any calibration must do. The forward alone
  (on pre-decoded batches) is reported too (``floor_forward_only``), and so is the decode share.

- ``floor_tuned``: the floor under trtqat's own process settings (``trtqat.allocator.tune_allocator`` and a
  channels-last forward): the fastest plain forward this machine gives, for a like-for-like ratio
  (``ptq_over_tuned_floor``) beside the headline one against the plain floor.

The rules' temporary export is traced at 64 px (twice the stride) by trtqat itself since the first
benchmark run measured that lever; its groups equal those of a trace at the calibration size (tested).

Order: floor, floor_tuned, trtqat, reference, trtqat, floor_tuned, floor — the fast flows bracket the
slow one; medians per flow.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .common import Config, Workspace, log, median, ratio

REPO_ROOT = Path(__file__).resolve().parents[1]


def _rss_now_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _floor(spec: dict, tuned: bool = False) -> dict:
    import torch

    from trtqat.data.images import image_stream
    from trtqat.models import fuse_model, load_checkpoint, set_memory_format

    fmt = torch.contiguous_format
    if tuned:  # the floor under trtqat's own process settings: kept allocator memory, channels-last
        from trtqat.allocator import tune_allocator

        tune_allocator()
        fmt = torch.channels_last
    t0 = time.perf_counter()
    model = set_memory_format(fuse_model(load_checkpoint(spec["ckpt"], spec["repo"]).model).eval(), fmt)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    t_fwd = 0.0
    with torch.no_grad():
        for batch in image_stream(spec["images"], spec["size"], spec["batch"]):
            t2 = time.perf_counter()
            model(torch.from_numpy(batch).contiguous(memory_format=fmt))
            t_fwd += time.perf_counter() - t2
    total = time.perf_counter() - t1
    return {"seconds": {"total": total, "forward": t_fwd, "decode": total - t_fwd, "load_fuse": t_load}}


def _trtqat(spec: dict) -> dict:
    from trtqat.quant.calibrator import FastHistogramCalibrator
    from trtqat.quant.ptq import CalibConfig, run_ptq
    from trtqat.quant.quantizers import named_quantizers, quantizer_aliases

    widths: dict[int, float] = {}  # id(calibrator) -> bin width, noted just before calibration clears it
    reset = FastHistogramCalibrator.reset

    def noting_reset(cal):
        if cal._calib_bin_edges is not None:
            widths[id(cal)] = float(cal._calib_bin_edges[1] - cal._calib_bin_edges[0])
        reset(cal)

    FastHistogramCalibrator.reset = noting_reset
    calib = CalibConfig(calib_dir=Path(spec["images"]), size=spec["size"], batch_size=spec["batch"],
                        calib_batches=None, method="mse")
    try:
        res = run_ptq(spec["ckpt"], repo=spec["repo"], calib=calib, out=spec["out"])
    finally:
        FastHistogramCalibrator.reset = reset
    c = res.calib
    return {"seconds": {"total": res.seconds, "collect": c.seconds_collect, "amax": c.seconds_amax,
                        "other": res.seconds - c.seconds_collect - c.seconds_amax},
            "amax": c.amax, "groups": len(res.groups),
            "bin_widths": {n: widths[id(q._calibrator)] for n, q in named_quantizers(res.model, unique=False)
                           if n in c.amax and id(q._calibrator) in widths},
            "shared": sorted(n for names in quantizer_aliases(res.model).values() if len(names) > 1 for n in names)}


def _reference(spec: dict) -> dict:
    from .reference_flow import reference_ptq

    return reference_ptq(Path(spec["ckpt"]), Path(spec["repo"]), Path(spec["images"]), size=spec["size"],
                         batch=spec["batch"], max_batches=None, out=Path(spec["out"]))


FLOWS = {"floor": _floor, "floor_tuned": lambda spec: _floor(spec, tuned=True), "trtqat": _trtqat,
         "reference": _reference}


def child(flow: str, spec: dict) -> dict:
    """Runs inside the child process: imports first (not timed), then the flow."""
    import pytorch_quantization  # noqa: F401
    import torch  # noqa: F401  (import cost kept out of every flow's clock)

    from trtqat.quant import ptq  # noqa: F401

    base = _rss_now_mib()
    out = FLOWS[flow](spec)
    out["peak_rss_mib"] = _peak_mib()
    out["rss_after_imports_mib"] = base
    if spec.get("out") and Path(spec["out"]).exists():
        out["saved_bytes"] = Path(spec["out"]).stat().st_size
    return out


def run_child(flow: str, spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    if spec.get("threads"):
        env["OMP_NUM_THREADS"] = str(spec["threads"])
    proc = subprocess.run([sys.executable, "-m", "benchmarks.ptq", flow, json.dumps(spec)], cwd=str(REPO_ROOT),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"PTQ benchmark child {flow} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_amax(ours: dict[str, float], theirs: dict[str, float], our_widths: dict[str, float],
                 their_widths: dict[str, float], shared: Iterable[str] = ()) -> dict:
    """Per-quantizer distance in bins, each amax counted in its own flow's bins (``amax / width``).

    ``shared`` quantizers are left out: trtqat gives them the balanced MSE amax over their members'
    histograms (:func:`trtqat.calib.amax.balanced_mse_amax`), the reference the MSE amax of one merged
    histogram, a difference by design (counted as ``shared_not_compared``).

    Why each in its own grid: trtqat calibrates channels-last, the reference contiguous; the two layouts
    run other convolution kernels, so activations (and the first batch's max, which sets the bin width)
    differ at the 1e-5 level. A grid 1e-5 wider moves bin 4000 by 0.04 bins, which a distance in one
    flow's bins counts as disagreement although both searches picked the same or a neighbouring bin.
    Bin centres far from 0 carry float32 rounding, so a one-bin difference can read as 1.0004 bins: the
    tolerance is one bin + 0.1 %."""
    skip = set(shared)
    common = sorted((set(ours) & set(theirs)) - skip)
    off = [abs(ours[n] / our_widths[n] - theirs[n] / their_widths[n]) for n in common
           if our_widths.get(n) and their_widths.get(n)]
    return {"quantizers_trtqat": len(ours), "quantizers_reference": len(theirs), "compared": len(common),
            "shared_not_compared": len((set(ours) | set(theirs)) & skip),
            "same_names": set(ours) == set(theirs), "max_diff_bins": max(off) if off else None,
            "within_one_bin": bool(off) and max(off) <= 1.0 + 1e-3 and set(ours) == set(theirs),
            "exact_matches": int(sum(d == 0 for d in off))}


def run(ws: Workspace, cfg: Config, family: str = "yolov7") -> dict:
    ckpt, repo = ws.checkpoint(family)
    images = ws.images(cfg.ptq_images)
    runs: dict[str, list[dict]] = {"floor": [], "floor_tuned": [], "trtqat": [], "reference": []}
    with tempfile.TemporaryDirectory(prefix="trtqat-bench-ptq-") as tmp:
        spec = {"ckpt": str(ckpt), "repo": str(repo), "images": str(images), "size": cfg.size, "batch": cfg.batch,
                "threads": cfg.threads}
        order = (["floor", "floor_tuned", "trtqat", "reference", "trtqat", "floor_tuned", "floor"]
                 if cfg.repeats > 1 else ["floor", "floor_tuned", "trtqat", "reference"])
        for i, flow in enumerate(order):
            res = run_child(flow, {**spec, "out": str(Path(tmp) / f"{flow}_{i}.pt")})
            log(f"ptq {flow}: {res['seconds']['total']:.2f} s, peak {res['peak_rss_mib']:.0f} MiB")
            runs[flow].append(res)
    med = {f: median([r["seconds"]["total"] for r in rs]) for f, rs in runs.items()}
    fwd_only = median([r["seconds"]["forward"] for r in runs["floor"]])
    ours, ref = runs["trtqat"][-1], runs["reference"][-1]
    return {"family": family, "images": cfg.ptq_images, "size": cfg.size, "batch": cfg.batch, "order": order,
            "seconds": med, "floor_forward_only": fwd_only,
            "breakdown": {f: {k: median([r["seconds"][k] for r in rs]) for k in rs[0]["seconds"]}
                          for f, rs in runs.items()},
            "peak_rss_mib": {f: max(r["peak_rss_mib"] for r in rs) for f, rs in runs.items()},
            "rss_after_imports_mib": {f: rs[0]["rss_after_imports_mib"] for f, rs in runs.items()},
            "saved_bytes": {f: rs[0].get("saved_bytes") for f, rs in runs.items() if not f.startswith("floor")},
            "runs": {f: [r["seconds"]["total"] for r in rs] for f, rs in runs.items()},
            "groups": {"trtqat": ours.get("groups"), "reference": ref.get("groups")},
            "amax_agreement": compare_amax(ours["amax"], ref["amax"], ours["bin_widths"], ref["bin_widths"],
                                            ours["shared"]),
            "floor_definition": ("decode + letterbox of the same images (same image_stream, batch "
                                 f"{cfg.batch}) + fused float model forward under no_grad; model load excluded; "
                                 "floor_tuned: the same with trtqat's allocator settings and channels-last"),
            "ptq_speedup": ratio(med["reference"], med["trtqat"]),
            "ptq_over_floor": ratio(med["trtqat"], med["floor"]),
            "ptq_over_tuned_floor": ratio(med["trtqat"], med["floor_tuned"]),
            "ptq_over_forward_only": ratio(med["trtqat"], fwd_only)}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], json.loads(sys.argv[2]))))
