"""Option groups shared by several commands (Polygraphy's argument groups, as click decorators).

Each group adds the same flags, with the same names, defaults and help, wherever it is used:
``--repo`` on every command that may unpickle upstream classes, the calibration flags on ``quantize`` and
``sensitive``, ``--json`` on every report.
"""
from __future__ import annotations

from pathlib import Path

import click

PICKLE_WARNING = ("Checkpoints are pickles: loading one runs code from the file (torch.load with "
                  "weights_only=False). Only pass checkpoints you trust.")


def _compose(*decorators):
    def wrap(func):
        for dec in reversed(decorators):
            func = dec(func)
        return func
    return wrap


repo_option = click.option(
    "--repo", type=click.Path(file_okay=False, path_type=Path), default=None, envvar="TRTQAT_REPO",
    help="Your YOLOv5/YOLOv7 clone, needed to unpickle upstream classes; Ultralytics YOLOv8/YOLO11/YOLO26 "
         "checkpoints need none (the installed ultralytics package is used; a folder containing an ultralytics/ "
         "package is accepted) [env TRTQAT_REPO; default: the current folder if it is a YOLO repo].")

device_option = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")

size_option = click.option("--size", type=int, default=640, show_default=True,
                           help="Square input size (a multiple of the model stride).")

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")

profile_option = click.option(
    "--profile", type=click.Path(dir_okay=False), default=None,
    help="--exportProfile JSON for per-layer times (default: ENGINE.profile.json beside an engine).")

trtexec_options = _compose(
    click.option("--trtexec", "trtexec_path", default=None,
                 help="Path to trtexec (else $TRTQAT_TRTEXEC, else PATH, else /usr/src/tensorrt/bin)."),
    click.option("--trt-version", default=None,
                 help="TensorRT version to pick flags for (e.g. 10, 10.16, 8.6) instead of asking trtexec."),
    click.option("--trtexec-arg", "extra", multiple=True, help="Extra argument passed to trtexec (repeatable)."),
    click.option("--dry-run", is_flag=True, help="Print the exact trtexec command and exit."),
)

ignore_option = click.option(
    "--ignore-policy", "ignore", multiple=True, metavar="REGEX",
    help=r"Keep modules whose dotted name matches (re.match) in float; repeatable. Added to the family "
         r"default, which keeps the final detect convs in float (e.g. 'model\.105\.m\..*'; Ultralytics: the "
         r"last conv of each cv2/cv3 branch and the DFL). A pattern matching no module is warned about.")

rules_file_option = click.option("--rules", "rules_file", type=click.Path(path_type=Path), default=None,
                                 help="Policy file (YAML) instead of rules/<family>.yaml.")

rule_option = click.option(
    "--rule", "rule_overrides", multiple=True, metavar="ID=SETTING",
    help="Override one rule of the policy: ID=on|off, or a float-fanout mode (report, quantize-input); "
         "repeatable. E.g. --rule TQ007=report keeps YOLOv5's detect convs m.0/m.1 fully float.")

#: ``quantize``'s placement flags: the policy file, single-rule overrides, and the two baselines
placement_options = _compose(
    rules_file_option,
    rule_option,
    click.option("--no-share", is_flag=True,
                 help="No scale sharing: every quantizer keeps its own scale. The placement stays as the policy "
                      "says (TQ007 quantize-input still gives YOLOv5's m.0/m.1 an INT8 input, their own scale)."),
    click.option("--no-rules", is_flag=True,
                 help="Baseline, no trtqat placement at all: no scale sharing and no rule conversions (TQ007 "
                      "not applied: YOLOv5's m.0/m.1 stay float); only the ignore policy applies."),
)

calib_options = _compose(
    click.option("--calib", "calib_dir", type=click.Path(path_type=Path), default=None,
                 help="Folder of calibration images (jpg/png/bmp, searched recursively)."),
    size_option,
    click.option("--batch-size", type=int, default=8, show_default=True, help="Images per calibration batch."),
    click.option("--calib-batches", type=int, default=32, show_default=True,
                 help="Number of calibration batches (at most)."),
    click.option("--calib-method", type=click.Choice(["mse", "entropy", "percentile", "max"]), default="mse",
                 show_default=True, help="How activation amax is chosen from the histograms."),
    click.option("--percentile", type=float, default=99.99, show_default=True,
                 help="Percentile for --calib-method percentile."),
    device_option,
)


def calib_config(**kw):
    """Pack the ``calib_options`` flags into a :class:`trtqat.quant.ptq.CalibConfig`."""
    from ..quant.ptq import CalibConfig

    return CalibConfig(calib_dir=kw["calib_dir"], size=kw["size"], batch_size=kw["batch_size"],
                       calib_batches=kw["calib_batches"], method=kw["calib_method"], percentile=kw["percentile"],
                       device=kw["device"])


def checkpoint_argument(func):
    """The positional checkpoint argument (a path; existence is checked by the loader for one-line errors)."""
    return click.argument("ckpt", type=click.Path(path_type=Path))(func)


class ProgressBar:
    """A rich progress bar on stderr that appears only once work starts (``total`` called), so that
    an early one-line error is not preceded by an empty bar. Use as a context manager."""

    def __init__(self, description: str):
        self.description = description
        self._prog = None
        self._task = None

    def total(self, n: int | None) -> None:
        if self._prog is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from .output import console

            self._prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console(stderr=True))
            self._task = self._prog.add_task(self.description, total=n)
            self._prog.start()
        else:
            self._prog.update(self._task, total=n)

    def advance(self, n: int = 1) -> None:
        if self._prog is None:
            self.total(None)
        self._prog.advance(self._task, n)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self._prog is not None:
            self._prog.stop()


def progress_bar(description: str):
    """The progress factory commands pass to the library: (context manager, advance(n), set_total(n))."""
    bar = ProgressBar(description)
    return bar, bar.advance, bar.total
