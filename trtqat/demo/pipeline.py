"""``trtqat demo``: the whole pipeline on an embedded default, as a user would type it.

It takes the committed trained reference detector of the chosen family (:mod:`trtqat.demo.trained`: a
scratch YOLOv5- or YOLOv7-shaped model trained on generated shapes, pickled inside a throwaway ``models``
package exactly like an upstream ``train.py`` checkpoint; or the YOLOv8-shaped one, pickled inside a
throwaway ``ultralytics`` package as ``YOLO.save()`` writes it), writes its fake repo and a few generated,
labelled images (calibration/QAT images from the training split, validation images from the held-out
split), then runs the real ``trtqat`` commands one after the other, each in its own process, printing the
command line first. TensorRT is not needed: the engine build is shown as a ``--dry-run`` command.

Every family runs the same commands. ``--repo`` is the fake clone for YOLOv5/YOLOv7 and, for YOLOv8, the
folder holding the scratch ``ultralytics`` package: a real Ultralytics checkpoint needs no ``--repo`` (it
unpickles from the installed package), but the demo must not depend on that package, and ``--repo`` comes
first on the import path, so the scratch package is the one the demo's checkpoint is read with.

It ends with ``trtqat eval`` over every artifact (float checkpoint, PTQ, QAT, the exported Q/DQ ONNX) on
the same held-out images, and a verdict: predicted standalone Q/DQ (baseline vs
trtqat placement) and mAP float / PTQ / QAT / ONNX.
"""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from . import shapes, trained


@dataclass(frozen=True)
class DemoConfig:
    family: str = "yolov5"
    out: Path = Path("trtqat-demo")
    size: int = 320
    images: int = 32  # calibration / QAT images (training split)
    val_images: int = 64  # held-out images every artifact is scored on
    qat: bool = True


@dataclass
class Step:
    title: str
    args: list[str]
    seconds: float = 0.0
    ok: bool = False
    capture_json: bool = False  # run with --json, keep the parsed output in ``result`` (the demo prints it)
    result: dict | None = None


@dataclass
class DemoResult:
    config: DemoConfig
    steps: list[Step] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    verdict: dict = field(default_factory=dict)


