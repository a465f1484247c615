"""Pure command construction per TensorRT version (no trtexec is run here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtqat.errors import UsageError
from trtqat.trt.shapes import BatchRange
from trtqat.trt.trtexec import BenchSpec, BuildSpec, bench_command, build_command, build_notes, format_command
from trtqat.trt.versions import caps_for_version

V82, V86, V10, V11 = (caps_for_version(v) for v in [(8, 2, 3), (8, 6, 1), (10, 16, 1), (11, 0, 0)])
ENGINE = Path("out/m.engine")
EXPORTS = [
    "--profilingVerbosity=detailed",
    "--exportLayerInfo=out/m.engine.graph.json",
    "--exportProfile=out/m.engine.profile.json",
]


def spec(**kw) -> BuildSpec:
    base = {
        "onnx": Path("m.onnx"),
        "engine": ENGINE,
        "input_name": "images",
        "feature_dims": (3, 640, 640),
        "batch": BatchRange(1, 8, 16),
    }
    base.update(kw)
    return BuildSpec(**base)


SHAPES = [
    "--minShapes=images:1x3x640x640",
    "--optShapes=images:8x3x640x640",
    "--maxShapes=images:16x3x640x640",
    "--shapes=images:8x3x640x640",
]


def test_qat_on_86_and_10_uses_int8_fp16_and_mempool():
    for caps in (V86, V10):
        cmd = build_command(spec(workspace_mib=4096), caps, "/opt/trt/bin/trtexec")
        assert cmd == [
            "/opt/trt/bin/trtexec",
            "--onnx=m.onnx",
            f"--saveEngine={ENGINE}",
            "--int8",
            "--fp16",
            *SHAPES,
            "--memPoolSize=workspace:4096MiB",
            *EXPORTS,
            "--separateProfileRun",
        ]


def test_qat_on_11_is_strongly_typed_without_removed_or_noop_flags():
    cmd = build_command(spec(workspace_mib=4096), V11)
    assert cmd == [
        "trtexec",
        "--onnx=m.onnx",
        f"--saveEngine={ENGINE}",
        *SHAPES,
        "--memPoolSize=workspace:4096MiB",
        *EXPORTS,
    ]
    for flag in ("--int8", "--fp16", "--best", "--stronglyTyped", "--useCudaGraph", "--separateProfileRun"):
        assert not any(c.startswith(flag) for c in cmd)


def test_legacy_workspace_flag_before_84():
    cmd = build_command(spec(workspace_mib=1024), V82)
    assert "--workspace=1024" in cmd and not any(c.startswith("--memPoolSize") for c in cmd)


def test_fp16_mode_per_version():
    assert build_command(spec(mode="fp16"), V10)[3] == "--fp16"
    assert "--int8" not in build_command(spec(mode="fp16"), V10)
    cmd11 = build_command(spec(mode="fp16"), V11)
    assert "--fp16" not in cmd11
    assert any("strongly typed" in n for n in build_notes(spec(mode="fp16"), V11))


def test_ptq_with_calib_on_10_and_usage_error_on_11():
    cmd = build_command(spec(mode="ptq", calib=Path("yolo.cache")), V10)
    assert cmd[3:6] == ["--int8", "--fp16", "--calib=yolo.cache"]
    with pytest.raises(UsageError, match="implicit INT8 calibration, which TensorRT 11.0.0 removed"):
        build_command(spec(mode="ptq", calib=Path("yolo.cache")), V11)
    assert any("placeholder INT8 ranges" in n for n in build_notes(spec(mode="ptq"), V10))


def test_spec_validation():
    with pytest.raises(UsageError, match="--mode must be one of"):
        spec(mode="int4")
    with pytest.raises(UsageError, match="--calib is only used with --mode ptq"):
        spec(calib=Path("x.cache"))


def test_static_onnx_gets_no_shape_flags():
    cmd = build_command(spec(batch=None, input_name=None, feature_dims=()), V10)
    assert not any(c.startswith(("--minShapes", "--optShapes", "--maxShapes", "--shapes")) for c in cmd)


def test_batch_range_defaults_and_validation():
    assert BatchRange.from_options(None, None, None) == BatchRange(1, 1, 1)
    assert BatchRange.from_options(None, None, 16) == BatchRange(1, 16, 16)
    assert BatchRange.from_options(2, 4, None) == BatchRange(2, 4, 4)
    with pytest.raises(UsageError, match="min <= opt <= max"):
        BatchRange.from_options(8, 4, 16)
    with pytest.raises(UsageError, match="--max-batch must be >= 1"):
        BatchRange.from_options(None, None, -1)


def test_bench_command_per_version():
    bs = BenchSpec(ENGINE, "images", (3, 640, 640), 8, duration_s=10, warmup_ms=500)
    assert bench_command(bs, V10) == [
        "trtexec",
        f"--loadEngine={ENGINE}",
        "--shapes=images:8x3x640x640",
        "--duration=10",
        "--warmUp=500",
        "--useCudaGraph",
    ]
    assert bench_command(bs, V11) == [
        "trtexec",
        f"--loadEngine={ENGINE}",
        "--shapes=images:8x3x640x640",
        "--duration=10",
        "--warmUp=500",
    ]
    static = BenchSpec(ENGINE, None, (), 32, cuda_graph=False)
    assert bench_command(static, V86) == ["trtexec", f"--loadEngine={ENGINE}"]


def test_colon_in_input_name_and_shell_quoting():
    cmd = build_command(spec(input_name="x:0", feature_dims=(1, 28, 28), batch=BatchRange(1, 4, 16)), V82)
    assert "--minShapes=x:0:1x1x28x28" in cmd  # trtexec splits at the last ':' (fixture 8.2.3 log)
    assert format_command(["trtexec", "--onnx=my model.onnx"]) == "trtexec '--onnx=my model.onnx'"
