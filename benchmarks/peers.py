"""Benchmark 8: other tools' Q/DQ ONNX (NVIDIA Model Optimizer's ONNX PTQ; for the Ultralytics family also
onnxruntime's ``quantize_static``), the same after ``trtqat optimize``, and trtqat's own flow.

Per family (``yolov5``, ``yolov7``, ``yolov8``: the Ultralytics YOLOv8-shaped fixture), on the trained shapes
fixture when it exists (``trtqat/demo/trained``, mAP on the held-out shapes val split) and on the
random-weight fixture otherwise (no mAP):

- ``modelopt``: ``python -m modelopt.onnx.quantization --quantize_mode int8 --calibration_eps cpu`` on a
  copy of the float FP32 export (ModelOpt rewrites its input ONNX in place), calibrated on the same images
  as trtqat;
- ``modelopt+optimize``: ``trtqat optimize`` of that output without data (largest scale per group), and
  ``modelopt+optimize --calib`` with the calibration images (tied groups derived again), and
  ``modelopt+optimize --calib --recalibrate all`` (every activation scale derived again);
- ``onnxruntime`` (Ultralytics family only: it is what Ultralytics' ``export(format="onnx", quantize=8)``
  runs): ``onnxruntime.quantization.quantize_static`` with its defaults (QDQ format, asymmetric int8
  activations, per-tensor weights) and every node but Conv/Gemm/MatMul excluded, calibrated on the same
  images; ``onnxruntime+optimize --calib``: ``trtqat optimize --calib`` of it (its asymmetric scales need
  data, so there is no row without ``--calib``);
- ``trtqat``: ``trtqat quantize --ptq`` (rules on) + ``trtqat export``.

Reported: standalone Q/DQ and INT8 MAC share (``trtqat lint``), wall time of each step, mAP@0.5:0.95
(``trtqat eval``). Runs only where ``nvidia-modelopt[onnx]`` can be run: the current Python, or the one
named by ``TRTQAT_MODELOPT_PYTHON`` (ModelOpt pins its own torch and onnx; a separate venv keeps them
apart). Otherwise the result records that it was skipped and why. ``TRTQAT_BENCH_FAMILIES=yolov5`` measures
one family and carries the other's committed rows over (marked ``carried_over``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import Config, Workspace, carried_over, chosen_families, log

FAMILIES = ("yolov5", "yolov7", "yolov8")
#: families whose users get onnxruntime QDQ from their exporter (Ultralytics' quantize=8)
ONNXRUNTIME_FAMILIES = ("yolov8",)


def modelopt_python() -> str | None:
    """A Python that can run ``modelopt.onnx.quantization``, or None."""
    env = os.environ.get("TRTQAT_MODELOPT_PYTHON")
    if env:
        return env if Path(env).is_file() else None
    return sys.executable if importlib.util.find_spec("modelopt") is not None else None


def _trtqat(*args) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trtqat", *[str(a) for a in args]], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"trtqat {args[0]} failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t


def _modelopt(py: str, float_onnx: Path, calib_npy: Path, out: Path) -> float:
    src = out.with_name(out.stem + ".input.onnx")  # ModelOpt rewrites its input in place: give it a copy
    shutil.copyfile(float_onnx, src)
    t = time.perf_counter()
    proc = subprocess.run([py, "-m", "modelopt.onnx.quantization", "--onnx_path", str(src), "--quantize_mode", "int8",
                           "--calibration_data_path", str(calib_npy), "--calibration_eps", "cpu",
                           "--output_path", str(out)], capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"ModelOpt ONNX PTQ failed: {proc.stderr[-2000:]}")
    return time.perf_counter() - t


def _onnxruntime(float_onnx: Path, batches: list[np.ndarray], out: Path) -> float:
    """``quantize_static`` with its defaults, every node but Conv/Gemm/MatMul excluded; returns seconds."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    model = onnx.load(str(float_onnx))
    name = model.graph.input[0].name
    exclude = [n.name for n in model.graph.node if n.op_type not in ("Conv", "Gemm", "MatMul")]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: b[i:i + 1]} for b in batches for i in range(len(b))])

        def get_next(self):
            return next(self.it, None)

    t = time.perf_counter()
    quantize_static(str(float_onnx), str(out), Reader(), nodes_to_exclude=exclude)
    return time.perf_counter() - t


def _lint(path: Path) -> dict:
    from trtqat.graph.lint import lint_onnx

    s = lint_onnx(path).summary
    return {"standalone_qdq": s.get("standalone_qdq"), "int8_share_macs": s.get("int8_share_macs"),
            "int8_share": s.get("int8_share"), "parse_errors": s.get("parse_errors") or []}


def _source(ws: Workspace, cfg: Config, family: str) -> dict:
    """Checkpoint, repo, size, calibration and (for a trained fixture) validation images."""
    from trtqat.demo import trained

    if trained.trained_path(family).is_file() and not cfg.smoke:
        from trtqat.demo.shapes import write_dataset

        ckpt, repo = trained.trained_checkpoint(family, ws.root / f"trained_repo_{family}")
        data = ws.root / "shapes"
        if not (data / "shapes.yaml").is_file():
            write_dataset(data, train=cfg.ptq_images, val=64, seed=0)
        size = int(trained.trained_info(family).get("size", 320))
        return {"ckpt": ckpt, "repo": repo, "size": size, "calib": data / "images" / "train",
                "val": data / "images" / "val", "val_ann": data / "val.json", "trained": True}
    ckpt, repo = ws.checkpoint(family)
    return {"ckpt": ckpt, "repo": repo, "size": cfg.placement_size, "calib": ws.images(cfg.ptq_images),
            "trained": False}


