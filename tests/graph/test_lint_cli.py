"""``trtqat lint`` through click: JSON schema, table, --max-reformats gate, errors, --engine-layers."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from qdq_builders import resnet18

from trtqat.cli import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"  # tests/fixtures/trtexec (see SOURCES.md there)


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
    assert s["standalone_by_rule"] == {"LINT001": 1, "LINT005": 1, "LINT007": 1} and s["refused"] is False
    conv1 = data["layers"][0]
    assert conv1["name"] == "conv1" and conv1["precision"] == "INT8" and "conv1_relu" in conv1["fused"]
    assert {f["rule_id"] for f in data["findings"]} == {"LINT001", "LINT005", "LINT007"}
    assert set(data["findings"][0]) == {"rule_id", "severity", "nodes", "hazard", "mitigation", "help"}


def test_table_output_leads_with_the_verdict(residual_onnx):
    r = _run("lint", residual_onnx)
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("lint (TensorRT 10): 2 avoidable standalone Q/DQ + 1 network-input Quantize; "
                               "INT8 22/23 compute layers (96%, 100% of MACs); 2 precision boundaries")
    assert lines[1].startswith("standalone Q/DQ by reason")
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in lines if ln.startswith("│ LINT")}
    assert rows == {"LINT001": "1", "LINT005": "1", "LINT007": "1"}
    assert "b8_skip_dq" in r.stdout
    assert "compute layers running in float" not in r.stdout and "why float" not in r.stdout  # --verbose only


def test_verbose_and_all_layers_add_per_node_tables(residual_onnx):
    r = _run("lint", residual_onnx, "--verbose")
    assert "standalone Q/DQ (Reformat layers)" in r.stdout and "compute layers running in float" in r.stdout
    assert "the residual Add fused into b8_conv2 must read float" in r.stdout
    r = _run("lint", residual_onnx, "--all-layers")
    assert "compute layers" in r.stdout and "│ b4_conv1 " in r.stdout   # INT8 layers listed too


def test_long_network_prints_grouped_counts_not_one_row_per_node(tmp_path):
    from qdq_builders import mobilenetv2
    path = tmp_path / "mbv2.onnx"
    onnx.save(mobilenetv2("convonly"), path)
    r = _run("lint", path)
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].startswith("lint (TensorRT 10): 16 avoidable standalone Q/DQ + 1 network-input Quantize")
    counts = {ln.split("│")[1].strip(): int(ln.split("│")[2]) for ln in lines if ln.startswith("│ LINT")}
    assert counts == {"LINT001": 1, "LINT003": 10, "LINT004": 5, "LINT007": 1}
    assert "(+7 more)" in r.stdout and len(lines) < 20
    assert len(_run("lint", path, "-v").stdout.splitlines()) > 40


def test_refused_model_exits_1_with_parse_findings(tmp_path):
    from test_parser_checks import _fp16_scale_model
    path = tmp_path / "bad_types.onnx"
    onnx.save(_fp16_scale_model(), path)
    r = _run("lint", path)
    assert r.exit_code == 1
    assert r.stdout.splitlines()[0] == ("lint (TensorRT 10): no prediction: the TensorRT parser would reject "
                                        "the model (PARSE010, PARSE011)")
    assert "PARSE010" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: TensorRT's parser would reject")
    data = json.loads(_run("lint", path, "--json").stdout)
    assert data["summary"]["refused"] is True and data["summary"]["standalone_qdq"] is None


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


def test_engine_layers_trt82_scale_as_quantize(tmp_path):
    from qdq_builders import mobilenetv2
    fixture = FIXTURES / "trt8.2_titanrtx_mobilenetv2-qat-convonly_best.graph.json"
    path = tmp_path / "mbv2.onnx"
    onnx.save(mobilenetv2("convonly"), path)
    eng = json.loads(_run("lint", path, "--json", "--engine-layers", fixture).stdout)["engine"]
    # 17 Scale-as-Quantize layers, named after the original export's nodes (not ours: other exporter).
    assert eng["engine_standalone_qdq"] == 17 and len(eng["engine_unknown"]) == 17
    assert "QuantizeLinear_98" in eng["engine_unknown"] and eng["agree"] == []
