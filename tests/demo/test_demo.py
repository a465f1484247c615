"""``trtqat demo``: every command it runs is a valid command line, and (slow) the whole demo runs."""
import pytest
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.demo.pipeline import DemoConfig, plan


@pytest.mark.parametrize("qat", [True, False])
def test_every_step_parses_against_the_real_cli(tmp_path, qat):
    cfg = DemoConfig(out=tmp_path, qat=qat)
    steps, files = plan(cfg, tmp_path / "yolov7.pt", tmp_path / "repo", tmp_path / "images")
    names = [s.args[0] for s in steps]
    assert names == ["rules", "quantize", "quantize", "export", "export", "export", "lint", "lint", "build"]
    for step in steps:
        command = main.get_command(None, step.args[0])
        ctx = command.make_context(step.args[0], list(step.args[1:]), resilient_parsing=False)
        assert ctx.params  # parsed without "No such option"
    quantize = steps[2].args
    assert ("--qat" in quantize) == qat and "--no-rules" in steps[1].args
    assert files["onnx"].parent == tmp_path and "--dry-run" in steps[-1].args


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--family", "yolov5", "--out", str(tmp_path), "--size", "128",
                                       "--images", "8", "--no-qat"])
    assert result.exit_code == 0, result.output
    for name in ("ptq.pt", "ptq_norules.pt", "model.onnx", "model_norules.onnx", "model_fp16.onnx"):
        assert (tmp_path / name).is_file(), name
    # the steps run in child processes (their output goes to the terminal); the summary table is ours
    assert "TensorRT lint: trtqat placement" in result.output and "trtexec build command" in result.output


@pytest.mark.parametrize("args,message", [(["--size", "100"], "multiple of 32"), (["--images", "0"], "at least 1")])
def test_bad_demo_flags_exit_2_before_any_work(tmp_path, args, message):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "d").exists()
