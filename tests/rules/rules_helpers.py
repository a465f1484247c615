"""Helpers shared by the rules tests (imported by path: test folders are not packages)."""
from __future__ import annotations

from click.testing import CliRunner

#: input size of these tests (stride 32)
SIZE = 64


def rules_cli(*args, code: int = 0):
    """``trtqat ARGS`` in-process; asserts the exit code."""
    from trtqat.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def checkpoint_form(family: str) -> str:
    """The checkpoint form users have: train.py's ``ema`` for YOLOv5/YOLOv7, ``YOLO.save()``'s ``model`` else."""
    return "ema" if family in ("yolov5", "yolov7") else "model"
