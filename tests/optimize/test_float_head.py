"""``optimize`` keeps the detect head's output convs float, as trtqat's rules do (``trtqat/graph/float_head.py``).

On the ModelOpt torch style of the YOLOv5 fixture (every conv quantized): the detect conv whose input
nothing else reads (model.24.m.2) becomes float with its original weights; the two whose input tensor a
quantized conv reads too (m.0, m.1: the fan-out of the yolov5 policy's TQ007) keep INT8 input and weights,
so no standalone Quantize appears. ``ignore_detect_outputs: false`` turns it off. The trained-model effect
is measured in ``test_trained_map.py`` (slow).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from foreign_styles import modelopt_torch
from yolov8_graph import yolov8_float

from trtqat.graph.float_head import head_output_convs
from trtqat.graph.lint import lint_model
from trtqat.graph.normalize_qdq import normalize_qdq
from trtqat.graph.qdq import constant_value, dq_input_of, graph_from_model
from trtqat.graph.strip_qdq import float_source
from trtqat.optimize import OptimizeConfig, optimize_model


@pytest.fixture(scope="module")
def yolov5_mt(family_onnx):
    d = family_onnx("yolov5")
    float_model = onnx.load(str(d["float"]))
    return float_model, modelopt_torch(float_model, d["amax"])


def _conv(graph: gs.Graph, suffix: str) -> gs.Node:
    return next(n for n in graph.nodes if n.op == "Conv" and n.name.endswith(suffix))


def test_head_outputs_found_from_the_structure(yolov5_mt):
    _, model = yolov5_mt
    graph = graph_from_model(model)
    normalize_qdq(graph)  # the torch-export style has a no-op Cast between each DQ and its conv
    names = sorted(n.name for n in head_output_convs(graph))
    assert names == [f"/model/model.24/m.{i}/Conv" for i in range(3)]


def test_unshared_head_conv_made_float_shared_ones_kept_int8(yolov5_mt):
    float_model, model = yolov5_mt
    out, report = optimize_model(model, OptimizeConfig())
    by_node = {h.node.rsplit("/", 2)[-2]: h for h in report.head}
    assert sorted(by_node) == ["m.0", "m.1", "m.2"]
    assert by_node["m.2"].floated and not by_node["m.0"].floated and not by_node["m.1"].floated
    assert "input shared with quantized" in by_node["m.0"].reason
    graph, ref = graph_from_model(out), graph_from_model(float_model)
    m2 = _conv(graph, "model.24/m.2/Conv")
    assert dq_input_of(m2, 0) is None and dq_input_of(m2, 1) is None
    assert np.array_equal(constant_value(m2.inputs[1]), constant_value(_conv(ref, "model.24/m.2/Conv").inputs[1]))
    for name in ("model.24/m.0/Conv", "model.24/m.1/Conv"):
        conv = _conv(graph, name)
        assert dq_input_of(conv, 0) is not None and dq_input_of(conv, 1) is not None
    assert lint_model(out).summary["standalone_qdq"] == 1  # floating cost no standalone Q/DQ
    assert report.to_dict()["head"][0].keys() == {"node", "tensor", "floated", "reason"}


def test_rules_can_keep_the_head_int8(yolov5_mt, tmp_path):
    _, model = yolov5_mt
    rules = tmp_path / "keep_head.yaml"
    rules.write_text("extends: yolov5\nignore_detect_outputs: false\nrules: []\n")
    out, report = optimize_model(model, OptimizeConfig(rules_file=rules))
    assert report.head == []
    assert dq_input_of(_conv(graph_from_model(out), "model.24/m.2/Conv"), 0) is not None


def test_nothing_to_do_where_the_exporter_kept_the_head_float():
    """The YOLOv8-style graph keeps its head output convs and DFL float already (as Ultralytics does)."""
    from foreign_styles import modelopt_onnx, tensor_amax
    from optimize_helpers import noise_batches

    model, keep = yolov8_float()
    _, report = optimize_model(modelopt_onnx(model, tensor_amax(model, noise_batches()), keep_float=keep),
                               OptimizeConfig())
    assert report.head == []


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float_source_dequantizes_int8_weights(dtype):
    """ModelOpt stores weights as int8 initializers behind a DQ: the float weight is (w - 0) * scale per channel."""
    w = np.arange(-12, 12, dtype=np.int8).reshape(4, 3, 2, 1)
    scale = np.array([0.5, 0.25, 2.0, 1.0], dtype)
    y = gs.Variable("w_dq", dtype=dtype)
    dq = gs.Node("DequantizeLinear", "dq", attrs={"axis": 0},
                 inputs=[gs.Constant("w_i8", w), gs.Constant("s", scale), gs.Constant("z", np.zeros(4, np.int8))],
                 outputs=[y])
    src = float_source(dq)
    expected = w.astype(np.float64) * scale.reshape(4, 1, 1, 1).astype(np.float64)
    assert src.values.dtype == dtype and np.array_equal(src.values, expected.astype(dtype))
