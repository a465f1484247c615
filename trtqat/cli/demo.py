"""``trtqat demo``: run the whole pipeline on a generated YOLO-shaped model and images."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from .output import print_table, say


@click.command(name="demo")
@click.option("--family", type=click.Choice(["yolov5", "yolov7"]), default="yolov7", show_default=True,
              help="Which YOLO-shaped demo model to generate.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for everything the demo writes [default: a new temporary folder, kept].")
@click.option("--size", type=int, default=320, show_default=True, help="Input size.")
@click.option("--images", type=int, default=16, show_default=True, help="Number of generated images.")
@click.option("--qat/--no-qat", default=True, show_default=True, help="Include a short QAT fine-tune.")
def demo(family: str, out: Path | None, size: int, images: int, qat: bool) -> None:
    """Generate a small YOLO-shaped checkpoint (pickled like an upstream train.py checkpoint) and
    labelled images, then run rules, quantize (PTQ, QAT), export, lint and a dry-run engine build,
    printing each command as you would type it."""
    from ..demo.pipeline import DemoConfig, run_demo
    from ..errors import UsageError

    if size < 64 or size % 32:  # the demo models have stride 32
        raise UsageError(f"--size {size} must be a multiple of 32 (the demo model's stride), at least 64",
                         "Use e.g. --size 320")
    if images < 1:
        raise UsageError(f"--images must be at least 1, got {images}")
    out = out or Path(tempfile.mkdtemp(prefix="trtqat-demo-"))
    result = run_demo(DemoConfig(family=family, out=out, size=size, images=images, qat=qat), echo=say)
    print_table(f"trtqat demo ({family}, {size}px): done in {result.seconds:.0f} s", ["step", "seconds"],
                [(s.title, f"{s.seconds:.1f}") for s in result.steps])
    print_table("outputs", ["what", "path"], [(k, str(v)) for k, v in result.files.items() if Path(v).exists()])