def _map(src: dict, models: dict[str, Path]) -> dict[str, float | None]:
    if not src["trained"]:
        return {}
    proc = subprocess.run([sys.executable, "-m", "trtqat", "eval", *[str(p) for p in models.values()], "--val",
                           str(src["val"]), "--val-ann", str(src["val_ann"]), "--size", str(src["size"]), "--json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"trtqat eval failed: {proc.stderr[-2000:]}")
    rows = json.loads(proc.stdout)["rows"]  # in the order given
    return {name: row.get("map") for name, row in zip(models, rows)}


def run_family(py: str, ws: Workspace, cfg: Config, family: str) -> dict:
    from trtqat.data.images import image_stream
    from trtqat.optimize import OptimizeConfig, optimize_file

    src = _source(ws, cfg, family)
    d = ws.root / f"peers_{family}"
    d.mkdir(parents=True, exist_ok=True)
    size, calib = src["size"], src["calib"]
    paths = {"float": d / "float.onnx", "modelopt": d / "modelopt.onnx", "modelopt+optimize": d / "mo_opt.onnx",
             "modelopt+optimize --calib": d / "mo_opt_calib.onnx",
             "modelopt+optimize --calib --recalibrate all": d / "mo_opt_calib_all.onnx", "trtqat": d / "trtqat.onnx"}
    _trtqat("export", src["ckpt"], "--repo", src["repo"], "--size", size, "--no-quant", "--float-dtype", "fp32",
            "--no-verify", "--save", paths["float"])
    batches = list(image_stream(calib, size, cfg.batch, max(1, cfg.ptq_images // cfg.batch)))
    npy = d / "calib.npy"
    np.save(npy, np.concatenate(batches))
    seconds = {"modelopt": _modelopt(py, paths["float"], npy, paths["modelopt"])}
    t = time.perf_counter()
    optimize_file(paths["modelopt"], paths["modelopt+optimize"], OptimizeConfig())
    seconds["modelopt+optimize"] = time.perf_counter() - t
    calib_kw = {"calib_dir": calib, "size": size, "batch_size": cfg.batch,
                "calib_batches": max(1, cfg.ptq_images // cfg.batch)}
    for name, scope in (("modelopt+optimize --calib", "groups"), ("modelopt+optimize --calib --recalibrate all", "all")):
        t = time.perf_counter()
        optimize_file(paths["modelopt"], paths[name], OptimizeConfig(recalibrate=scope), **calib_kw)
        seconds[name] = time.perf_counter() - t
    if family in ONNXRUNTIME_FAMILIES:
        paths.update({"onnxruntime": d / "ort.onnx", "onnxruntime+optimize --calib": d / "ort_opt_calib.onnx"})
        seconds["onnxruntime"] = _onnxruntime(paths["float"], batches, paths["onnxruntime"])
        t = time.perf_counter()
        optimize_file(paths["onnxruntime"], paths["onnxruntime+optimize --calib"], OptimizeConfig(), **calib_kw)
        seconds["onnxruntime+optimize --calib"] = time.perf_counter() - t
    ptq = d / "ptq.pt"
    seconds["trtqat"] = _trtqat("quantize", src["ckpt"], "--repo", src["repo"], "--calib", calib, "--size", size,
                                "--batch-size", cfg.batch, "--calib-batches", max(1, cfg.ptq_images // cfg.batch),
                                "--ptq", ptq) + _trtqat("export", ptq, "--repo", src["repo"], "--size", size,
                                                        "--no-verify", "--save", paths["trtqat"])
    maps = _map(src, paths)
    rows = {name: {**_lint(p), "seconds": seconds.get(name), "map": maps.get(name)} for name, p in paths.items()}
    log(f"{family}: " + ", ".join(f"{k} {v['standalone_qdq']}" for k, v in rows.items()))
    return {"trained": src["trained"], "size": size, "variants": rows}


def run(ws: Workspace, cfg: Config) -> dict:
    py = modelopt_python()
    if py is None:
        note = ("skipped: nvidia-modelopt[onnx] is not installed (pip install 'trtqat[peers]', or set "
                "TRTQAT_MODELOPT_PYTHON to a Python that has it)")
        log(note)
        return {"skipped": note}
    proc = subprocess.run([py, "-c", "import modelopt; print(modelopt.__version__)"], capture_output=True, text=True)
    chosen = chosen_families(FAMILIES)
    families = {f: run_family(py, ws, cfg, f) for f in chosen}
    import onnxruntime

    return {"modelopt_version": proc.stdout.strip(), "onnxruntime_version": onnxruntime.__version__,
            "families": {**carried_over("peers", set(FAMILIES) - set(chosen)), **families}}


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.peers``: this benchmark alone; writes ``results/peers.json`` only (the README table
    and ``summary.json`` are ``benchmarks.run``'s)."""
    import argparse
    import tempfile

    from .common import Config, write_result

    ap = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="the test suite's tiny sizes")
    args = ap.parse_args(argv)
    cfg = Config.smoke_config() if args.smoke else Config.full()
    with tempfile.TemporaryDirectory(prefix="trtqat-peers-") as tmp:
        t = time.perf_counter()
        res = run(Workspace(Path(tmp)), cfg)
        res["seconds_benchmark"] = time.perf_counter() - t
    log(f"wrote {write_result('peers', res, cfg)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
