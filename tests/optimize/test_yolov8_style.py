"""``optimize`` on a YOLOv8/YOLO11-style graph (C2f, SPPF, decoupled head with DFL) written from scratch, in
the Q/DQ styles Ultralytics users get from ModelOpt: after it lint predicts only the network-input Quantize,
the head's output convs and the DFL conv stay float, and the outputs stay within 1.5x the input model's own
relative error to the float model (and within 1 % of it in absolute terms: these weights are not chaotic)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from foreign_styles import modelopt_onnx, modelopt_torch, tensor_amax
from optimize_helpers import noise_batches
from yolov8_graph import yolov8_float

from trtqat.calib.ort_collect import run_outputs
from trtqat.graph.family_detect import family_from_graph
from trtqat.graph.lint import lint_model
from trtqat.graph.qdq import graph_from_model
from trtqat.optimize import OptimizeConfig, optimize_model


@pytest.fixture(scope="module")
def yolov8():
    model, keep_float = yolov8_float()
    return model, keep_float, tensor_amax(model, noise_batches())


def _styled(yolov8, style):
    model, keep, amax = yolov8
    if style == "modelopt-onnx":
        return modelopt_onnx(model, amax, keep_float=keep)
    if style == "modelopt-onnx-fp16":
        return modelopt_onnx(model, amax, keep_float=keep, fp16=True)
    return modelopt_torch(model, amax, keep_float=keep)


def _rel_error(model, reference, batch):
    out = run_outputs(model, batch)["output0"]
    return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("style", ["modelopt-onnx", "modelopt-onnx-fp16", "modelopt-torch"])
@pytest.mark.parametrize("calib", [None, "groups", "all"])  # no data, --calib, --calib --recalibrate all
def test_yolov8_style_only_input_quantize(yolov8, style, calib):
    model = _styled(yolov8, style)
    before = lint_model(model).summary["standalone_qdq"]
    assert before > 1
    out, report = optimize_model(model, OptimizeConfig(recalibrate=calib or "groups"),
                                 calib=noise_batches() if calib else None)
    onnx.checker.check_model(out)
    assert (report.family, report.version) == ("ultralytics", "v8") and report.policy[-1].endswith("ultralytics.yaml")
    assert report.recalibrate == (calib or "") and report.head == []  # the exporter kept the head float
    assert (calib == "all") == any(g.rules == ("recalibrate",) for g in report.groups)
    assert lint_model(out).summary["standalone_qdq"] == 1
    split_inputs = [i for i in report.inserted if i.kind == "align-input"]
    assert len(split_inputs) == 8 and {i.rule for i in split_inputs} == {"TQ004"}  # one per C2f Split
    graph = graph_from_model(out)
    for name in yolov8[1]:  # head output convs and DFL: no Q/DQ on their input or weights
        conv = next(n for n in graph.nodes if n.name == name)
        assert all(not t.inputs or t.inputs[0].op != "DequantizeLinear" for t in conv.inputs), name
    batch = np.concatenate(noise_batches())
    reference = run_outputs(yolov8[0], batch)["output0"]
    err_in, err_out = _rel_error(model, reference, batch), _rel_error(out, reference, batch)
    assert err_out <= max(1.5 * err_in, 1e-3) and err_out < 0.01, (err_in, err_out)


def test_family_detection(yolov8):
    assert family_from_graph(graph_from_model(yolov8[0])) == "ultralytics"


def test_family_alias_still_accepted(yolov8):
    """``OptimizeConfig(family="yolov8")``, the anchor-free family's former name, is read as ultralytics v8."""
    model, keep, amax = yolov8
    _, report = optimize_model(modelopt_onnx(model, amax, keep_float=keep), OptimizeConfig(family="yolov8"))
    assert (report.family, report.version, report.family_from) == ("ultralytics", "v8", "--family")
    assert report.policy[-1].endswith("ultralytics.yaml")
