"""The trtexec runner against the fake trtexec: lookup, version detection, logs, failures."""

from __future__ import annotations

import json

import pytest

from trtqat.errors import BuildError, InputError, UsageError
from trtqat.trt.engine import bench_engine, bench_spec_for, build_engine, build_spec_from_onnx, read_bench
from trtqat.trt.trtexec import ENV_VAR, EngineFiles, detect_caps, find_trtexec, resolve_trtexec, run


def test_find_trtexec_order(fake_trtexec, tmp_path, monkeypatch):
    assert find_trtexec() == str(fake_trtexec.path)
    assert find_trtexec(env={ENV_VAR: str(fake_trtexec.path), "PATH": ""}) == str(fake_trtexec.path)
    with pytest.raises(InputError) as err:
        find_trtexec(str(tmp_path / "missing"))
    assert "--trtexec" in err.value.message and ENV_VAR in err.value.hint


def test_not_found_names_flag_and_env(tmp_path):
    with pytest.raises(InputError) as err:
        find_trtexec(env={"PATH": str(tmp_path)})
    assert err.value.exit_code == 2
    assert err.value.message == "trtexec not found on PATH"
    assert "--trtexec" in err.value.hint and "TRTQAT_TRTEXEC" in err.value.hint


@pytest.mark.parametrize("version", ["8.6.1", "10.16.1", "11.0.0", "8.2.3"])
def test_detect_caps_from_banner(fake_trtexec, version):
    fake_trtexec.set(version=version)
    caps = detect_caps(str(fake_trtexec.path))
    assert caps.label == version
    assert fake_trtexec.calls()[0] == ["--version"]


def test_dry_run_without_trtexec_needs_trt_version(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(ENV_VAR, raising=False)
    path, caps = resolve_trtexec(None, "11.0", dry_run=True)
    assert (path, caps.label) == ("trtexec", "11.0.0")
    with pytest.raises(InputError, match="trtexec not found"):
        resolve_trtexec(None, "11.0", dry_run=False)


@pytest.mark.parametrize("version", ["8.6.1", "10.16.1", "11.0.0"])
def test_build_and_bench_on_each_version(fake_trtexec, dynamic_onnx, tmp_path, version):
    """The fake rejects flags the version lacks, so each build passing proves the flag table."""
    fake_trtexec.set(version=version)
    engine = tmp_path / "out" / "model.engine"
    spec = build_spec_from_onnx(dynamic_onnx, engine, mode="qat", max_batch=8, workspace_mib=2048)
    exe, caps = resolve_trtexec()
    result = build_engine(spec, caps, exe)
    files = EngineFiles(engine)
    assert engine.read_bytes() == b"fake engine"
    for path in (files.graph_json, files.profile_json, files.build_log, files.build_json):
        assert path.is_file(), path
    assert result.summary.throughput_qps == 15374.3
    meta = json.loads(files.build_json.read_text())
    assert meta["batch"] == {"min": 1, "opt": 8, "max": 8} and meta["input"] == {
        "name": "images",
        "feature_dims": [3, 32, 32],
    }
    argv = fake_trtexec.runs()[0]
    assert "--maxShapes=images:8x3x32x32" in argv and ("--int8" in argv) == (version != "11.0.0")
    bench = bench_engine(bench_spec_for(engine, batch=4, duration_s=2), caps, exe)
    assert bench.batch == 4 and bench.images_per_s == pytest.approx(4 * 15374.3)
    assert "--shapes=images:4x3x32x32" in fake_trtexec.runs()[1]
    assert read_bench(engine) == bench


def test_failed_build_raises_with_log_path_and_error_lines(fake_trtexec, dynamic_onnx, tmp_path):
    fake_trtexec.set(fail=True)
    engine = tmp_path / "model.engine"
    spec = build_spec_from_onnx(dynamic_onnx, engine)
    exe, caps = resolve_trtexec()
    with pytest.raises(BuildError) as err:
        build_engine(spec, caps, exe)
    log = EngineFiles(engine).build_log
    assert err.value.message == f"trtexec build failed with exit code 1; log: {log}"
    assert "Error Code 4: Internal Error" in err.value.hint  # stderr was merged into the log
    assert log.is_file() and "&&&& FAILED" in log.read_text()
    assert not EngineFiles(engine).build_json.exists()


def test_run_unknown_flag_on_11_fails(fake_trtexec, tmp_path):
    fake_trtexec.set(version="11.0.0")
    with pytest.raises(BuildError) as err:
        run([str(fake_trtexec.path), "--onnx=x.onnx", "--int8"], tmp_path / "x.log")
    assert "Unknown option: --int8" in err.value.hint


def test_static_onnx_rejects_other_batches(static_onnx, tmp_path):
    spec = build_spec_from_onnx(static_onnx, tmp_path / "s.engine")
    assert spec.batch is None and spec.static_batch == 1
    with pytest.raises(UsageError, match="fixed batch of 1; cannot build for batch 8"):
        build_spec_from_onnx(static_onnx, tmp_path / "s.engine", max_batch=8)


def test_bench_batch_outside_built_range(fake_trtexec, dynamic_onnx, tmp_path):
    engine = tmp_path / "m.engine"
    exe, caps = resolve_trtexec()
    build_engine(build_spec_from_onnx(dynamic_onnx, engine, max_batch=4), caps, exe)
    with pytest.raises(UsageError, match="--batch 16 is outside the engine's built range 1..4"):
        bench_spec_for(engine, batch=16)
    assert bench_spec_for(engine).batch == 4


def test_bench_engine_not_built_by_trtqat(fake_trtexec, tmp_path):
    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"x")
    spec = bench_spec_for(engine)
    assert (spec.batch, spec.input_name) == (None, None)
    exe, caps = resolve_trtexec()
    result = bench_engine(spec, caps, exe)
    assert result.batch == 1 and fake_trtexec.runs()[0] == [f"--loadEngine={engine}", "--useCudaGraph"]
    with pytest.raises(UsageError, match="--batch needs .*foreign.engine.build.json"):
        bench_spec_for(engine, batch=4)
