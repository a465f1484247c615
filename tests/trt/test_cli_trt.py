"""The build/bench/report/compare/draw commands through click: exit codes, one-line errors, files."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from trt_fixtures import CONVONLY_GRAPH, CONVONLY_PROFILE, MNIST8_LOG, MNIST8_NAMES_ONLY, RESIDUAL_GRAPH

from trtqat.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def first_error_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("Error:"))


def test_build_dry_run_prints_exact_command(dynamic_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    engine = tmp_path / "m.engine"
    r = invoke(
        "build",
        dynamic_onnx,
        "--save",
        engine,
        "--max-batch",
        16,
        "--opt-batch",
        8,
        "--trt-version",
        "10.16",
        "--dry-run",
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == (
        f"trtexec --onnx={dynamic_onnx} --saveEngine={engine} --int8 --fp16 "
        "--minShapes=images:1x3x32x32 --optShapes=images:8x3x32x32 "
        "--maxShapes=images:16x3x32x32 --shapes=images:8x3x32x32 "
        f"--profilingVerbosity=detailed --exportLayerInfo={engine}.graph.json "
        f"--exportProfile={engine}.profile.json --separateProfileRun"
    )
    assert not engine.exists()


def test_build_ptq_on_11_is_a_usage_error(dynamic_onnx, tmp_path):
    r = invoke("build", dynamic_onnx, "--mode", "ptq", "--trt-version", "11.0", "--dry-run")
    assert r.exit_code == 2
    assert first_error_line(r).startswith(
        "Error: --mode ptq needs implicit INT8 calibration, which TensorRT 11.0.0 removed."
    )


def test_build_trtexec_not_found(dynamic_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("TRTQAT_TRTEXEC", raising=False)
    r = invoke("build", dynamic_onnx)
    assert r.exit_code == 2
    line = first_error_line(r)
    assert (
        line.startswith("Error: trtexec not found on PATH.")
        and "--trtexec" in line
        and "TRTQAT_TRTEXEC" in line
    )


def test_build_with_fake_trtexec_writes_files(fake_trtexec, dynamic_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    r = invoke("build", dynamic_onnx, "--save", engine, "--max-batch", 4, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["trt_version"] == "10.16.1" and out["throughput_qps"] == 15374.3
    assert out["command"][0] == str(fake_trtexec.path)
    for suffix in ("", ".graph.json", ".profile.json", ".build.log", ".build.json"):
        assert (tmp_path / f"m.engine{suffix}").is_file()


def test_build_failure_exits_1_with_log(fake_trtexec, dynamic_onnx, tmp_path):
    fake_trtexec.set(fail=True)
    r = invoke("build", dynamic_onnx, "--save", tmp_path / "m.engine", "--trtexec", fake_trtexec.path)
    assert r.exit_code == 1
    assert (
        first_error_line(r)
        == f"Error: trtexec build failed with exit code 1; log: {tmp_path}/m.engine.build.log. "
        "Last lines of the log:"
    )
    assert "Error Code 4" in r.stderr


def test_bench_then_compare_and_report(fake_trtexec, dynamic_onnx, tmp_path, fixtures):
    a, b = tmp_path / "a.engine", tmp_path / "b.engine"
    assert invoke("build", dynamic_onnx, "--save", a, "--max-batch", 8).exit_code == 0
    fake_trtexec.set(version="8.6.1")
    assert (
        invoke("build", dynamic_onnx, "--save", b, "--max-batch", 8, "--trtexec", fake_trtexec.path).exit_code
        == 0
    )
    shutil.copyfile(fixtures / RESIDUAL_GRAPH, tmp_path / "b.engine.graph.json")
    (tmp_path / "b.engine.profile.json").unlink()
    r = invoke("bench", "--engine", a, "--batch", 8, "--json")
    assert r.exit_code == 0, r.output
    bench = json.loads(r.stdout)
    assert (bench["batch"], bench["throughput_qps"], bench["images_per_s"]) == (
        8,
        15374.3,
        pytest.approx(122994.4),
    )
    assert bench["summary"]["latency"]["p95"] == 0.0458984
    assert json.loads((tmp_path / "a.engine.bench.json").read_text())["batch"] == 8
    r = invoke("bench", "--engine", a)
    assert r.exit_code == 0 and "images/s" in r.stderr and "GPU Compute Time" in r.stdout

    r = invoke("report", a, "--json")
    assert r.exit_code == 0
    rep = json.loads(r.stdout)
    assert rep["reformat_counts"] == {"total": 12, "qdq": 10, "layout": 2, "other": 0}
    assert rep["total_time_ms"] == pytest.approx(1.09568)

    plot = tmp_path / "cmp.png"
    r = invoke("compare", a, b, "--json", "--plot", plot)
    assert r.exit_code == 0, r.output
    cmp = json.loads(r.stdout)
    assert [(e["label"], e["layers"], e["qdq_reformats"]) for e in cmp["engines"]] == [
        ("a.engine", 37, 10),
        ("b.engine", 26, 3),
    ]
    assert cmp["engines"][0]["qps"] == 15374.3 and cmp["engines"][1]["qps"] is None
    assert cmp["diff"]["reformats_only_b"] == ["DequantizeLinear_291", "QuantizeLinear_298"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = invoke("compare", a, b)
    assert r.exit_code == 0 and "Reformat layers present in one engine only" in r.stdout


def test_bench_parses_existing_log(fixtures):
    r = invoke("bench", "--log", fixtures / MNIST8_LOG, "--batch", 4, "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["trt_version"] == "8.2.3" and out["images_per_s"] == pytest.approx(24799.96)
    assert out["summary"]["end_to_end"]["median"] == 0.289062


def test_bench_errors(tmp_path):
    assert invoke("bench").exit_code == 2
    r = invoke("bench", "--engine", tmp_path / "nope.engine", "--trt-version", "10.0", "--dry-run")
    assert r.exit_code == 2 and first_error_line(r).startswith("Error: engine not found:")


def test_report_errors(fixtures, tmp_path):
    r = invoke("report", fixtures / MNIST8_NAMES_ONLY)
    assert r.exit_code == 2 and "--profilingVerbosity=detailed" in first_error_line(r)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    r = invoke("report", bad)
    assert r.exit_code == 2 and first_error_line(r).startswith(f"Error: {bad} is not valid JSON")
    r = invoke("report", tmp_path / "x.engine")
    assert r.exit_code == 2 and "no layer info next to" in first_error_line(r)


def test_report_tables(fixtures):
    r = invoke("report", fixtures / CONVONLY_GRAPH, "--profile", fixtures / CONVONLY_PROFILE, "--top", 2)
    assert r.exit_code == 0
    assert "37 layers" in r.stderr and "10 standalone Q/DQ (unfused), 2 layout reformats" in r.stderr
    assert "QuantizeLinear_250" in r.stdout and "Top 2 layers by time" in r.stdout


def test_report_trt82_scale_as_quantize(fixtures):
    graph = fixtures / "trt8.2_titanrtx_mobilenetv2-qat-convonly_best.graph.json"
    r = invoke("report", graph)
    assert r.exit_code == 0
    assert "85 layers" in r.stderr and "17 standalone Q/DQ (unfused), 12 layout reformats" in r.stderr
    assert "QuantizeLinear_98" in r.stdout and "QDQ (Scale)" in r.stdout
    data = json.loads(invoke("report", graph, "--json").stdout)
    assert data["reformat_counts"]["qdq"] == 17 and len(data["qdq_unfused"]) == 17
    assert {x["layer_type"] for x in data["reformats"] if x["origin"] == "QDQ"} == {"Scale"}


def test_compare_counts_scale_as_quantize(fixtures):
    a = fixtures / "trt8.2_titanrtx_mobilenetv2-qat-convonly_best.graph.json"
    b = fixtures / "trt8.4_titanrtx_mobilenetv2-qat-convonly_best.graph.json"
    data = json.loads(invoke("compare", a, b, "--json").stdout)
    assert [(e["qdq_reformats"], e["layout_reformats"]) for e in data["engines"]] == [(17, 12), (17, 1)]
    assert data["diff"]["reformats_only_b"] == []


def test_draw_svg_and_png(fixtures, tmp_path):
    svg = tmp_path / "e.svg"
    r = invoke("draw", fixtures / CONVONLY_GRAPH, "--profile", fixtures / CONVONLY_PROFILE, "-o", svg)
    assert r.exit_code == 0 and svg.read_text().startswith("<svg")
    assert "37 layers, 12 reformats" in r.stderr
    png = tmp_path / "e.png"
    assert invoke("draw", fixtures / RESIDUAL_GRAPH, "-o", png).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = invoke("draw", fixtures / RESIDUAL_GRAPH, "-o", tmp_path / "e.pdf")
    assert r.exit_code == 2 and "-o must end in .svg or .png" in first_error_line(r)


def test_compare_needs_something(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"x")
    r = invoke("compare", engine)
    assert r.exit_code == 2 and "nothing to compare for" in first_error_line(r)
