"""Benchmark 4: calibration throughput (images/s) for both fixture families, trtqat vs the reference.

Per family, on pre-decoded letterboxed batches (decoding is measured separately as ``decode_images_per_s``)
at ``cfg.size`` px, batch ``cfg.batch``, on the CPU: the float forward, trtqat's histogram collection
(``collect_statistics``) and the reference collection (pytorch-quantization ``HistogramCalibrator``,
:func:`benchmarks.reference_flow.reference_collect`) on the same quantized model and scale-sharing groups,
interleaved; medians. CUDA is measured too when a GPU is present.
"""
from __future__ import annotations

import copy
import time

import torch

from .common import Config, Workspace, interleaved, log, median, ratio
from .reference_flow import reference_collect, use_reference_calibrators


def _family(ws: Workspace, cfg: Config, family: str, device: str) -> dict:
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint, to_device
    from trtqat.quant.calibrate import collect_statistics, reset_statistics
    from trtqat.quant.modes import quant_disabled
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = ws.checkpoint(family)
    images = ws.images(cfg.throughput_images)
    t0 = time.perf_counter()
    batches = [torch.from_numpy(b) for b in image_stream(images, cfg.size, cfg.batch)]
    decode = time.perf_counter() - t0
    n = sum(int(b.shape[0]) for b in batches)
    model, _, _, _ = prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig())
    ref = copy.deepcopy(model)
    use_reference_calibrators(ref)
    to_device(model, device), to_device(ref, device)
    batches = [b.to(device) for b in batches]

    def forward():
        with quant_disabled(model), torch.no_grad():
            for b in batches:
                model(b)

    def ours():
        collect_statistics(model, batches, device)
        reset_statistics(model)

    def theirs():
        reference_collect(ref, batches)
        for m in ref.modules():
            if hasattr(m, "_calibrator") and m._calibrator is not None:
                m._calibrator.reset()

    ours()  # warm-up (first-touch allocations)
    times = interleaved({"float_forward": forward, "trtqat": ours, "reference": theirs}, cfg.repeats)
    med = {k: median(v) for k, v in times.items()}
    return {"device": device, "images": n, "decode_images_per_s": n / decode,
            "images_per_s": {k: n / v for k, v in med.items()}, "seconds": med, "times": times,
            "speedup_vs_reference": ratio(med["reference"], med["trtqat"]),
            "collect_over_forward": {"trtqat": ratio(med["trtqat"], med["float_forward"]),
                                     "reference": ratio(med["reference"], med["float_forward"])}}


def run(ws: Workspace, cfg: Config) -> dict:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict = {"size": cfg.size, "batch": cfg.batch, "families": {}}
    for family in ("yolov5", "yolov7"):
        out["families"][family] = {d: _family(ws, cfg, family, d) for d in devices}
        r = out["families"][family]["cpu"]
        log(f"throughput {family}: trtqat {r['images_per_s']['trtqat']:.2f} img/s, "
            f"reference {r['images_per_s']['reference']:.2f}, float {r['images_per_s']['float_forward']:.2f}")
    return out
