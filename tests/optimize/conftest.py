"""Fixtures for ``trtqat optimize`` tests: the foreign Q/DQ styles on trtqat's YOLOv5/YOLOv7 fixtures.

Per family, built once per session in child processes (no torch in the test process): the float FP32
export (``trtqat export --no-quant --float-dtype fp32``) and the pytorch-quantization default placement
(``trtqat quantize --no-rules`` + ``trtqat export --float-dtype fp32``: Q/DQ on every conv input, MaxPool
and Bottleneck Add, each quantizer with its own scale, detect convs float). The ModelOpt styles are
placed on the float export by :mod:`foreign_styles`, with activation ranges measured through onnxruntime.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimize_helpers import SIZE, noise_batches


def _trtqat(*args) -> None:
    proc = subprocess.run([sys.executable, "-m", "trtqat", *[str(a) for a in args]], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def family_onnx(yolo_checkpoint, calib_images, tmp_path_factory):
    """Factory ``family -> {"float": path, "pq": path, "amax": {tensor: max|x|}}``, cached."""
    root = tmp_path_factory.mktemp("optimize")
    cache: dict[str, dict] = {}

    def get(family: str) -> dict:
        if family not in cache:
            from foreign_styles import tensor_amax

            ckpt, repo = yolo_checkpoint(family)
            ptq = root / f"{family}_norules.pt"
            _trtqat("quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", SIZE, "--batch-size", 2,
                    "--calib-batches", 1, "--calib-method", "max", "--no-rules", "--ptq", ptq)
            out = {"float": root / f"{family}_float.onnx", "pq": root / f"{family}_pq.onnx"}
            _trtqat("export", ckpt, "--repo", repo, "--size", SIZE, "--no-quant", "--float-dtype", "fp32",
                    "--no-verify", "--save", out["float"])
            _trtqat("export", ptq, "--repo", repo, "--size", SIZE, "--float-dtype", "fp32", "--no-verify",
                    "--save", out["pq"])
            out["amax"] = tensor_amax(onnx.load(str(out["float"])), noise_batches())
            cache[family] = out
        return cache[family]

    return get
