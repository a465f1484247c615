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
    assert report.to_dict()["head"][0].keys() == {"node", "kind", "tensor", "floated", "reason"}


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


def _qdq(graph: gs.Graph, x: gs.Tensor, name: str, scale: float = 0.05) -> gs.Variable:
    s, z = gs.Constant(f"{name}_s", np.array(scale, np.float32)), gs.Constant(f"{name}_z", np.array(0, np.int8))
    q, y = gs.Variable(f"{name}_q", dtype=np.int8), gs.Variable(f"{name}_dq", dtype=np.float32)
    graph.nodes += [gs.Node("QuantizeLinear", f"{name}_Q", inputs=[x, s, z], outputs=[q]),
                    gs.Node("DequantizeLinear", f"{name}_DQ", inputs=[q, s, z], outputs=[y])]
    return y


def _qconv(graph: gs.Graph, x: gs.Tensor, name: str) -> gs.Variable:
    """A 1x1 conv with per-tensor Q/DQ on its input and weights."""
    w = gs.Constant(f"{name}_w", np.random.default_rng(0).normal(size=(4, 4, 1, 1)).astype(np.float32))
    y = gs.Variable(f"{name}_out", dtype=np.float32)
    graph.nodes.append(gs.Node("Conv", name, inputs=[_qdq(graph, x, f"{name}_in"), _qdq(graph, w, f"{name}_wq", 0.01)],
                               outputs=[y]))
    return y


@pytest.mark.parametrize("concat_inputs_int8", [True, False])
def test_head_conv_behind_an_int8_concat_stays_int8(concat_inputs_int8):
    """TensorRT moves DQs forward through a Concat whose inputs are all DQs: a head conv reading it would
    still read INT8 with float weights, so it keeps its Q/DQ; behind a float Concat it is made float."""
    x = gs.Variable("images", dtype=np.float32, shape=[1, 4, 8, 8])
    graph = gs.Graph(inputs=[x], opset=13)
    a, b = _qconv(graph, x, "c1"), _qconv(graph, x, "c2")
    if concat_inputs_int8:
        a, b = _qdq(graph, a, "cat_a"), _qdq(graph, b, "cat_b")
    cat = gs.Variable("cat", dtype=np.float32)
    graph.nodes.append(gs.Node("Concat", "cat", attrs={"axis": 1}, inputs=[a, b], outputs=[cat]))
    half = gs.Variable("half", dtype=np.float32)
    graph.nodes.append(gs.Node("Slice", "half", inputs=[cat, gs.Constant("st", np.array([0], np.int64)),
                                                         gs.Constant("en", np.array([4], np.int64)),
                                                         gs.Constant("ax", np.array([1], np.int64))], outputs=[half]))
    graph.outputs = [_qconv(graph, half, "head")]
    graph.outputs[0].shape = [1, 4, 8, 8]
    graph.toposort()
    model = gs.export_onnx(graph)
    assert [c.name for c in head_output_convs(graph_from_model(model))] == ["head"]
    _, report = optimize_model(model, OptimizeConfig(family="yolov7"))
    (head,) = report.head
    assert head.floated is not concat_inputs_int8
    assert ("INT8 through" in head.reason) is concat_inputs_int8


def test_head_convs_sharing_one_quantize_are_made_float_together():
    """Only head convs read the Q/DQ: no quantized layer is left reading it, so all of them go float."""
    x = gs.Variable("images", dtype=np.float32, shape=[1, 4, 8, 8])
    graph = gs.Graph(inputs=[x], opset=13)
    t = _qconv(graph, x, "body")
    shared = _qdq(graph, t, "shared")
    outs = []
    for k in range(2):
        w = gs.Constant(f"h{k}_w", np.ones((4, 4, 1, 1), np.float32))
        y = gs.Variable(f"h{k}_out", dtype=np.float32, shape=[1, 4, 8, 8])
        graph.nodes.append(gs.Node("Conv", f"h{k}", inputs=[shared, _qdq(graph, w, f"h{k}_wq", 0.01)], outputs=[y]))
        outs.append(y)
    graph.outputs = outs
    graph.toposort()
    _, report = optimize_model(gs.export_onnx(graph), OptimizeConfig(family="yolov7"))
    assert [(h.node, h.floated) for h in report.head] == [("h0", True), ("h1", True)]
