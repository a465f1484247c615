"""One head policy for every producer: on an anchor-free (YOLOv8-style) head whose box convs feed the DFL,
``optimize`` makes float what ``rules/ultralytics.yaml`` keeps float on the torch side: the last conv of
every box and class branch and the DFL (recognised by ``family_detect.is_dfl``), also when the exporter
quantized every conv (ModelOpt). The DFL is decoding, not a learned layer: it neither hides the box convs
before it nor keeps its rounded weights (restored to exactly 0..R-1). ``ignore_detect_outputs: false`` in a
rules file turns the step off, DFL included.
"""
from __future__ import annotations

import numpy as np
import pytest
from foreign_styles import modelopt_onnx, modelopt_torch, tensor_amax
from optimize_helpers import noise_batches
from yolov8_graph import REG_MAX, yolov8_float

from trtqat.graph.float_head import dfl_convs, head_output_convs
from trtqat.graph.lint import lint_model
from trtqat.graph.normalize_qdq import normalize_qdq
from trtqat.graph.qdq import constant_value, dq_input_of, graph_from_model
from trtqat.optimize import OptimizeConfig, optimize_model

DFL = "/model.22/dfl/conv/Conv"


@pytest.fixture(scope="module")
def every_conv_quantized():
    """The YOLOv8-style graph in both ModelOpt styles with every conv quantized (the head's and the DFL's
    too), and the names of the convs Ultralytics keeps float."""
    model, head = yolov8_float()
    amax = tensor_amax(model, noise_batches())
    return {"modelopt-onnx": modelopt_onnx(model, amax), "modelopt-torch": modelopt_torch(model, amax)}, head


def test_box_convs_before_the_dfl_are_head_outputs(every_conv_quantized):
    models, head = every_conv_quantized
    graph = graph_from_model(models["modelopt-onnx"])
    normalize_qdq(graph)
    assert [c.name for c in dfl_convs(graph)] == [DFL]
    assert DFL in {c.name for c in head_output_convs(graph)}  # the DFL alone hides the box convs ...
    found = {c.name for c in head_output_convs(graph, frozenset({DFL}))}  # ... seen as decoding, it does not
    assert found == set(head) - {DFL}
    assert sum("cv2" in name for name in found) == 3 and sum("cv3" in name for name in found) == 3


@pytest.mark.parametrize("style", ["modelopt-onnx", "modelopt-torch"])
def test_head_outputs_and_dfl_made_float(every_conv_quantized, style):
    models, head = every_conv_quantized
    model = models[style]
    out, report = optimize_model(model, OptimizeConfig())
    assert (report.family, report.version) == ("ultralytics", "v8") and report.policy[-1].endswith("ultralytics.yaml")
    floated = {h.node: h.kind for h in report.head if h.floated}
    assert floated == {name: "dfl" if name == DFL else "output" for name in head}, report.head
    rows = report.to_dict()["head"]
    assert {r["node"] for r in rows if r["floated"]} == set(head) and {r["kind"] for r in rows} == {"dfl", "output"}
    nodes = {n.name: n for n in graph_from_model(out).nodes}
    for name in head:
        assert dq_input_of(nodes[name], 0) is None and dq_input_of(nodes[name], 1) is None, name
    np.testing.assert_array_equal(constant_value(nodes[DFL].inputs[1]).reshape(-1), np.arange(REG_MAX))
    assert lint_model(out).summary["standalone_qdq"] == 1  # floating them cost no standalone Q/DQ


def test_rules_file_turns_the_step_off(every_conv_quantized, tmp_path):
    models, head = every_conv_quantized
    rules = tmp_path / "keep_int8.yaml"
    rules.write_text("extends: ultralytics\nignore_detect_outputs: false\n")
    out, report = optimize_model(models["modelopt-onnx"], OptimizeConfig(rules_file=rules))
    assert report.head == []
    nodes = {n.name: n for n in graph_from_model(out).nodes}
    for name in head:  # as the exporter left them: INT8 input and weights
        assert dq_input_of(nodes[name], 0) is not None and dq_input_of(nodes[name], 1) is not None, name
