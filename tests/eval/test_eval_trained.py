"""``trtqat eval`` on the trained fixtures: a checkpoint and its exported float ONNX score the same mAP.

With random weights every mAP is 0 and agreement says nothing; the trained detectors find the shapes
(mAP well above 0), so a difference between the PyTorch and the onnxruntime path would show here.
"""
import json

import pytest
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.demo.trained import trained_info

#: the bound: 0.1 mAP points (0.001 as a fraction)
MAP_POINTS = 0.1


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("family", ["yolov5", pytest.param("yolov7", marks=pytest.mark.slow)])  # v7: ~2 CPU min
def test_trained_checkpoint_and_its_float_onnx_score_the_same(family, trained_checkpoint, shapes_val, tmp_path):
    ckpt, repo = trained_checkpoint(family)
    size = int(trained_info(family).get("size", 320))
    onnx = tmp_path / f"{family}_float.onnx"
    # the shipped default: FP16 float layers (measured: the FP32 export scores the same to 0.01 points too)
    res = run("export", ckpt, "--repo", repo, "--no-quant", "--size", size, "--dynamic", "--save", onnx)
    assert res.exit_code == 0, res.output
    res = run("eval", ckpt, onnx, "--repo", repo, "--val", shapes_val.val_images, "--val-ann", shapes_val.val_json,
              "--bootstrap", 200, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    torch_row, onnx_row = out["rows"]
    assert out["size"] == size and out["images"] == 64 and out["labels"] == "coco"
    assert (torch_row["format"], onnx_row["format"], onnx_row["kind"]) == ("checkpoint", "onnx", "float")
    assert torch_row["map"] > 0.2, torch_row  # a trained detector: the comparison means something
    assert abs(onnx_row["map"] - torch_row["map"]) * 100 <= MAP_POINTS, (torch_row["map"], onnx_row["map"])
    assert abs(onnx_row["map50"] - torch_row["map50"]) * 100 <= MAP_POINTS, (torch_row["map50"], onnx_row["map50"])
    # the bootstrap: each interval holds its model's mAP; the paired difference of two artifacts that agree to
    # 0.1 points is far narrower than either model's own interval (the images' difficulty cancels)
    boot = out["bootstrap"]
    assert (boot["samples"], boot["images"]) == (200, 64)
    for row in out["rows"]:
        i = boot["artifacts"][row["name"]]
        assert i["low"] <= i["value"] <= i["high"] and i["value"] == pytest.approx(100 * row["map"], abs=1e-3)
        assert i["high"] - i["low"] > 1.0  # 64 images: several points wide
    (name, diff), = boot["differences"].items()
    assert name == f"{onnx_row['name']} - {torch_row['name']}"
    own = min(i["high"] - i["low"] for i in boot["artifacts"].values())
    assert diff["high"] - diff["low"] < own / 5 and diff["low"] <= diff["value"] <= diff["high"]


def test_bootstrap_needs_enough_resamples(tmp_path):
    res = run("eval", tmp_path / "x.onnx", "--val", tmp_path, "--bootstrap", 10)
    assert res.exit_code == 2 and "--bootstrap must be 0 (off) or at least 100" in res.output
