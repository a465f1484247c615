"""``trtqat demo``: every command it runs is a valid command line, every trained family (YOLOv8 included) is a
choice with its own inputs, and (slow) the whole demo runs."""
import pytest
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.demo import trained
from trtqat.demo.pipeline import DemoConfig, plan, prepare_inputs


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
@pytest.mark.parametrize("family", ["yolov5", "yolov8"])  # 75-190 s each on 2 shared cores
def test_demo_runs_end_to_end(tmp_path, family):
    result = CliRunner().invoke(main, ["demo", "--family", family, "--out", str(tmp_path), "--size", "128",
                                       "--images", "8", "--val-images", "8", "--no-qat"])
    assert result.exit_code == 0, result.output
    for name in ("ptq.pt", "ptq_norules.pt", "model.onnx", "model_norules.onnx", "model_fp16.onnx"):
        assert (tmp_path / name).is_file(), name
    # the steps run in child processes (their output goes to the terminal); the summary table is ours
    assert "TensorRT lint: trtqat placement" in result.output and "trtexec build command" in result.output
    verdict = [line for line in result.output.splitlines() if line.startswith("verdict:")]
    assert len(verdict) == 1 and "-> 1 (trtqat)" in verdict[0] and "onnx" in verdict[0]
    # every artifact scored above zero: a layout read wrongly scores 0 (the YOLOv8 output is [B, 4+nc, N])
    maps = dict(part.rsplit(" ", 1) for part in verdict[0].split("mAP@0.5:0.95 ")[1].split(" / "))
    assert set(maps) == {"float", "ptq", "onnx"} and all(float(v) > 0.05 for v in maps.values()), maps


def test_yolov8_inputs_are_the_scratch_ultralytics_package_and_its_checkpoint(tmp_path):
    """The YOLOv8 demo reads its checkpoint with ``--repo`` = the folder holding the scratch ``ultralytics``
    package (a real Ultralytics checkpoint needs none; the demo must not need the real package)."""
    cfg = DemoConfig(family="yolov8", out=tmp_path, images=1, val_images=1)
    ckpt, repo, data = prepare_inputs(cfg)
    assert ckpt == tmp_path / "yolov8_shapes.pt" and ckpt.read_bytes() == trained.trained_path("yolov8").read_bytes()
    assert (repo / "ultralytics" / "nn" / "tasks.py").is_file() and not (repo / "models").exists()
    steps, _ = plan(cfg, ckpt, repo, data.train_images, data.val_images, data.val_json)
    for step in steps:
        if step.args[0] in ("rules", "quantize", "export", "eval"):
            assert step.args[step.args.index("--repo") + 1] == str(repo), step.args


@pytest.mark.parametrize("given,runs", [("yolov8", "yolov8"), ("ultralytics", "yolov8"), ("yolov7", "yolov7")])
def test_family_choice_and_the_ultralytics_alias(tmp_path, monkeypatch, given, runs):
    from trtqat.demo import pipeline

    seen = []

    def fake_run_demo(cfg, echo):
        seen.append(cfg.family)
        raise pipeline.BuildError("stopped by the test", "nothing to fix")

    monkeypatch.setattr(pipeline, "run_demo", fake_run_demo)
    result = CliRunner().invoke(main, ["demo", "--family", given, "--out", str(tmp_path)])
    assert seen == [runs] and result.exit_code == 1 and "stopped by the test" in result.output


def test_every_trained_family_is_a_demo_choice():
    command = main.get_command(None, "demo")
    choices = next(p for p in command.params if p.name == "family").type.choices
    assert set(trained.TRAINED_FAMILIES) <= set(choices) and "ultralytics" in choices
    assert all(trained.trained_path(f).is_file() for f in trained.TRAINED_FAMILIES)


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
