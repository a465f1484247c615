"""One head policy for YOLO26's end-to-end head in ModelOpt's ONNX PTQ style: every conv quantized (the head's
last convs too) and Q/DQ in front of the top-k selection (ModelOpt quantizes the ReduceMax output read by
TopK and the GatherElements output). Those decoding pairs feed no INT8 layer (lint: a standalone Quantize and
Dequantize each) and hide the head's last convs from the head step; ``optimize`` removes them (reported as
``decode``), then makes the last conv of every box and class branch float, and lint predicts only the
network-input Quantize. The graph is written from scratch in ``yolov8_graph.py``.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from foreign_styles import modelopt_onnx, tensor_amax
from optimize_helpers import noise_batches
from yolov8_graph import yolov8_float

from trtqat.calib.ort_collect import run_outputs
from trtqat.graph.float_head import float_decode_qdq
from trtqat.graph.lint import lint_model
from trtqat.graph.qdq import dq_input_of, graph_from_model, is_q
from trtqat.optimize import OptimizeConfig, optimize_model

K = 10
DECODE = ("/model.22/ReduceMax", "/model.22/GatherElements")  # ModelOpt quantizes their outputs


def _quantize_outputs(model: onnx.ModelProto, amax: dict[str, float], nodes: tuple[str, ...]) -> onnx.ModelProto:
    """A Q/DQ pair on the output of each node in ``nodes`` (scale amax / 127), as ModelOpt places them."""
    graph = gs.import_onnx(model)
    by_name = {n.name: n for n in graph.nodes}
    for name in nodes:
        x = by_name[name].outputs[0]
        scale = gs.Constant(f"{name}_scale", np.asarray(max(amax[x.name], 1e-6) / 127, np.float32))
        zero = gs.Constant(f"{name}_zp", np.zeros((), np.int8))
        q_out, dq_out = gs.Variable(f"{name}_q_out", np.int8), gs.Variable(f"{name}_dq_out", np.float32)
        readers = list(x.outputs)
        graph.nodes += [gs.Node("QuantizeLinear", f"{name}_QuantizeLinear", inputs=[x, scale, zero], outputs=[q_out]),
                        gs.Node("DequantizeLinear", f"{name}_DequantizeLinear", inputs=[q_out, scale, zero],
                                outputs=[dq_out])]
        for r in readers:
            r.inputs[[i for i, t in enumerate(r.inputs) if t is x][0]] = dq_out
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    onnx.checker.check_model(out)
    return out


@pytest.fixture(scope="module")
def end2end():
    model, head = yolov8_float(attention=True, reg_max=1, end2end=K)
    amax = tensor_amax(model, noise_batches())
    every_conv = modelopt_onnx(model, amax)  # the head's last convs quantized too
    return model, head, _quantize_outputs(every_conv, amax, DECODE)


@pytest.mark.parametrize("calib", [False, True])
def test_end2end_head_float_and_decoding_pairs_removed(end2end, calib):
    model, head, qdq = end2end
    before = lint_model(qdq)
    decode_qs = {f"{n}_QuantizeLinear" for n in DECODE}
    assert decode_qs <= {s.name for s in before.standalone}, before.summary["standalone_by_rule"]
    out, report = optimize_model(qdq, OptimizeConfig(), calib=noise_batches() if calib else None)
    onnx.checker.check_model(out)
    assert (report.family, report.version) == ("ultralytics", "26")
    floated = {h.node: h.kind for h in report.head if h.floated}
    assert floated == {**dict.fromkeys(decode_qs, "decode"), **dict.fromkeys(head, "output")}, report.head
    summary = lint_model(out).summary
    assert summary["standalone_qdq"] == 1 and summary["standalone_by_rule"] == {"LINT001": 1}, summary
    graph = graph_from_model(out)
    nodes = {n.name: n for n in graph.nodes}
    for name in head:  # the last conv of every box and class branch: float input and weights
        assert dq_input_of(nodes[name], 0) is None and dq_input_of(nodes[name], 1) is None, name
    assert not any(is_q(n) and n.name in decode_qs for n in graph.nodes)
    batch = np.concatenate(noise_batches()[:1])
    ref = run_outputs(model, batch)["output0"]
    err_in = np.abs(run_outputs(qdq, batch)["output0"] - ref).max()
    err_out = np.abs(run_outputs(out, batch)["output0"] - ref).max()
    assert err_out <= max(1.5 * err_in, 1e-3), (err_in, err_out)


def test_decoding_pairs_need_a_learned_layer_before_them():
    """A Q/DQ with no learned layer before it (the network input's) is not decoding, and one a learned
    layer reads is not either: only pairs between the last learned layer and the outputs go."""
    model, _ = yolov8_float(attention=True, reg_max=1, end2end=K)
    amax = tensor_amax(model, noise_batches())
    graph = gs.import_onnx(_quantize_outputs(modelopt_onnx(model, amax), amax, DECODE))
    removed = float_decode_qdq(graph)
    assert {h.node for h in removed} == {f"{n}_QuantizeLinear" for n in DECODE}
    assert all(h.kind == "decode" and h.floated for h in removed)
    assert float_decode_qdq(graph.cleanup()) == []  # nothing left to remove
