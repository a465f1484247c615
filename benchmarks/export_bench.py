"""Benchmark 6: ``trtqat export`` time and onnxruntime verification error, both families.

Each family's fixture is quantized (PTQ on a few images, trtqat's rules) in memory and exported with
``trtqat.quant.export.export_module`` (trace, cleanup, FP16 cast, onnxruntime verification of the FP32 and
FP16 graphs against the torch fake-quant model). Reported: wall time and, per checked graph and output,
cosine similarity and max abs error with the pass limits.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .common import Config, Workspace, log


def _family(ws: Workspace, cfg: Config, family: str, tmp: Path) -> dict:
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint
    from trtqat.quant.calibrate import calibrate
    from trtqat.quant.export import ExportConfig, export_module
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = ws.checkpoint(family)
    images = ws.images(cfg.throughput_images)
    loaded = load_checkpoint(ckpt, repo)
    model, _, _, _ = prepare_quantized(loaded, QuantConfig())
    calibrate(model, image_stream(images, cfg.size, cfg.batch, max_batches=1))
    res = export_module(model, tmp / f"{family}.onnx", ExportConfig(size=cfg.size, calib_dir=images),
                        family=family, kind="ptq")
    checks = res.verification.to_dict()["checks"] if res.verification else []
    return {"seconds": res.seconds, "qdq": res.qdq, "passed": bool(res.verification and res.verification.passed),
            "bytes": (tmp / f"{family}.onnx").stat().st_size,
            "checks": [{k: c[k] for k in ("graph", "batch", "output", "part", "cosine", "max_abs", "ref_max",
                                          "min_cosine", "limit_max_abs", "passed")} for c in checks],
            # the field "cosine" holds each part's own measure: a cosine for boxes (or a whole raw output), a
            # correlation for objectness and classes, an agreement share for the top class; report each apart
            "worst_cosine": min((c["cosine"] for c in checks if c["part"] in ("boxes", "all")), default=None),
            "worst_by_part": {part: min(c["cosine"] for c in checks if c["part"] == part)
                              for part in dict.fromkeys(c["part"] for c in checks)},
            "worst_max_abs": max((c["max_abs"] for c in checks), default=None)}


def run(ws: Workspace, cfg: Config) -> dict:
    out: dict = {"size": cfg.size, "families": {}}
    with tempfile.TemporaryDirectory(prefix="trtqat-bench-export-") as tmp:
        for family in ("yolov5", "yolov7"):
            r = _family(ws, cfg, family, Path(tmp))
            out["families"][family] = r
            log(f"export {family}: {r['seconds']:.2f} s, passed {r['passed']}, worst cosine {r['worst_cosine']}")
    return out
