"""The ``trtqat`` command line: a lazy click group, one module per subcommand (Polygraphy style).

Why lazy: ``trtqat --help`` and the ONNX/trtexec commands must start fast and work without torch,
TensorRT or matplotlib, so each subcommand module is imported only when that command runs (or its help
is asked for), and heavy libraries are imported inside the command function.

Every command module does two things only: parse arguments and call the library. User errors arrive
as :class:`trtqat.errors.TrtqatError` and are converted here, once, into one ``Error:`` line with exit
code 2 (usage/input) or 1 (a failed build, run or check). ``--debug`` re-raises for a traceback.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from ..errors import TrtqatError

#: subcommand name -> "module:function"; the order is the order of ``trtqat --help``.
COMMANDS: dict[str, str] = {
    "demo": "trtqat.cli.demo:demo",
    "quantize": "trtqat.cli.quantize:quantize",
    "rules": "trtqat.cli.rules:rules",
    "export": "trtqat.cli.export:export",
    "lint": "trtqat.cli.lint:lint",
    "optimize": "trtqat.cli.optimize:optimize",
    "eval": "trtqat.cli.eval:eval_models",
    "sensitive": "trtqat.cli.sensitive:sensitive",
    "build": "trtqat.cli.build:build",
    "bench": "trtqat.cli.bench:bench",
    "report": "trtqat.cli.report:report",
    "compare": "trtqat.cli.compare:compare",
    "draw": "trtqat.cli.draw:draw",
}

_SHORT_HELP = {
    "demo": "Run the whole pipeline on a generated YOLO-shaped model and images.",
    "quantize": "PTQ (Histogram calibration) and optional QAT of a YOLOv5/YOLOv7 checkpoint.",
    "rules": "Show the scale-sharing groups and ignore policy for a checkpoint.",
    "export": "Export a PTQ/QAT checkpoint to Q/DQ ONNX (dynamic batch), verified in onnxruntime.",
    "lint": "Predict from the ONNX alone how TensorRT will process its Q/DQ nodes.",
    "optimize": "Make any Q/DQ ONNX TensorRT-friendly: normalise, tie scales, insert missing Q/DQ.",
    "eval": "Score checkpoints, ONNX exports and engines on labelled images (COCO mAP), one table.",
    "sensitive": "Rank layers by how much accuracy their quantization costs.",
    "build": "Build a TensorRT engine with trtexec (fp16 / ptq / qat), with layer info and profile.",
    "bench": "Benchmark an engine with trtexec and parse its performance summary.",
    "report": "Report an engine's layers: precision mix, reformats, unfused Q/DQ, top layers.",
    "compare": "Compare several engines side by side (qps, latency, reformats, INT8 share).",
    "draw": "Draw an engine graph (SVG/PNG) coloured by precision, reformats highlighted.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every command module (and with it torch): use the static table.
        rows = [(name, _SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TrtqatError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if getattr(exc, "report", True):  # torchrun: one rank reports a failure shared by all
                click.echo(f"Error: {exc.one_line()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted: outputs already written are complete; partial ones were removed.",
                       err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="trtqat")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """trtqat: INT8 YOLO on TensorRT at FP16 accuracy.

    \b
    Typical flow:
      trtqat quantize yolov7.pt --repo ~/yolov7 --calib images/ --ptq ptq.pt --qat qat.pt --train images/
      trtqat export qat.pt --repo ~/yolov7 --dynamic --save qat.onnx
      trtqat lint qat.onnx
      trtqat build qat.onnx --save qat.engine --mode qat
      trtqat bench --engine qat.engine

    Checkpoints (.pt) are Python pickles: loading one runs code from the file and imports classes of
    the upstream repo given by --repo. Only load checkpoints you trust.
    """
    from ..allocator import tune_allocator

    tune_allocator()  # CPU forwards stop page-faulting (trtqat/allocator.py; TRTQAT_MALLOC=default opts out)
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="[trtqat] %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("trtqat").setLevel(level)
