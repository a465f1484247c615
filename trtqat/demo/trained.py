"""The committed trained reference detectors: where they are and how to get one with its fake repo.

Why trained fixtures: quantization error only shows on a model that has learnt something. Random-weight
fixtures (``trtqat.demo.fixtures.make_checkpoint``) are for topology and speed; accuracy claims (the demo's
mAP table, ``benchmarks/accuracy.py``, the accuracy tests) use these. Each is trtqat's scratch YOLOv5-,
YOLOv7- or Ultralytics YOLOv8-shaped model trained on the generated shapes dataset
(:mod:`trtqat.demo.shapes`) by ``make fixtures`` (:mod:`trtqat.demo.train_fixtures`), saved fp16 as upstream
saves it, pickled inside the throwaway ``models`` package of the fake repo (the scratch ``ultralytics``
package for YOLOv8). ``trtqat/demo/trained/README.md`` says how each was made and its float mAP.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from . import fixtures

TRAINED_DIR = Path(__file__).resolve().parent / "trained"
#: the families with a committed trained checkpoint (what ``trtqat demo`` and the accuracy benchmark run on)
TRAINED_FAMILIES = ("yolov5", "yolov7", "yolov8")


def trained_path(family: str) -> Path:
    """``trtqat/demo/trained/<family>_shapes.pt`` (may not exist before ``make fixtures``)."""
    return TRAINED_DIR / f"{fixtures._check_family(family, fixtures.ALL_FAMILIES)}_shapes.pt"


def trained_info(family: str) -> dict:
    """The training record written beside the checkpoint (size, width, epochs, float mAP ...)."""
    path = trained_path(family).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else {}


def trained_checkpoint(family: str, repo_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The trained ``family`` checkpoint and a fake repo written to ``repo_dir`` to unpickle it with.

    Raises:
        InputError: the checkpoint is missing (run ``make fixtures``).
    """
    ckpt = trained_path(family)
    if not ckpt.is_file():
        raise InputError(f"trained {family} fixture not found at {ckpt}", "Run 'make fixtures' to train it")
    repo = Path(repo_dir)
    if not ((repo / "models" / "yolo.py").is_file() or (repo / "ultralytics" / "nn" / "tasks.py").is_file()):
        fixtures.write_repo(family, repo)
    return ckpt, repo
