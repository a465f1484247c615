"""``optimize`` on the foreign Q/DQ styles of trtqat's YOLOv5/YOLOv7 fixtures: after it, lint predicts only
the network-input Quantize, every scale group carries one scale, and the outputs stay close to the input
model's.

The bound on outputs: the fixtures have random weights, and one int8 rounding flip spreads through them
(export verification faces the same, docs/export.md), so OUT is compared with the *float* model: its
relative L2 error may be at most 1.5x the input model's own (measured: 0.92-1.17x).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from foreign_styles import modelopt_onnx, modelopt_torch
from optimize_helpers import noise_batches

from trtqat.calib.ort_collect import run_outputs
from trtqat.graph.lint import lint_model
from trtqat.graph.policy import load_policy_file, policy_file
from trtqat.graph.qdq import graph_from_model, is_q, read_qparams
from trtqat.graph.scale_groups import find_scale_sets
from trtqat.optimize import OptimizeConfig, optimize_model

ERROR_RATIO = 1.5


def styled(family_onnx, family: str, style: str) -> onnx.ModelProto:
    d = family_onnx(family)
    if style == "pq":
        return onnx.load(str(d["pq"]))
    float_model = onnx.load(str(d["float"]))
    if style == "modelopt-onnx":
        return modelopt_onnx(float_model, d["amax"])
    if style == "modelopt-onnx-fp16":
        return modelopt_onnx(float_model, d["amax"], fp16=True)
    return modelopt_torch(float_model, d["amax"])


def standalone(model: onnx.ModelProto) -> int:
    return lint_model(model).summary["standalone_qdq"]


def rel_error(model: onnx.ModelProto, reference: dict[str, np.ndarray], batch: np.ndarray) -> float:
    out = run_outputs(model, batch)
    return max(float(np.linalg.norm(out[k] - v) / np.linalg.norm(v)) for k, v in reference.items())


def assert_one_scale_per_group(model: onnx.ModelProto, family: str) -> int:
    graph = graph_from_model(model)
    sets = find_scale_sets(graph, load_policy_file(policy_file(family))).sets
    nodes = {n.name: n for n in graph.nodes}
    for s in sets:
        scales = {float(read_qparams(nodes[q]).scale.reshape(-1)[0]) for q in s.q_nodes}
        assert len(scales) == 1, (s.q_nodes, scales)
    return len(sets)


STYLES = ["pq", "modelopt-onnx", "modelopt-onnx-fp16", "modelopt-torch"]


@pytest.mark.parametrize("family", ["yolov5", pytest.param("yolov7", marks=pytest.mark.slow)])
@pytest.mark.parametrize("style", STYLES)
def test_optimize_leaves_only_the_input_quantize(family_onnx, family, style):
    model = styled(family_onnx, family, style)
    before = standalone(model)
    out, report = optimize_model(model, OptimizeConfig())
    onnx.checker.check_model(out)
    assert report.family == family and not report.calibrated
    summary = lint_model(out).summary
    assert summary["standalone_qdq"] == 1 and summary["standalone_q"] == 1, (style, before, summary)
    assert assert_one_scale_per_group(out, family) > 0
    if style in ("pq", "modelopt-torch") or (family, style) == ("yolov5", "modelopt-onnx"):
        assert before > 1  # the input really had standalone Q/DQ to remove
    again, second = optimize_model(out, OptimizeConfig())
    assert sum(g.changed for g in second.groups) == 0 and not second.inserted  # optimize is idempotent
    batch = np.concatenate(noise_batches())
    first = run_outputs(out, batch)
    for name, value in run_outputs(again, batch).items():  # (Qs sharing one scale tensor stay apart)
        np.testing.assert_array_equal(value, first[name])
    reference = run_outputs(onnx.load(str(family_onnx(family)["float"])), batch)
    assert rel_error(out, reference, batch) <= ERROR_RATIO * rel_error(model, reference, batch)


def test_modelopt_torch_normalisation_counts(family_onnx):
    model = styled(family_onnx, "yolov5", "modelopt-torch")
    n_casts = sum(n.op_type == "Cast" for n in model.graph.node)
    out, report = optimize_model(model, OptimizeConfig())
    assert report.normalize.noop_casts_removed == n_casts > 0
    assert not any(n.op_type in ("Cast", "Identity", "Constant") for n in out.graph.node)
    assert report.normalize.qparams_folded > 0 and report.normalize.duplicate_q_merged > 0
    # no Q/DQ on the Bottleneck Adds in the input: the skip inputs get one, with an existing sibling's scale
    residual = [i for i in report.inserted if i.kind == "residual-add"]
    assert len(residual) == 7 and all(i.sibling_q for i in residual)


def test_pytorch_quantization_default_converts_the_yolov5_detect_fanouts(family_onnx):
    model = styled(family_onnx, "yolov5", "pq")
    out, report = optimize_model(model, OptimizeConfig())
    fanout = sorted(i.node for i in report.inserted if i.kind == "float-fanout")
    assert fanout == ["/model/model.24/m.0/Conv", "/model/model.24/m.1/Conv"]
    graph = graph_from_model(out)
    m2 = next(n for n in graph.nodes if n.name == "/model/model.24/m.2/Conv")
    assert not m2.inputs[0].inputs or not m2.inputs[0].inputs[0].op.endswith("Linear")  # m.2 stays float
    for name in fanout:  # converted convs: INT8 input with the sibling's scale, per-channel INT8 weights
        conv = next(n for n in graph.nodes if n.name == name)
        assert conv.inputs[0].inputs[0].op == "DequantizeLinear"
        assert read_qparams(conv.inputs[1].inputs[0]).per_channel


def test_fp16_scales_stay_fp16(family_onnx):
    model = styled(family_onnx, "yolov5", "modelopt-onnx-fp16")
    assert model.opset_import[0].version >= 19
    out, report = optimize_model(model, OptimizeConfig())
    graph = graph_from_model(out)
    dtypes = {np.asarray(n.inputs[1].values).dtype for n in graph.nodes if is_q(n)}
    assert dtypes == {np.dtype(np.float16)}
    # the detect conv made float (model.24.m.2) keeps FP16 weights in the FP16 graph
    (head,) = [h for h in report.head if h.floated]
    conv = next(n for n in graph.nodes if n.name == head.node)
    assert conv.inputs[0].name == head.tensor and np.asarray(conv.inputs[1].values).dtype == np.float16


def test_calib_recalibrates_every_group_through_onnxruntime(family_onnx):
    model = styled(family_onnx, "yolov5", "modelopt-torch")
    out, report = optimize_model(model, OptimizeConfig(method="max"), calib=noise_batches())
    assert report.calibrated and report.groups
    assert {g.source for g in report.groups} <= {"calib:max", "calib:max, floored"}
    assert standalone(out) == 1
    d = family_onnx("yolov5")
    # max calibration of a group = the largest max |x| of its tensors (amax measured on the same images), unless
    # that is below the smallest scale a member had (a member tied to a wider tensor in IN): then that scale
    graph = graph_from_model(out)
    nodes = {n.name: n for n in graph.nodes}
    from trtqat.graph.qdq import producer_map
    from trtqat.graph.retie import input_tensor

    prod = producer_map(graph)
    for g in report.groups:
        tensors = {input_tensor(nodes[q], prod) for q in g.q_nodes}
        expected = max(d["amax"][t] for t in tensors) / 127.0
        floored = expected < min(g.scales_before) * (1 - 1e-6)
        assert g.scale == pytest.approx(min(g.scales_before) if floored else expected, rel=1e-6)
        assert not floored or g.source == "calib:max, floored"


def test_calibrated_tie_never_clips_more_than_the_input_did(family_onnx):
    """A max-calibrated input, groups re-derived by MSE: no group scale below the smallest scale a member had
    (the floor); the groups whose MSE amax fell below it are named "floored"."""
    model = styled(family_onnx, "yolov5", "modelopt-torch")
    _, mse = optimize_model(model, OptimizeConfig(method="mse"), calib=noise_batches())
    for g in mse.groups:
        assert g.scale >= min(g.scales_before) * (1 - 1e-6), g
    floored = [g for g in mse.groups if g.source == "calib:mse, floored"]
    assert floored and all(g.scale == pytest.approx(min(g.scales_before), rel=1e-6) for g in floored)
    assert any(g.source == "calib:mse" for g in mse.groups)  # data still decides where it clips no more


def test_recalibrate_all_derives_every_activation_scale(family_onnx):
    """``--recalibrate all``: every activation Q, grouped or not, takes the calibrated scale (max here: the
    largest max |x| of its tensors, measured independently), with no floor; weight scales are kept."""
    from trtqat.graph.qdq import is_weight_qdq, producer_map
    from trtqat.graph.retie import input_tensor

    model = styled(family_onnx, "yolov5", "modelopt-torch")
    out, report = optimize_model(model, OptimizeConfig(method="max", recalibrate="all"), calib=noise_batches())
    assert report.recalibrate == "all" and report.to_dict()["recalibrate"] == "all"
    amax = family_onnx("yolov5")["amax"]
    graph = graph_from_model(out)
    prod = producer_map(graph)
    acts = [n for n in graph.nodes if is_q(n) and not is_weight_qdq(n)]
    covered = [q for g in report.groups for q in g.q_nodes]
    assert sorted(covered) == sorted(n.name for n in acts)  # each activation Q in exactly one group
    singles = [g for g in report.groups if g.rules == ("recalibrate",)]
    assert len(singles) > 5 and all(len(g.q_nodes) == 1 for g in singles)
    nodes = {n.name: n for n in graph.nodes}
    for g in report.groups:
        expected = max(amax[input_tensor(nodes[q], prod)] for q in g.q_nodes) / 127.0
        assert g.scale == pytest.approx(expected, rel=1e-6) and g.source == "calib:max"
        assert all(float(read_qparams(nodes[q]).scale) == pytest.approx(expected, rel=1e-6) for q in g.q_nodes)
    weights = {n.name: read_qparams(n).scale for n in graph_from_model(model).nodes if is_q(n) and is_weight_qdq(n)}
    after = {n.name: read_qparams(n).scale for n in graph.nodes if n.name in weights}
    floated = sum(h.floated for h in report.head)  # the head output convs the rules keep float lose theirs
    assert weights and after.keys() <= weights.keys() and len(after) == len(weights) - floated
    assert all(np.array_equal(v, weights[k]) for k, v in after.items())
    # MSE clips this max-calibrated input; with every scale derived again nothing is floored at IN's scales
    _, mse = optimize_model(model, OptimizeConfig(method="mse", recalibrate="all"), calib=noise_batches())
    assert all(g.source == "calib:mse" for g in mse.groups)
    assert sum(g.scale < min(g.scales_before) * 0.999 for g in mse.groups) > len(mse.groups) // 2


def test_recalibrate_is_checked():
    from trtqat.errors import UsageError

    with pytest.raises(UsageError, match="--recalibrate"):
        OptimizeConfig(recalibrate="everything")
