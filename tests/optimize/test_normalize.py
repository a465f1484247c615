"""Normalisation of foreign Q/DQ encodings: what is removed, folded and merged, and that no value changes."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper, numpy_helper

from trtqat.calib.ort_collect import run_outputs
from trtqat.graph.normalize_qdq import normalize_qdq
from trtqat.graph.qdq import graph_from_model


def _model() -> onnx.ModelProto:
    """x -> two Q/DQ pairs of one scale (one per reader; scale from a Constant node, zero point behind an
    Identity) -> no-op Cast(FLOAT) -> Relu; one real Cast to FLOAT16 -> Cast back."""
    inits = [numpy_helper.from_array(np.float32(0.05), "s_init"), numpy_helper.from_array(np.int8(0), "zp_init")]
    nodes = [helper.make_node("Constant", [], ["s"], name="sc", value=numpy_helper.from_array(np.float32(0.05))),
             helper.make_node("Identity", ["zp_init"], ["zp"], name="zid")]
    for i in range(2):
        nodes += [helper.make_node("QuantizeLinear", ["x", "s" if i == 0 else "s_init", "zp"], [f"q{i}"], name=f"q{i}"),
                  helper.make_node("DequantizeLinear", [f"q{i}", "s", "zp"], [f"dq{i}"], name=f"dq{i}"),
                  helper.make_node("Cast", [f"dq{i}"], [f"c{i}"], name=f"cast{i}", to=TensorProto.FLOAT),
                  helper.make_node("Relu", [f"c{i}"], [f"y{i}"], name=f"relu{i}")]
    nodes += [helper.make_node("Cast", ["y1"], ["h"], name="to_half", to=TensorProto.FLOAT16),
              helper.make_node("Cast", ["h"], ["z"], name="to_float", to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


def test_normalize_removes_folds_and_merges_without_changing_values():
    model = _model()
    graph = graph_from_model(model)
    report = normalize_qdq(graph)
    assert report.noop_casts_removed == 2  # cast0, cast1; the real casts to FLOAT16 and back stay
    assert {n.name for n in graph.nodes if n.op == "Cast"} == {"to_half", "to_float"}
    assert report.qparams_folded == 2  # the Constant-node scale and the Identity zero point
    ops = [n.op for n in graph.nodes]
    assert ops.count("QuantizeLinear") == 1 and ops.count("DequantizeLinear") == 1
    assert "Identity" not in ops and "Constant" not in ops
    assert report.duplicate_q_merged == 1 and report.duplicate_dq_merged == 1
    assert all(isinstance(t, gs.Constant) for n in graph.nodes if n.op.endswith("Linear") for t in n.inputs[1:])
    out = gs.export_onnx(graph)
    onnx.checker.check_model(out)
    x = np.linspace(-3, 3, 4, dtype=np.float32).reshape(1, 4)
    before, after = run_outputs(model, x), run_outputs(out, x)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
