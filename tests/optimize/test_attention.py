"""``optimize`` on YOLO11 / YOLO26-style graphs (C2PSA attention after the SPPF; YOLO26's head without DFL),
written from scratch in ``yolov8_graph.py``, in ModelOpt's Q/DQ styles: Q/DQ on every conv input and on both
inputs of each attention MatMul, none on ``attn @ v + pe(v)``.

Before, lint fuses that Add into the ``pe`` conv, which writes float because the MatMul-side addend is float,
so ``proj``'s Quantize stays standalone (LINT004). ``optimize`` quantizes that addend (TQ005, the residual
lint's model of TensorRT names) with v's scale: the attention output is a softmax-weighted average of v over
the contracted axis, so it never leaves v's range and no data is needed. After, only the network-input
Quantize is left, the head's output convs (and DFL) stay float, and the outputs stay within 1.5x the input
model's own error against the float model.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from foreign_styles import modelopt_onnx, modelopt_torch, tensor_amax
from optimize_helpers import noise_batches
from yolov8_graph import yolov8_float

from trtqat.calib.ort_collect import run_outputs
from trtqat.graph.lint import lint_model
from trtqat.graph.qdq import dq_input_of, graph_from_model, read_qparams
from trtqat.optimize import OptimizeConfig, optimize_model

ADD = "/model.10.m.0.attn/Add"
ATTN_OUT = "/model.10.m.0.attn/Reshape_1_out0"  # v @ softmax(q^T k)^T, back in image layout
ARCH = {"yolo11": {"attention": True}, "yolo26": {"attention": True, "reg_max": 1}}


@pytest.fixture(scope="module")
def models():
    """``arch -> (float model, convs kept float, amax)``, cached."""
    cache = {}

    def get(arch: str, softmax_axis: int | None = None):
        key = (arch, softmax_axis)
        if key not in cache:
            model, keep = yolov8_float(**ARCH[arch])
            if softmax_axis is not None:  # the attention Softmax over another axis than the contracted one
                sm = next(n for n in model.graph.node if n.name == "/model.10.m.0.attn/Softmax")
                next(a for a in sm.attribute if a.name == "axis").i = softmax_axis
            cache[key] = model, keep, tensor_amax(model, noise_batches())
        return cache[key]

    return get


def _styled(model, keep, amax, style):
    return (modelopt_onnx if style == "modelopt-onnx" else modelopt_torch)(model, amax, keep_float=keep)


def _rel_error(model, reference, batch):
    out = run_outputs(model, batch)["output0"]
    return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))


@pytest.mark.parametrize("arch", ["yolo11", "yolo26"])
@pytest.mark.parametrize("style", ["modelopt-onnx", "modelopt-torch"])
@pytest.mark.parametrize("calib", [False, True])
def test_attention_block_leaves_only_the_input_quantize(models, arch, style, calib):
    model, keep, amax = models(arch)
    qdq = _styled(model, keep, amax, style)
    before = lint_model(qdq)
    assert before.summary["standalone_qdq"] > 1
    if style == "modelopt-onnx":  # (the torch style's no-op Casts hide the fusion until optimize removes them)
        assert any(s.rule_id == "LINT004" and s.tensor == f"{ADD}_out0" for s in before.standalone), before.summary
    out, report = optimize_model(qdq, OptimizeConfig(), calib=noise_batches() if calib else None)
    onnx.checker.check_model(out)
    assert (report.family, report.version, report.family_from) == ("ultralytics", arch[4:], "structure")
    after = lint_model(out).summary
    assert after["standalone_qdq"] == 1 and after["standalone_by_rule"] == {"LINT001": 1}, after
    attn = [i for i in report.inserted if i.node == ADD]
    assert [(i.rule, i.kind, i.tensor) for i in attn] == [("TQ005", "residual-add", ATTN_OUT)] and not report.suggested
    graph = graph_from_model(out)
    nodes = {n.name: n for n in graph.nodes}
    sibling = nodes[attn[0].sibling_q]  # v's Quantize, read by the second attention MatMul
    assert "Split_out2" in sibling.inputs[0].name or "MatMul_1" in "".join(c.name for c in
                                                                          sibling.outputs[0].outputs[0].outputs)
    q = dq_input_of(nodes[ADD], 0).inputs[0].inputs[0]
    scale = float(np.asarray(read_qparams(q).scale).reshape(-1)[0])
    assert amax[ATTN_OUT] <= 127 * scale * (1 + 1e-6)  # nothing the float model computes there is clipped
    for name in keep:  # head output convs (and DFL) float
        assert dq_input_of(nodes[name], 0) is None and dq_input_of(nodes[name], 1) is None, name
    assert len(keep) == (6 if arch == "yolo26" else 7)
    batch = np.concatenate(noise_batches())
    reference = run_outputs(model, batch)["output0"]
    err_in, err_out = _rel_error(qdq, reference, batch), _rel_error(out, reference, batch)
    assert err_out <= max(1.5 * err_in, 1e-3), (err_in, err_out)


def test_softmax_over_another_axis_needs_data(models):
    """A softmax over the axis the second MatMul does not contract is no weighted average of v: the addend's
    scale is then not known, so it is only suggested without data and calibrated with it."""
    model, keep, amax = models("yolo11", softmax_axis=2)
    qdq = modelopt_onnx(model, amax, keep_float=keep)
    _, report = optimize_model(qdq, OptimizeConfig())
    assert [(i.node, i.tensor, i.needs_data) for i in report.suggested] == [(ADD, ATTN_OUT, True)]
    out, report = optimize_model(qdq, OptimizeConfig(), calib=noise_batches())
    assert [(i.node, i.needs_data) for i in report.inserted if i.node == ADD] == [(ADD, True)]
    assert lint_model(out).summary["standalone_qdq"] == 1
    group = next(g for g in report.groups if any(q.startswith(f"{ADD}/trtqat_in") for q in g.q_nodes))
    assert group.source.startswith("calib:") and group.scale != 1.0  # the placeholder scale never stays


@pytest.mark.parametrize("arch,version", [("yolo11", "11"), ("yolo26", "26")])
def test_family_version_from_structure(models, arch, version):
    """Attention with a DFL is YOLO11, attention without one (reg_max 1) YOLO26; the float graph and its
    quantized forms agree."""
    from trtqat.graph.family_detect import detect_onnx_family

    model, keep, amax = models(arch)
    for m in (model, modelopt_onnx(model, amax, keep_float=keep), modelopt_torch(model, amax, keep_float=keep)):
        family = detect_onnx_family(graph_from_model(m), {})
        assert (family.name, family.version, family.source) == ("ultralytics", version, "structure")
