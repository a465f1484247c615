"""Accuracy on the trained shapes detectors: ``trtqat optimize`` keeps the mAP (``trtqat eval``, held-out val).

IN is each family's pytorch-quantization default placement (``trtqat quantize --no-rules``, MSE histogram
calibration on the 32 train images, FP32 export) and the ModelOpt torch-export style placed on the float
export (per-tensor max calibration on the same images, ModelOpt's default). Targets, on all 300
held-out images of the fixtures' val split: OUT within 0.3 mAP points of IN without ``--calib``, read as
"loses at most 0.3 points" (gains are not failures); at least IN's with ``--calib`` on the same images
(the command's default method, MSE), with the default ``--recalibrate groups`` and with ``all``. Groups-only
recalibration with IN's own method (max for the ModelOpt style) and the float model are measured and
printed, not asserted. The ModelOpt style quantizes the detect head's output convs, which ``optimize``
makes float as trtqat's rules do (on YOLOv7 that alone took IN's 51.94 to 55.36; float 55.42). Skipped
until the trained fixtures are committed (``make fixtures``).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from foreign_styles import modelopt_torch, tensor_amax

from trtqat.demo import trained

pytestmark = pytest.mark.slow  # PTQ, three exports and nine evaluations per family


def _trtqat(*args) -> str:
    proc = subprocess.run([sys.executable, "-m", "trtqat", *[str(a) for a in args]], capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def val300(tmp_path_factory):
    """The whole 300-image held-out split (64 images leave +-0.3 points of sampling noise) and 32 train images."""
    from trtqat.demo import shapes
    from trtqat.demo.train_fixtures import DATASET

    return shapes.write_dataset(tmp_path_factory.mktemp("shapes300"), train=32, val=DATASET["val"], seed=DATASET["seed"])


@pytest.fixture(scope="module")
def maps(trained_checkpoint, val300, tmp_path_factory):
    cache: dict[str, dict[str, float]] = {}

    def get(family: str) -> dict[str, float]:
        if family in cache:
            return cache[family]
        if not trained.trained_path(family).is_file():
            pytest.skip(f"trained {family} fixture not committed yet")
        ckpt, repo = trained_checkpoint(family)
        size = int(trained.trained_info(family).get("size", 320))
        d = tmp_path_factory.mktemp(f"map_{family}")
        calib = val300.train_images
        _trtqat("quantize", ckpt, "--repo", repo, "--calib", calib, "--size", size, "--no-rules", "--ptq", d / "pq.pt")
        _trtqat("export", d / "pq.pt", "--repo", repo, "--size", size, "--float-dtype", "fp32", "--no-verify",
                "--save", d / "pq.onnx")
        _trtqat("export", ckpt, "--repo", repo, "--size", size, "--no-quant", "--float-dtype", "fp32", "--no-verify",
                "--save", d / "float.onnx")
        from trtqat.data.images import image_stream

        float_model = onnx.load(str(d / "float.onnx"))
        batches = [b[i:i + 1] for b in image_stream(calib, size, 8) for i in range(len(b))]
        onnx.save(modelopt_torch(float_model, tensor_amax(float_model, batches)), str(d / "mt.onnx"))
        models = []
        for name in ("pq", "mt"):
            _trtqat("optimize", d / f"{name}.onnx", "--save", d / f"{name}_opt.onnx")
            _trtqat("optimize", d / f"{name}.onnx", "--save", d / f"{name}_calib.onnx", "--calib", calib)
            models += [d / f"{name}.onnx", d / f"{name}_opt.onnx", d / f"{name}_calib.onnx"]
            # every activation scale derived again (--recalibrate all), as the README advises for PTQ inputs
            _trtqat("optimize", d / f"{name}.onnx", "--save", d / f"{name}_calib_all.onnx", "--calib", calib,
                    "--recalibrate", "all")
            models.append(d / f"{name}_calib_all.onnx")
        # IN's own method for the ModelOpt style (max), groups only: measured for the README, not a target
        _trtqat("optimize", d / "mt.onnx", "--save", d / "mt_calib_max.onnx", "--calib", calib, "--method", "max")
        models += [d / "mt_calib_max.onnx", d / "float.onnx"]
        rows = json.loads(_trtqat("eval", *models, "--val", val300.val_images, "--val-ann", val300.val_json,
                                  "--size", size, "--json"))["rows"]
        cache[family] = {p.stem: r["map"] for p, r in zip(models, rows)}
        print(family, {k: round(100 * v, 2) for k, v in cache[family].items()})
        return cache[family]

    return get


CASES = [("yolov5", "pq"), ("yolov5", "mt"), ("yolov7", "pq"), ("yolov7", "mt")]


@pytest.mark.parametrize("family,style", CASES)
def test_optimize_keeps_the_map(maps, family, style):
    m = maps(family)
    assert np.isfinite(m[style]) and m[style] > 0.05  # the trained fixture detects something
    assert m[f"{style}_opt"] >= m[style] - 0.003, m  # loses at most 0.3 mAP points without --calib


@pytest.mark.parametrize("family,style", CASES)
def test_calib_reaches_at_least_the_input_map(maps, family, style):
    m = maps(family)
    assert m[f"{style}_calib"] >= m[style], m  # at least IN's with --calib
    assert m[f"{style}_calib_all"] >= m[style], m  # and with --calib --recalibrate all
