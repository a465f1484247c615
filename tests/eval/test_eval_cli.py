"""``trtqat eval`` end to end: one table for every format, and one-line errors (exit 2) for bad input."""
import json
import shutil
import sys

import pytest
from click.testing import CliRunner
from eval_sizes import SIZE

from trtqat._deps import available
from trtqat.cli import main


def run(*args):
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


def test_every_format_of_one_model_scores_alike(eval_models):
    m = eval_models
    res = run("eval", m.ckpt, m.onnx_dynamic, m.onnx_static1, m.onnx_raw, "--repo", m.repo, "--val", m.val,
              "--batch-size", 3, "--conf-thres", 0.05, "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["size"] == SIZE  # taken from the static export's fixed input, not the 640 default
    assert out["images"] == 8 and out["labels"] == "yolo" and out["objects"] > 0
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == [p.name for p in (m.ckpt, m.onnx_dynamic, m.onnx_static1, m.onnx_raw)]
    assert [(r["format"], r["head"], r["batch"]) for r in out["rows"]] == [
        ("checkpoint", "decoded", "dynamic"), ("onnx", "decoded", "dynamic"), ("onnx", "decoded", 1),
        ("onnx", "raw", "dynamic")]
    # every one of them writes the yolov5 layout: the checkpoint says so through its family, the exports
    # through trtqat's metadata
    assert [(r["layout"], r["layout_from"]) for r in out["rows"]] == [("yolov5", "model")] + [("yolov5", "metadata")] * 3
    assert all(r["kind"] == "float" and r["images"] == 8 and r["images_per_s"] > 0 for r in out["rows"])
    torch_dets = rows[m.ckpt.name]["detections"]
    assert torch_dets > 50
    for r in out["rows"]:  # the same boxes up to float rounding of a chaotic random-weight model
        assert abs(r["detections"] - torch_dets) <= 0.02 * torch_dets, (r["name"], r["detections"], torch_dets)
        assert r["map"] == pytest.approx(rows[m.ckpt.name]["map"], abs=0.01)


def test_table_on_screen(eval_models):
    res = run("eval", eval_models.onnx_dynamic, eval_models.onnx_static1, "--val", eval_models.val,
              "--val-images", 2)
    assert res.exit_code == 0, res.output
    for text in ("mAP@0.5:0.95", "mAP@0.5", "detections", "images/s", "dynamic.onnx", "static1.onnx",
                 "2 images", f"size {SIZE}"):
        assert text in res.stdout


def _unlabelled(tmp_path, eval_models):
    folder = tmp_path / "nolabels" / "images"
    shutil.copytree(eval_models.val, folder)
    return folder


@pytest.mark.parametrize("case,message", [
    ("missing", "model not found"),
    ("unknown", "unknown model format"),
    ("garbage_onnx", "is not a readable ONNX model"),
    ("wrong_size", f"has a fixed {SIZE}x{SIZE} input but --size is 320"),
    ("sizes_disagree", "different fixed input sizes"),
    ("raw_without_anchors", "no 'anchors'/'strides' entries"),
    ("no_labels", "no labels for the 8 images"),
    ("missing_ann", "annotation file not found"),
    ("batch_size", "--batch-size must be >= 1"),
    ("device", "--device 'gpu' is not a device"),
])
def test_bad_input_is_one_line_exit_2(case, message, tmp_path, eval_models):
    m = eval_models
    args = [m.onnx_dynamic, "--val", m.val]
    if case == "missing":
        args[0] = tmp_path / "nothing.onnx"
    elif case == "unknown":
        args[0] = tmp_path / "model.weights"
        args[0].write_text("weights")
    elif case == "garbage_onnx":
        args[0] = tmp_path / "broken.onnx"
        args[0].write_bytes(b"\x00\xffnot protobuf" * 10)
    elif case == "wrong_size":
        args = [m.onnx_static1, "--val", m.val, "--size", 320]
    elif case == "sizes_disagree":
        args = [m.onnx_static1, _fixed_size_copy(tmp_path, m.onnx_static1, 192), "--val", m.val]
    elif case == "raw_without_anchors":
        args[0] = m.onnx_raw_bare
    elif case == "no_labels":
        args = [m.onnx_dynamic, "--val", _unlabelled(tmp_path, m)]
    elif case == "missing_ann":
        args += ["--val-ann", tmp_path / "instances.json"]
    elif case == "batch_size":
        args += ["--batch-size", 0]
    elif case == "device":
        args += ["--device", "gpu"]
    res = run("eval", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1


def _fixed_size_copy(tmp_path, onnx_path, size):
    """The static ONNX with its declared input size changed (probing reads only the declaration)."""
    import onnx

    model = onnx.load(str(onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = size
    out = tmp_path / f"static{size}.onnx"
    onnx.save(model, str(out))
    return out


@pytest.mark.skipif(available("tensorrt"), reason="tensorrt is installed here")
def test_engine_without_tensorrt_is_one_line(tmp_path, eval_models):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine")
    res = run("eval", engine, "--val", eval_models.val)
    assert res.exit_code == 2
    assert "'tensorrt' is required for evaluating TensorRT engines" in res.output and "pip install" in res.output


def test_missing_pycocotools_fails_before_any_model_runs(monkeypatch, eval_models):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    res = run("eval", eval_models.ckpt, "--repo", eval_models.repo, "--val", eval_models.val)
    assert res.exit_code == 2 and "'pycocotools' is required for trtqat eval" in res.output
    assert "pip install 'trtqat[eval]'" in res.output


def test_quantize_checks_pycocotools_before_calibrating(monkeypatch, tmp_path, eval_models):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    ptq = tmp_path / "ptq.pt"
    res = run("quantize", eval_models.ckpt, "--repo", eval_models.repo, "--calib", eval_models.val, "--size", SIZE,
              "--ptq", ptq, "--val", eval_models.val)
    assert res.exit_code == 2, res.output
    assert "'pycocotools' is required for evaluating on --val" in res.output
    assert not ptq.exists() and "calibrating" not in res.output


def test_sensitive_checks_pycocotools_before_calibrating(monkeypatch, tmp_path, eval_models):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    res = run("sensitive", eval_models.ckpt, "--repo", eval_models.repo, "--calib", eval_models.val, "--size", SIZE,
              "--val", eval_models.val, "--summary", tmp_path / "s.json")
    assert res.exit_code == 2, res.output
    assert "'pycocotools' is required for ranking layers by mAP on a labelled --val" in res.output
    assert not (tmp_path / "s.json").exists() and "calibrating" not in res.output


def test_ptq_checkpoint_runs_fake_quant_like_its_qdq_onnx(eval_models, tmp_path):
    from trtqat.quant.export import ExportConfig, export_model
    from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq

    m = eval_models
    ptq = tmp_path / "ptq.pt"
    run_ptq(m.ckpt, repo=m.repo, out=ptq, qconf=QuantConfig(use_rules=False),
            calib=CalibConfig(calib_dir=m.val, size=SIZE, batch_size=4, calib_batches=1, method="max"))
    qdq = tmp_path / "ptq.onnx"
    export_model(ptq, m.repo, ExportConfig(size=SIZE, save=qdq, dynamic=True, float_dtype="fp32", verify=False))
    res = run("eval", ptq, qdq, m.ckpt, "--repo", m.repo, "--val", m.val, "--size", SIZE, "--conf-thres", 0.05,
              "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    assert [(r["format"], r["kind"]) for r in rows] == [("checkpoint", "ptq"), ("onnx", "ptq"), ("checkpoint", "float")]
    torch_q, onnx_q, float_ = (r["detections"] for r in rows)
    assert torch_q != float_  # fake-quant is on for a trtqat checkpoint
    assert abs(onnx_q - torch_q) <= 0.05 * torch_q, (onnx_q, torch_q)


def test_help_carries_the_pickle_warning():
    out = run("eval", "--help").output
    assert "Checkpoints are pickles" in out and "--val-ann" in out and "images/s" in out
