"""Issue 26 item 4, the acceptance test: every detector output layout ``trtqat eval`` reads scores a perfect
oracle at mAP 1.0, names the layout it used, and a layout it cannot read or a wrong ``--layout`` is one line
and exit 2, never a silent 0.

The oracles (:mod:`layout_oracles`) hold the exact ground truth of 12 generated shapes images
(:mod:`trtqat.demo.shapes`, 8 classes) letterboxed to 160 px.
"""
import json
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from layout_oracles import ANCHORS, NC, input_pixel_truth, layout_array, oracle_onnx, ultralytics_metadata, yolov5_metadata

from trtqat.cli import main

SIZE = 160


@pytest.fixture(scope="module")
def oracle_set(tmp_path_factory):
    """12 held-out shapes images (YOLO labels and a COCO JSON) and their input-pixel ground truth."""
    from trtqat.data.images import find_images
    from trtqat.demo import shapes

    ds = shapes.write_dataset(tmp_path_factory.mktemp("oracle") / "shapes", train=0, val=12, seed=0)
    files = find_images(ds.val_images)
    return SimpleNamespace(val=ds.val_images, ann=ds.val_json, files=files, n=len(files),
                           truth=input_pixel_truth(files, SIZE))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluate_json(model, oracle_set, *extra):
    res = run("eval", model, "--val", oracle_set.val, "--size", SIZE, "--batch-size", oracle_set.n, "--json", *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["rows"][0]


def one_line_error(res, *fragments):
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1 and "Traceback" not in res.output
    for text in fragments:
        assert text in res.output, res.output


def metadata_for(layout, n):
    return {"yolov5": yolov5_metadata(), "ultralytics": ultralytics_metadata(SIZE, n, end2end=False),
            "end2end": ultralytics_metadata(SIZE, n, end2end=True)}[layout]


@pytest.mark.parametrize("layout", ["yolov5", "ultralytics", "end2end"])
@pytest.mark.parametrize("with_metadata", [True, False], ids=["metadata", "shape-only"])
def test_oracle_scores_one_in_every_layout(layout, with_metadata, oracle_set, tmp_path):
    model = oracle_onnx(tmp_path / f"{layout}.onnx", layout_array(oracle_set.truth, layout), SIZE,
                        metadata=metadata_for(layout, oracle_set.n) if with_metadata else None)
    row = evaluate_json(model, oracle_set)
    assert row["map"] == pytest.approx(1.0, abs=1e-6) and row["map50"] == pytest.approx(1.0, abs=1e-6)
    assert row["layout"] == layout and row["layout_from"] == ("metadata" if with_metadata else "shape")
    assert row["detections"] == sum(len(t) for t in oracle_set.truth)


@pytest.mark.parametrize("with_metadata", [True, False], ids=["metadata", "shape-only"])
def test_dynamic_ultralytics_oracle_is_read_at_the_first_batch(with_metadata, oracle_set, tmp_path):
    """Symbolic batch, height, width and anchor dims: the layout (without metadata) and nc come from the
    warm-up batch's actual output."""
    model = oracle_onnx(tmp_path / "dynamic.onnx", layout_array(oracle_set.truth, "ultralytics"), SIZE, dynamic=True,
                        metadata=ultralytics_metadata(SIZE, 1, end2end=False) if with_metadata else None)
    row = evaluate_json(model, oracle_set)
    assert row["map"] == pytest.approx(1.0, abs=1e-6)
    assert row["layout"] == "ultralytics" and row["batch"] == "dynamic"
    assert row["layout_from"] == ("metadata" if with_metadata else "shape")


def test_table_names_the_layout(oracle_set, tmp_path):
    model = oracle_onnx(tmp_path / "u.onnx", layout_array(oracle_set.truth, "ultralytics"), SIZE,
                        metadata=metadata_for("ultralytics", oracle_set.n))
    res = run("eval", model, "--val", oracle_set.val, "--size", SIZE, "--batch-size", oracle_set.n)
    assert res.exit_code == 0, res.output
    assert "ultralytics (metadata)" in res.stdout and "1.0000" in res.stdout


def test_coco_labels_and_the_end2end_class_count(oracle_set, tmp_path):
    """With COCO JSON labels and names in the metadata the end2end oracle scores 1.0 too (class i -> i-th
    category)."""
    model = oracle_onnx(tmp_path / "e2e.onnx", layout_array(oracle_set.truth, "end2end"), SIZE,
                        metadata=metadata_for("end2end", oracle_set.n))
    row = evaluate_json(model, oracle_set, "--val-ann", oracle_set.ann)
    assert row["map"] == pytest.approx(1.0, abs=1e-6) and row["layout"] == "end2end"


def test_ambiguous_shape_is_an_error_until_layout_says(oracle_set, tmp_path):
    """``[B, 32, 6]`` without metadata, with COCO labels (no class floor): a yolov5 output of 1 class or an
    end2end one. trtqat refuses to guess; ``--layout end2end`` reads it (the labels give the class count)."""
    model = oracle_onnx(tmp_path / "bare_e2e.onnx", layout_array(oracle_set.truth, "end2end"), SIZE)
    res = run("eval", model, "--val", oracle_set.val, "--val-ann", oracle_set.ann, "--size", SIZE,
              "--batch-size", oracle_set.n)
    one_line_error(res, f"has shape [{oracle_set.n}, 32, 6], which fits the yolov5 [B, N, 5+nc] and end2end "
                        "[B, K, 6] layouts alike", "Pass --layout yolov5 or --layout end2end.")
    row = evaluate_json(model, oracle_set, "--val-ann", oracle_set.ann, "--layout", "end2end")
    assert row["map"] == pytest.approx(1.0, abs=1e-6)
    assert row["layout"] == "end2end" and row["layout_from"] == "--layout"
    assert any("8 classes taken from the labels" in note for note in row["notes"])


@pytest.mark.parametrize("layout,forced,with_metadata,message", [
    # the shape contradicts the forced layout: found before anything runs
    ("ultralytics", "yolov5", True, "which is not the yolov5 layout [B, N, 5+nc] for nc=8 (layout from --layout). "
                                    "It fits ultralytics [B, 4+nc, N]: pass --layout ultralytics."),
    ("end2end", "yolov5", True, "which is not the yolov5 layout [B, N, 5+nc] for nc=8"),
    ("yolov5", "end2end", True, "which is not the end2end layout [B, K, 6]"),
    ("yolov5", "ultralytics", True, "which is not the ultralytics layout [B, 4+nc, N] for nc=8"),
    # no class count to check the shape against: the first batch's values rule the forced layout out
    ("end2end", "yolov5", False, "score values from 0 to 7, outside [0, 1], so it is not the yolov5 layout"),
    ("yolov5", "ultralytics", False, "outside [0, 1], so it is not the ultralytics layout [B, 4+nc, N]"),
    ("ultralytics", "yolov5", False, "outside [0, 1], so it is not the yolov5 layout [B, N, 5+nc]"),
])
def test_a_wrong_layout_is_one_line_not_a_silent_zero(layout, forced, with_metadata, message, oracle_set, tmp_path):
    model = oracle_onnx(tmp_path / "m.onnx", layout_array(oracle_set.truth, layout), SIZE,
                        metadata=metadata_for(layout, oracle_set.n) if with_metadata else None)
    res = run("eval", model, "--val", oracle_set.val, "--size", SIZE, "--batch-size", oracle_set.n, "--layout", forced)
    one_line_error(res, message)


def test_dynamic_shape_mismatch_is_found_at_the_first_batch(oracle_set, tmp_path):
    model = oracle_onnx(tmp_path / "dynamic.onnx", layout_array(oracle_set.truth, "ultralytics"), SIZE, dynamic=True,
                        metadata=ultralytics_metadata(SIZE, 1, end2end=False))
    res = run("eval", model, "--val", oracle_set.val, "--size", SIZE, "--batch-size", oracle_set.n, "--layout", "yolov5")
    one_line_error(res, f"has shape [{oracle_set.n}, 12, {ANCHORS}], which is not the yolov5 layout", "--layout ultralytics")


@pytest.mark.parametrize("shape,metadata,message", [
    ([12, 2095, 84], "names", "output0' has shape [12, 2095, 84], which is none of the detector layouts trtqat reads "
                               "(yolov5 [B, N, 5+nc], ultralytics [B, 4+nc, N], end2end [B, K, 6]) for nc=8."),
    ([12, 7, 5], None, "has shape [12, 7, 5], which is none of the detector layouts trtqat reads"),
    ([12, 20, 13, 2], None, "not a YOLO head (one decoded output: yolov5 [B, N, 5+nc], ultralytics"),
])
def test_unknown_shape_is_one_line(shape, metadata, message, oracle_set, tmp_path):
    import numpy as np

    meta = {"names": yolov5_metadata()["names"]} if metadata == "names" else None  # a class count, no layout
    model = oracle_onnx(tmp_path / "odd.onnx", np.zeros(shape, np.float32), SIZE, metadata=meta)
    res = run("eval", model, "--val", oracle_set.val, "--size", SIZE, "--batch-size", oracle_set.n)
    one_line_error(res, message)


def test_ultralytics_model_of_another_task_is_refused(oracle_set, tmp_path):
    meta = {**ultralytics_metadata(SIZE, 1, end2end=False), "task": "segment"}
    model = oracle_onnx(tmp_path / "seg.onnx", layout_array(oracle_set.truth, "ultralytics"), SIZE, metadata=meta)
    res = run("eval", model, "--val", oracle_set.val, "--size", SIZE, "--batch-size", oracle_set.n)
    one_line_error(res, "is an Ultralytics 'segment' model (metadata task); trtqat eval scores detection models")


def test_bad_layout_option_is_a_usage_error(oracle_set, tmp_path):
    res = run("eval", tmp_path / "any.onnx", "--val", oracle_set.val, "--layout", "yolov8")
    assert res.exit_code == 2 and "'yolov8' is not one of 'yolov5', 'ultralytics', 'end2end'" in res.output


class UltralyticsStyleOracle(torch.nn.Module):
    """A tiny module with an Ultralytics-shaped head attribute that returns the oracle ``[B, 4+nc, N]``."""

    def __init__(self, array):
        super().__init__()
        self.register_buffer("truth", torch.from_numpy(array))
        self.model = torch.nn.ModuleList([torch.nn.Identity()])
        self.model[-1].nc = NC
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.truth[:x.shape[0]] + 0 * x.sum(), None  # (decoded, extras), as detect heads return in eval


def test_torch_path_reads_the_ultralytics_layout(oracle_set):
    from trtqat.eval.evaluate import EvalConfig, eval_set, evaluate

    data = eval_set(oracle_set.val, EvalConfig(size=SIZE, batch_size=oracle_set.n), nc=NC)
    model = UltralyticsStyleOracle(layout_array(oracle_set.truth, "ultralytics"))
    assert evaluate(model, data, quantized=None, layout="ultralytics").map == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(Exception, match="not the yolov5 layout"):  # its family says nothing: yolov5, and refused
        evaluate(model, data, quantized=None)


def test_checkpoint_runner_takes_the_layout_from_the_family(oracle_set, tmp_path, monkeypatch):
    """The checkpoint path: ``detect_family(model).output_layout`` decides (here a stand-in family)."""
    import trtqat.models as models
    from trtqat.models.checkpoint import LoadedModel

    ckpt = tmp_path / "oracle.pt"
    torch.save({"note": "stand-in; load_checkpoint is replaced below"}, ckpt)
    module = UltralyticsStyleOracle(layout_array(oracle_set.truth, "ultralytics"))
    family = SimpleNamespace(name="yolov8", output_layout="ultralytics", detect_index=0, detect_name="model.0",
                             num_layers=1)
    monkeypatch.setattr(models, "load_checkpoint", lambda path, repo=None: LoadedModel(
        model=module, family=family, path=path, repo=repo, source_key=None))
    row = evaluate_json(ckpt, oracle_set)
    assert row["format"] == "checkpoint" and row["family"] == "yolov8"
    assert row["layout"] == "ultralytics" and row["layout_from"] == "model"
    assert row["map"] == pytest.approx(1.0, abs=1e-6)
    forced = evaluate_json(ckpt, oracle_set, "--layout", "ultralytics")
    assert forced["layout_from"] == "--layout" and forced["map"] == pytest.approx(1.0, abs=1e-6)