def plan(cfg: DemoConfig, ckpt: Path, repo: Path, images: Path, val: Path | None = None,
         val_ann: Path | None = None) -> tuple[list[Step], dict[str, Path]]:
    """The commands the demo runs (pure: easy to test and to print)."""
    out = cfg.out
    val = val or images
    files = {"checkpoint": ckpt, "repo": repo, "images": images, "val": val, "ptq": out / "ptq.pt",
             "ptq_norules": out / "ptq_norules.pt", "onnx": out / "model.onnx",
             "onnx_norules": out / "model_norules.onnx", "fp16_onnx": out / "model_fp16.onnx"}
    common = ["--repo", str(repo), "--size", str(cfg.size)]
    calib = ["--calib", str(images), "--batch-size", "8", "--calib-batches", str(max(1, cfg.images // 8))]
    labels = ["--val", str(val), *(["--val-ann", str(val_ann)] if val_ann else [])]
    steps = [Step("scale-sharing groups found on the graph", ["rules", str(ckpt), "--repo", str(repo)]),
             Step("PTQ without trtqat placement (baseline)",
                  ["quantize", str(ckpt), *common, *calib, "--no-rules", "--ptq", str(files["ptq_norules"])])]
    quant = ["quantize", str(ckpt), *common, *calib, "--ptq", str(files["ptq"])]
    final = files["ptq"]
    if cfg.qat:
        files["qat"] = out / "qat.pt"
        # no --val here: the last step scores every artifact on the held-out images (the epoch is chosen by
        # fidelity to the float model on the training images)
        quant += ["--qat", str(files["qat"]), "--train", str(images), "--epochs", "2", "--iters", "4"]
        final = files["qat"]
    steps += [Step("PTQ with trtqat placement" + (", then a short label-free QAT" if cfg.qat else ""), quant),
              Step("export Q/DQ ONNX (dynamic batch, verified in onnxruntime)",
                   ["export", str(final), *common, "--dynamic", "--save", str(files["onnx"])]),
              Step("export the baseline", ["export", str(files["ptq_norules"]), *common, "--dynamic",
                                           "--save", str(files["onnx_norules"])]),
              Step("export the float model (FP16 baseline engine input)",
                   ["export", str(ckpt), *common, "--no-quant", "--dynamic", "--save", str(files["fp16_onnx"])]),
              Step("TensorRT lint: baseline placement", ["lint", str(files["onnx_norules"])]),
              Step("TensorRT lint: trtqat placement", ["lint", str(files["onnx"])]),
              Step("trtexec build command (TensorRT 10; dry run: TensorRT is not needed here)",
                   ["build", str(files["onnx"]), "--save", str(out / "model.engine"), "--mode", "qat",
                    "--max-batch", "8", "--trt-version", "10", "--dry-run"]),
              Step("accuracy of every artifact on the same held-out images",
                   ["eval", str(ckpt), str(files["ptq"]),
                    *([str(files["qat"])] if cfg.qat else []), str(files["onnx"]), *labels, "--repo", str(repo),
                    "--size", str(cfg.size)], capture_json=True)]
    return steps, files


def prepare_inputs(cfg: DemoConfig) -> tuple[Path, Path, shapes.ShapesDataset]:
    """The trained checkpoint (copied into ``cfg.out``), its fake repo and the generated images."""
    src, repo = trained.trained_checkpoint(cfg.family, cfg.out / f"repo_{cfg.family}")
    ckpt = cfg.out / f"{cfg.family}_shapes.pt"
    shutil.copyfile(src, ckpt)
    data = shapes.write_dataset(cfg.out / "shapes", train=cfg.images, val=cfg.val_images,
                                seed=trained.trained_info(cfg.family).get("dataset", {}).get("seed", 0))
    return ckpt, repo, data


def verdict(result: DemoResult) -> dict:
    """Standalone Q/DQ predicted for both placements and the mAP of each artifact (from the eval step)."""
    from ..graph.lint import lint_onnx

    files = result.files
    out = {"standalone_qdq": {name: lint_onnx(files[key]).summary["standalone_qdq"]
                              for name, key in (("baseline", "onnx_norules"), ("trtqat", "onnx"))}}
    evaluation = result.steps[-1].result or {}
    names = {files["checkpoint"].name: "float", files["ptq"].name: "ptq", files["onnx"].name: "onnx"}
    if "qat" in files:
        names[files["qat"].name] = "qat"
    out["map"] = {names.get(row["name"], row["name"]): row["map"] for row in evaluation.get("rows", [])}
    out["images"] = evaluation.get("images")
    return out


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Generate the inputs and run every step; raise BuildError naming the step that failed."""
    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    echo(f"[demo] the trained {cfg.family} reference detector, its repo, {cfg.images} calibration and "
         f"{cfg.val_images} held-out generated images -> {cfg.out}")
    ckpt, repo, data = prepare_inputs(cfg)
    steps, files = plan(cfg, ckpt, repo, data.train_images, data.val_images, data.val_json)
    result = DemoResult(config=cfg, steps=steps, files=files)
    for i, step in enumerate(steps, 1):
        echo(f"\n[demo {i}/{len(steps)}] {step.title}\n$ trtqat {' '.join(shlex.quote(a) for a in step.args)}")
        s0 = time.perf_counter()
        args = [sys.executable, "-m", "trtqat", *step.args, *(["--json"] if step.capture_json else [])]
        proc = subprocess.run(args, text=True, stdout=subprocess.PIPE if step.capture_json else None)
        step.seconds, step.ok = time.perf_counter() - s0, proc.returncode == 0
        if not step.ok:
            raise BuildError(f"demo step {i} ('{step.title}') failed with exit code {proc.returncode}",
                             "See the output above")
        if step.capture_json:
            step.result = json.loads(proc.stdout)
    result.verdict = verdict(result)
    result.seconds = time.perf_counter() - t0
    return result
