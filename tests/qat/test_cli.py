"""CLI: exit codes for bad input, and the PTQ -> QAT -> eval flow end to end (tiny sizes)."""
import json
import shutil

import pytest
from click.testing import CliRunner

from trtqat.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("args,message", [
    (["--qat", "q.pt"], "--qat needs --train"),
    (["--train", "."], "--train is only used by QAT"),
    (["--resume"], "--resume needs --qat"),
    (["--val-ann", "a.json"], "--val-ann needs --val"),
    (["--val", ".", "--val-ann", "missing.json"], "annotation file not found"),
    (["--eval-ptq"], "need --val"),
    (["--qat", "q.pt", "--train", ".", "--epochs", "0"], "--epochs must be >= 1"),
    (["--qat", "nothing/q.pt", "--train", ".", "--resume"], "nothing to resume"),
])
def test_quantize_bad_input_exits_2(tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("quantize", "x.pt", "--calib", ".", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("args,message", [
    (["--val-ann", "a.json"], "--val-ann needs --val"),
    (["--plot", "s.svg"], "only .png"),
    (["--top-k", "-1"], "--top-k must be >= 0"),
])
def test_sensitive_bad_input_exits_2(tmp_path, args, message):
    res = run("sensitive", tmp_path / "x.pt", "--calib", tmp_path, *args)
    assert res.exit_code == 2 and message in res.output


def test_quantize_qat_eval_flow(yolo_checkpoint, calib_images, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov5")
    val = tmp_path / "val" / "images"
    shutil.copytree(calib_images, val)
    shutil.copytree(calib_images.parent / "labels", val.parent / "labels")
    res = run("quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", 64, "--batch-size", 4,
              "--calib-batches", 1, "--ptq", tmp_path / "ptq.pt", "--qat", tmp_path / "qat.pt", "--train",
              calib_images, "--epochs", 2, "--iters", 1, "--val", val, "--val-images", 4, "--conf-thres", 0.05,
              "--eval-origin", "--eval-ptq", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["family"] == "yolov5" and out["qat"]["best_epoch"] in (0, 1)
    assert [r["name"] for r in out["eval"]["rows"]] == ["float", "ptq", "qat"]
    # the best epoch is chosen on every 4th --val image (1 of 4), the table reports the 3 others
    assert out["eval"]["labelled"] and out["eval"]["images"] == 3
    assert out["qat"]["selection"] == {"source": "val-split", "images": 1, "metric": "mAP@0.5:0.95",
                                       "table_images": 3, "note": out["eval"]["epoch_selection"]}
    assert out["qat"]["lr_phases"] == {"warmup": 0, "peak": 2, "cooldown": 0}  # a 2-epoch run reaches --lr
    assert all(0.0 <= r["map"] <= 1.0 for r in out["eval"]["rows"])
    summary = json.loads((tmp_path / "qat.summary.json").read_text())
    assert summary["eval"] == out["eval"]
    for name in ("ptq.pt", "qat.pt", "qat.last.pt", "qat.state.pt"):
        assert (tmp_path / name).is_file()


@pytest.mark.slow
def test_sensitive_cli_writes_json_and_png(yolo_checkpoint, calib_images, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov5")
    res = run("sensitive", ckpt, "--repo", repo, "--calib", calib_images, "--size", 64, "--batch-size", 2,
              "--calib-batches", 1, "--val-images", 2, "--conf-thres", 0.2, "--top-k", 2,
              "--summary", tmp_path / "s.json", "--plot", tmp_path / "s.png")
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["metric"] == "SQNR dB" and 24 in [r["index"] for r in summary["rows"]] and summary["images"] == 2
    top = sorted(summary["rows"], key=lambda r: -r["impact"])[:2]
    assert summary["rows"][:2] == top
    assert summary["ignore_policy"] in res.output
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_quantize_qat_defaults_are_the_library_defaults():
    """``--help`` shows the QAT defaults, so the click options spell them out; they must be QatConfig's (the
    benchmarks and the Python API use QatConfig), or the CLI and the measured recipe drift apart."""
    import dataclasses

    from trtqat.cli.quantize import quantize
    from trtqat.quant.qat import QatConfig

    options = {p.name: p.default for p in quantize.params}
    fields = {f.name: f.default for f in dataclasses.fields(QatConfig)}
    for name in ("epochs", "iters", "lr", "supervision_stride", "clip_grad", "learn_amax", "amp", "seed"):
        assert options[name] == fields[name], name
