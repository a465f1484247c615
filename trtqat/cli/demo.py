"""``trtqat demo``: run the whole pipeline on a generated YOLO-shaped model and images."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..demo.trained import TRAINED_FAMILIES
from .output import print_table, say

#: other names ``--family`` accepts: the family name trtqat prints for Ultralytics checkpoints
ALIASES = {"ultralytics": "yolov8"}


@click.command(name="demo")
@click.option("--family", type=click.Choice([*TRAINED_FAMILIES, *ALIASES]), default="yolov5", show_default=True,
              help="Which trained reference detector to run the pipeline on: YOLOv5-, YOLOv7- or Ultralytics "
                   "YOLOv8-shaped ('ultralytics' is the same as yolov8).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for everything the demo writes [default: a new temporary folder, kept].")
@click.option("--size", type=int, default=320, show_default=True, help="Input size.")
@click.option("--images", type=int, default=32, show_default=True,
              help="Generated calibration/QAT images (training split).")
@click.option("--val-images", type=int, default=64, show_default=True,
              help="Generated held-out images every artifact is scored on.")
@click.option("--qat/--no-qat", default=True, show_default=True, help="Include a short QAT fine-tune.")
def demo(family: str, out: Path | None, size: int, images: int, val_images: int, qat: bool) -> None:
    """Run rules, quantize (PTQ, QAT), export, lint, a dry-run engine build and eval on the committed trained
    reference detector (pickled like an upstream train.py checkpoint, the YOLOv8-shaped one as YOLO.save()
    writes it) and generated shapes images,
    printing each command as you would type it, then the accuracy of every artifact and a verdict."""
    from ..demo.pipeline import DemoConfig, run_demo
    from ..errors import UsageError

    if size < 64 or size % 32:  # the demo models have stride 32
        raise UsageError(f"--size {size} must be a multiple of 32 (the demo model's stride), at least 64",
                         "Use e.g. --size 320")
    if images < 1 or val_images < 1:
        raise UsageError(f"--images and --val-images must be at least 1, got {images} and {val_images}")
    family = ALIASES.get(family, family)
    out = out or Path(tempfile.mkdtemp(prefix="trtqat-demo-"))
    result = run_demo(DemoConfig(family=family, out=out, size=size, images=images, val_images=val_images, qat=qat),
                      echo=say)
    print_table(f"trtqat demo ({family}, {size}px): done in {result.seconds:.0f} s", ["step", "seconds"],
                [(s.title, f"{s.seconds:.1f}") for s in result.steps])
    print_table("outputs", ["what", "path"], [(k, str(v)) for k, v in result.files.items() if Path(v).exists()])
    rows = result.steps[-1].result["rows"]
    print_table(f"accuracy on {result.verdict['images']} held-out images", ["artifact", "mAP@0.5:0.95", "mAP@0.5",
                                                                           "detections"],
                [(r["name"], f"{r['map']:.4f}", f"{r['map50']:.4f}", r["detections"]) for r in rows])
    say(verdict_line(result.verdict))


def verdict_line(v: dict) -> str:
    """One line: what TensorRT is predicted to leave standalone, and the mAP of each artifact."""
    q = v["standalone_qdq"]
    maps = " / ".join(f"{k} {v['map'][k]:.3f}" for k in ("float", "ptq", "qat", "onnx") if v["map"].get(k) is not None)
    return (f"verdict: standalone Q/DQ predicted {q['baseline']} (baseline) -> {q['trtqat']} (trtqat); "
            f"mAP@0.5:0.95 {maps}")
