"""``trtqat demo``: every command it runs is a valid command line, and (slow) the whole demo runs."""
import pytest
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.demo.pipeline import DemoConfig, plan


@pytest.mark.parametrize("qat", [True, False])
def test_every_step_parses_against_the_real_cli(tmp_path, qat):
    cfg = DemoConfig(out=tmp_path, qat=qat)
    steps, files = plan(cfg, tmp_path / "yolov7.pt", tmp_path / "repo", tmp_path / "images", tmp_path / "val",
                        tmp_path / "val.json")
    names = [s.args[0] for s in steps]
    assert names == ["rules", "quantize", "quantize", "export", "export", "export", "lint", "lint", "build", "eval"]
    for step in steps:
        command = main.get_command(None, step.args[0])
        ctx = command.make_context(step.args[0], list(step.args[1:]), resilient_parsing=False)
        assert ctx.params  # parsed without "No such option"
    quantize = steps[2].args
    assert ("--qat" in quantize) == qat and "--no-rules" in steps[1].args
    assert files["onnx"].parent == tmp_path and "--dry-run" in steps[-2].args
    # every artifact is scored by one eval on the held-out images, the shipped ONNX included
    scored = steps[-1].args
    assert steps[-1].capture_json and str(files["onnx"]) in scored and str(files["ptq"]) in scored
    assert (str(tmp_path / "qat.pt") in scored) == qat and scored[scored.index("--val") + 1] == str(tmp_path / "val")


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--family", "yolov5", "--out", str(tmp_path), "--size", "128",
                                       "--images", "8", "--val-images", "8", "--no-qat"])
    assert result.exit_code == 0, result.output
    for name in ("ptq.pt", "ptq_norules.pt", "model.onnx", "model_norules.onnx", "model_fp16.onnx"):
        assert (tmp_path / name).is_file(), name
    # the steps run in child processes (their output goes to the terminal); the summary table is ours
    assert "TensorRT lint: trtqat placement" in result.output and "trtexec build command" in result.output
    verdict = [line for line in result.output.splitlines() if line.startswith("verdict:")]
    assert len(verdict) == 1 and "-> 1 (trtqat)" in verdict[0] and "onnx" in verdict[0]


def test_verdict_line_names_counts_and_every_map():
    from trtqat.cli.demo import verdict_line

    line = verdict_line({"standalone_qdq": {"baseline": 11, "trtqat": 1},
                         "map": {"float": 0.61, "ptq_baseline": 0.5, "ptq": 0.6, "qat": 0.605, "onnx": 0.604}})
    assert line == ("verdict: standalone Q/DQ predicted 11 (baseline) -> 1 (trtqat); "
                    "mAP@0.5:0.95 float 0.610 / ptq 0.600 / qat 0.605 / onnx 0.604")


@pytest.mark.parametrize("args,message", [(["--size", "100"], "multiple of 32"), (["--images", "0"], "at least 1"),
                                          (["--val-images", "0"], "at least 1")])
def test_bad_demo_flags_exit_2_before_any_work(tmp_path, args, message):
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), *args])
    assert result.exit_code == 2 and message in result.output and not (tmp_path / "d").exists()
