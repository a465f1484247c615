"""``trtqat lint`` through click: JSON schema, table, --max-reformats gate, errors, --engine-layers."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from qdq_builders import resnet18

from trtqat.cli import main

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "trtexec"


@pytest.fixture(scope="module")
def residual_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lint") / "r18.onnx"
    onnx.save(resnet18("residual"), path)
    return path


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_json_schema(residual_onnx):
    r = _run("lint", residual_onnx, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert set(data) == {"summary", "layers", "standalone", "findings"}
    s = data["summary"]
    assert s["standalone_qdq"] == 3 and s["compute_layers"] == 23 and s["int8_share"] == pytest.approx(22 / 23, abs=1e-4)
    assert {"int8_share_macs", "precision_boundaries", "trt_version"} <= set(s)
    conv1 = data["layers"][0]
    assert conv1["name"] == "conv1" and conv1["precision"] == "INT8" and "conv1_relu" in conv1["fused"]
    assert {f["rule_id"] for f in data["findings"]} == {"LINT001", "LINT005", "LINT007"}
    assert set(data["findings"][0]) == {"rule_id", "severity", "nodes", "hazard", "mitigation", "help"}


def test_table_output(residual_onnx):
    r = _run("lint", residual_onnx)
    assert r.exit_code == 0
    assert "b8_skip_dq" in r.stdout and "LINT005" in r.stdout
    assert "3 standalone Q/DQ" in r.stderr


def test_max_reformats_gate(residual_onnx):
    assert _run("lint", residual_onnx, "--max-reformats", "3").exit_code == 0
    r = _run("lint", residual_onnx, "--max-reformats", "2", "--json")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("Error: 3 standalone Q/DQ predicted")
    assert json.loads(r.stdout)["summary"]["standalone_qdq"] == 3  # the report is still printed


def test_trt_version_flag(residual_onnx):
    r = _run("lint", residual_onnx, "--json", "--trt-version", "11")
    assert json.loads(r.stdout)["summary"]["trt_version"] == "11"
    assert _run("lint", residual_onnx, "--trt-version", "9").exit_code == 2


@pytest.mark.parametrize("content", [b"garbage", b""])
def test_malformed_onnx_one_line_exit_2(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    r = _run("lint", bad)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "bad.onnx" in lines[0]


def test_missing_file_exit_2(tmp_path):
    r = _run("lint", tmp_path / "nope.onnx")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_engine_layers(residual_onnx, tmp_path):
    fixture = FIXTURES / "trt8.4_a100_resnet18-qat-residual_best.graph.json"
    if not fixture.is_file():
        pytest.skip(f"fixture {fixture} absent")
    r = _run("lint", residual_onnx, "--json", "--engine-layers", fixture)
    assert r.exit_code == 0
    eng = json.loads(r.stdout)["engine"]
    assert eng["engine_standalone_qdq"] == 3 and eng["detailed"] is True
    assert eng["engine_unknown"] == ["DequantizeLinear_291", "QuantizeLinear_2", "QuantizeLinear_298"]
    r = _run("lint", residual_onnx, "--engine-layers", fixture)
    assert "engine comparison (3 standalone Q/DQ in the engine)" in r.stdout
    bad = tmp_path / "l.json"
    bad.write_text("{not json")
    r = _run("lint", residual_onnx, "--engine-layers", bad)
    assert r.exit_code == 2 and "not a JSON layer-info file" in r.stderr
