"""``trtqat demo``: the whole pipeline on an embedded default, as a user would type it.

It writes a small YOLO-shaped checkpoint (pickled inside a throwaway ``models`` package, exactly like an
upstream ``train.py`` checkpoint) and a folder of generated, labelled images, then runs the real
``trtqat`` commands one after the other, each in its own process, printing the command line first.
TensorRT is not needed: the engine build is shown as a ``--dry-run`` command.
"""
from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BuildError
from . import fixtures


@dataclass(frozen=True)
class DemoConfig:
    family: str = "yolov7"
    out: Path = Path("trtqat-demo")
    size: int = 320
    images: int = 16
    qat: bool = True


@dataclass
class Step:
    title: str
    args: list[str]
    seconds: float = 0.0
    ok: bool = False


@dataclass
class DemoResult:
    config: DemoConfig
    steps: list[Step] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def plan(cfg: DemoConfig, ckpt: Path, repo: Path, images: Path) -> tuple[list[Step], dict[str, Path]]:
    """The commands the demo runs (pure: easy to test and to print)."""
    out = cfg.out
    files = {"checkpoint": ckpt, "repo": repo, "images": images, "ptq": out / "ptq.pt",
             "ptq_norules": out / "ptq_norules.pt", "onnx": out / "model.onnx",
             "onnx_norules": out / "model_norules.onnx", "fp16_onnx": out / "model_fp16.onnx"}
    common = ["--repo", str(repo), "--size", str(cfg.size)]
    calib = ["--calib", str(images), "--batch-size", "8", "--calib-batches", "2"]
    steps = [Step("scale-sharing groups found on the graph", ["rules", str(ckpt), "--repo", str(repo)]),
             Step("PTQ without scale rules (baseline)",
                  ["quantize", str(ckpt), *common, *calib, "--no-rules", "--ptq", str(files["ptq_norules"])])]
    quant = ["quantize", str(ckpt), *common, *calib, "--ptq", str(files["ptq"])]
    final = files["ptq"]
    if cfg.qat:
        files["qat"] = out / "qat.pt"
        quant += ["--qat", str(files["qat"]), "--train", str(images), "--epochs", "1", "--iters", "2",
                  "--val", str(images), "--val-images", "8", "--eval-origin", "--eval-ptq"]
        final = files["qat"]
    steps += [Step("PTQ with scale rules" + (", then QAT and evaluation" if cfg.qat else ""), quant),
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
                    "--max-batch", "8", "--trt-version", "10", "--dry-run"])]
    return steps, files


def run_demo(cfg: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Generate the inputs and run every step; raise BuildError naming the step that failed."""
    t0 = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    echo(f"[demo] writing a {cfg.family}-shaped checkpoint and {cfg.images} generated images to {cfg.out}")
    ckpt, repo = fixtures.make_checkpoint(cfg.family, cfg.out, name=f"{cfg.family}.pt")
    images = cfg.out / "images"
    fixtures.make_images(images, n=cfg.images, labels=True)
    steps, files = plan(cfg, ckpt, repo, images)
    result = DemoResult(config=cfg, steps=steps, files=files)
    for i, step in enumerate(steps, 1):
        echo(f"\n[demo {i}/{len(steps)}] {step.title}\n$ trtqat {' '.join(shlex.quote(a) for a in step.args)}")
        s0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "trtqat", *step.args], text=True)
        step.seconds, step.ok = time.perf_counter() - s0, proc.returncode == 0
        if not step.ok:
            raise BuildError(f"demo step {i} ('{step.title}') failed with exit code {proc.returncode}",
                             "See the output above")
    result.seconds = time.perf_counter() - t0
    return result
