"""``trtqat optimize`` on the command line: the report (table and --json), the written file, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from foreign_styles import modelopt_onnx, tensor_amax
from optimize_helpers import noise_batches
from yolov8_graph import yolov8_float

from trtqat.cli import main


def _run(*args):
    return CliRunner().invoke(main, ["optimize", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def qdq_and_float(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model, keep = yolov8_float()
    onnx.save(model, str(root / "float.onnx"))
    onnx.save(modelopt_onnx(model, tensor_amax(model, noise_batches()), keep_float=keep), str(root / "in.onnx"))
    return root / "in.onnx", root / "float.onnx"


def test_json_report_and_output_file(qdq_and_float, tmp_path):
    src, _ = qdq_and_float
    out = tmp_path / "out.onnx"
    res = _run(src, "--save", out, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert (data["family"], data["family_from"], data["version"]) == ("ultralytics", "structure", "v8")
    assert data["checker"] is True and not data["calibrated"]
    assert data["lint"]["before"]["standalone_qdq"] > 1 and data["lint"]["after"]["standalone_qdq"] == 1
    assert set(data["lint"]["after"]) == {"standalone_qdq", "int8_share", "int8_share_macs", "precision_boundaries"}
    assert data["outputs"]["output0"]["cosine"] > 0.999
    assert data["groups_changed"] == sum(g["changed"] for g in data["groups"]) > 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary file left


def test_table_and_calib(qdq_and_float, tmp_path, calib_images):
    src, _ = qdq_and_float
    res = _run(src, "--save", tmp_path / "out.onnx", "--calib", calib_images, "--method", "percentile")
    assert res.exit_code == 0, res.output
    for text in ("trtqat lint, before / after", "recalibrated: percentile", "outputs, OUT vs IN", "onnx.checker passed"):
        assert text in res.output
    assert "--recalibrate all" not in res.output
    res = _run(src, "--save", tmp_path / "all.onnx", "--calib", calib_images, "--recalibrate", "all", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["recalibrate"] == "all" and any(g["rules"] == ["recalibrate"] for g in data["groups"])
    assert data["recalibrated_alone"] == sum(g["rules"] == ["recalibrate"] for g in data["groups"]) > 0
    assert data["groups_changed"] == sum(g["changed"] for g in data["groups"] if g["rules"] != ["recalibrate"])
    res = _run(src, "--save", tmp_path / "all.onnx", "--calib", calib_images, "--recalibrate", "all")
    assert "other activation scales derived again (mse)" in res.output, res.output


def _zero_point_model(path):
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and not init.dims:
            init.CopyFrom(onnx.numpy_helper.from_array(np.int8(3), init.name))
            break
    return model


def test_one_line_errors(qdq_and_float, tmp_path):
    src, float_model = qdq_and_float
    out = tmp_path / "out.onnx"
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    refused = tmp_path / "zp.onnx"
    onnx.save(_zero_point_model(src), str(refused))
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [((tmp_path / "missing.onnx", "--save", out), "does not exist"),
             ((bad, "--save", out), "is not a readable ONNX model"),
             ((float_model, "--save", out), "has no QuantizeLinear/DequantizeLinear nodes"),
             ((refused, "--save", out), "activation scales are asymmetric, e.g. "),  # --calib would derive them
             ((src, "--save", out, "--calib", empty), "no image"),
             ((src, "--save", out, "--method", "bogus"), "Invalid value"),
             ((src, "--save", out, "--recalibrate", "all"), "--recalibrate all needs data")]
    for args, text in cases:
        res = _run(*args)
        assert res.exit_code == 2, (args, res.output)
        assert text.lower() in res.output.lower(), (args, res.output)
        assert "Traceback" not in res.output
        assert not out.exists()
