"""CUDA benchmarks (run only where a GPU is present): ``python -m benchmarks.cuda_bench [--out DIR]``.

Writes ``cuda.json`` beside the CPU results. CI has no GPU; the committed file comes from a GPU machine
(named in its ``machine`` block and in the README table). Sections, each a ratio from one
interleaved run on the same GPU:

- ``amax_mse``: pytorch-quantization 2.1.3's own MSE search, on its native CUDA path
  (``HistogramCalibrator.compute_amax("mse")``), against trtqat's numpy search, over every activation
  histogram of a YOLOv7-fixture calibration; same amax within one bin;
- ``calib_throughput``: images/s at 640 px, batch 8, both families: float forward, trtqat collection,
  reference collection (:mod:`benchmarks.throughput` on ``cuda``);
- ``ptq``: PTQ wall time on CUDA end to end (trtqat ``run_ptq``) against the floor (decode + fused float
  forward on the GPU), 32 images at 640 px;
- ``qat_step``: one distillation step at 640 px, batch 8: the reference recipe (AMP + GradScaler, multi-op
  fake quant) against trtqat's step as shipped on CUDA (AMP, default layout), without AMP, and
  channels-last (the CPU layout).

``--width 1.0`` builds the fixtures at real YOLO channel counts (the default fixtures are 1/8 wide, which
leaves a GPU latency-bound).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from .common import RESULTS_DIR, Config, Workspace, interleaved, log, machine_info, median, ratio, rnd


def _sync_timed(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def amax_mse(ws: Workspace, cfg: Config) -> dict:
    from pytorch_quantization.calib import HistogramCalibrator

    from trtqat.calib.amax import mse_amax

    from .amax_search import collect_histograms

    hists, info = collect_histograms(ws, cfg)
    cals = []
    for _, counts, edges in hists:
        cal = HistogramCalibrator(8, None, False, torch_hist=True)
        cal._calib_hist = torch.as_tensor(counts, dtype=torch.float32).cuda()
        cal._calib_bin_edges = torch.as_tensor(edges).cuda()
        cals.append(cal)
    t0 = time.perf_counter()
    theirs = [float(c.compute_amax("mse")) for c in cals]
    torch.cuda.synchronize()
    t_ref = time.perf_counter() - t0
    t_ours = []
    for _ in range(3):
        t1 = time.perf_counter()
        ours = [mse_amax(c, e) for _, c, e in hists]
        t_ours.append(time.perf_counter() - t1)
    bins = [abs(a - b) / float(e[1] - e[0]) for a, b, (_, _, e) in zip(ours, theirs, hists)]
    return {"quantizers": len(hists), "calibration": info, "seconds": {"reference_cuda": t_ref, "trtqat_cpu": median(t_ours)},
            "mse_speedup": ratio(t_ref, median(t_ours)), "max_diff_bins": max(bins),
            "within_one_bin": max(bins) <= 1.0 + 1e-3}


def calib_throughput(ws: Workspace, cfg: Config) -> dict:
    """Per family: :func:`benchmarks.throughput._family` on CUDA (trtqat in its CUDA layout), plus trtqat
    channels-last against the default layout, interleaved (the layout choice of ``preferred_memory_format``)."""
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint, to_device
    from trtqat.quant.calibrate import collect_statistics, reset_statistics
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    from .throughput import _family

    out = {}
    for f in ("yolov5", "yolov7"):
        out[f] = _family(ws, cfg, f, "cuda")
        ckpt, repo = ws.checkpoint(f)
        model, _, _, _ = prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig())
        to_device(model, "cuda")
        batches = [torch.from_numpy(b).cuda() for b in image_stream(ws.images(cfg.throughput_images), cfg.size,
                                                                      cfg.batch)]

        def collect(fmt, model=model, batches=batches):
            collect_statistics(model, batches, "cuda", memory_format=fmt)
            reset_statistics(model)
        fns = {"contiguous": _sync_timed(lambda: collect(torch.contiguous_format)),
               "channels_last": _sync_timed(lambda: collect(torch.channels_last))}
        for fn in fns.values():
            fn()
        times = interleaved(fns, 3)
        out[f]["layouts_seconds"] = {k: median(v) for k, v in times.items()}
    return out


def ptq(ws: Workspace, cfg: Config) -> dict:
    from trtqat.data.images import image_stream
    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant.ptq import CalibConfig, run_ptq

    ckpt, repo = ws.checkpoint("yolov7")
    images = ws.images(cfg.ptq_images)

    def floor():
        model = fuse_model(load_checkpoint(ckpt, repo).model).eval().cuda()
        with torch.no_grad():
            for b in image_stream(images, cfg.size, cfg.batch):
                model(torch.from_numpy(b).cuda())

    def ours():
        calib = CalibConfig(calib_dir=images, size=cfg.size, batch_size=cfg.batch, calib_batches=None,
                            method="mse", device="cuda")
        with tempfile.TemporaryDirectory() as tmp:
            run_ptq(ckpt, repo=repo, calib=calib, out=Path(tmp) / "ptq.pt")

    _sync_timed(floor)()  # warm-up: CUDA context, cuDNN heuristics
    times = interleaved({"floor": _sync_timed(floor), "trtqat": _sync_timed(ours)}, max(cfg.repeats, 2))
    med = {k: median(v) for k, v in times.items()}
    return {"images": cfg.ptq_images, "size": cfg.size, "seconds": med, "times": times,
            "floor_definition": "load + fuse + decode + float forward on the GPU",
            "ptq_over_floor": ratio(med["trtqat"], med["floor"])}


def qat_step(ws: Workspace, cfg: Config) -> dict:
    from trtqat.models import set_memory_format, to_device
    from trtqat.quant.modes import qat_mode, quant_disabled
    from trtqat.quant.qat import _step, prepare_distillation

    from .qat_step import calibrated_model
    from .reference_flow import ReferenceDistiller, reference_teacher

    size, batch = cfg.size, cfg.batch
    model, _ = calibrated_model(ws, cfg.with_(qat_size=size, qat_batch=batch))
    to_device(model, "cuda")
    x = torch.rand(batch, 3, size, size, device="cuda")
    # (amp, channels_last); "trtqat" is the step as shipped on CUDA (AMP, default layout)
    variants = {"trtqat": (True, False), "-amp": (False, False), "+channels_last": (True, True)}
    with contextlib.ExitStack() as stack:
        ref = ReferenceDistiller(copy.deepcopy(model), reference_teacher(model))
        stack.callback(ref.close)
        fns = {"reference": _sync_timed(lambda: ref.step(x))}
        for name, (amp, cl) in variants.items():
            student, teacher = copy.deepcopy(model), copy.deepcopy(model)
            stack.enter_context(quant_disabled(teacher))
            distil = prepare_distillation(student, teacher)
            fmt = torch.channels_last if cl else torch.contiguous_format
            set_memory_format(student, fmt), set_memory_format(teacher, fmt)
            stack.enter_context(qat_mode(student))
            opt = torch.optim.Adam(distil.params, lr=1e-5)
            scaler = torch.amp.GradScaler("cuda", enabled=amp)
            xi = x.contiguous(memory_format=fmt)
            fns[name] = _sync_timed((lambda s, t, d, o, sc, a, xx: lambda: _step(s, t, d, xx, o, sc, a, None))(
                student, teacher, distil, opt, scaler, amp, xi))
        for fn in fns.values():
            for _ in range(3):
                fn()
        times = interleaved(fns, 5)
    per_step = {k: median(v) for k, v in times.items()}
    return {"size": size, "batch": batch, "seconds_per_step": per_step, "times": times,
            "qat_step_speedup": ratio(per_step["reference"], per_step["trtqat"]),
            "lever_effect": {k: ratio(per_step[k], per_step["trtqat"]) for k in variants if k != "trtqat"}}


SECTIONS = {"amax_mse": amax_mse, "calib_throughput": calib_throughput, "ptq": ptq, "qat_step": qat_step}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cuda_bench", description=__doc__)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    ap.add_argument("--only", nargs="*", choices=list(SECTIONS))
    ap.add_argument("--width", type=float, default=None,
                    help="fixture width multiple (default: the thin fixtures; 1.0: real YOLO channel counts)")
    ap.add_argument("--name", default="cuda", help="result file stem")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr)
        return 2
    cfg = Config.full().with_(repeats=3)
    out: dict = {"benchmark": "cuda", "machine": {**machine_info(), "device": torch.cuda.get_device_name(0),
                                                  "cuda": torch.version.cuda}, "errors": {}}
    with tempfile.TemporaryDirectory(prefix="trtqat-bench-cuda-") as tmp:
        ws = Workspace(Path(tmp), width=args.width)
        out["width"] = args.width
        for name, fn in SECTIONS.items():
            if args.only and name not in args.only:
                continue
            log(f"--- cuda {name}")
            try:
                out[name] = fn(ws, cfg)
            except Exception as exc:
                out["errors"][name] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(rnd(out), indent=2, default=str) + "\n")
    print(json.dumps(rnd({k: (v.get("mse_speedup") or v.get("ptq_over_floor") or v.get("qat_step_speedup"))
                          if isinstance(v, dict) else v for k, v in out.items() if k in SECTIONS}), indent=2))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
