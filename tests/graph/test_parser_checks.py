"""Each TensorRT parser check on a minimal model that violates it (and a clean model that passes)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qdq_builders import QdqBuilder

from trtqat.graph.parser_checks import check_parser, expected_weight_axis
from trtqat.graph.qdq import graph_from_model


def _conv_model(op="Conv", w_shape=(4, 2, 1, 1), axis=0, opset=13, zp=None, scale=None, act_axis=None,
                **attrs):
    b = QdqBuilder()
    x = b.qdq("x", "act", scale=scale, zero_point=zp) if act_axis is None else b.qdq(
        "x", "act", scale=np.full(2, 0.01, np.float32), axis=act_axis)
    w = b.const("w", np.ones(w_shape, np.float32))
    n = w_shape[axis]
    wq = b.qdq(w, "wt", scale=np.full(n, 0.01, np.float32), axis=axis)
    if op == "Gemm":
        y = b.node("Gemm", [b.node("Flatten", [x], "flat"), wq], "fc", **attrs)
    else:
        y = b.node(op, [x, wq], "conv", **attrs)
    return b.model([("x", [1, 2, 4, 4])], [(y, None)], opset=opset, check=False)


def _rules(model) -> list[str]:
    return sorted(f.rule_id for f in check_parser(graph_from_model(model)))


def test_clean_model_has_no_findings():
    assert _rules(_conv_model()) == []
    assert _rules(_conv_model("ConvTranspose", (2, 4, 1, 1), axis=1)) == []
    assert _rules(_conv_model("Gemm", (4, 32), axis=0, transB=1)) == []
    assert _rules(_conv_model("Gemm", (32, 4), axis=1)) == []


def test_non_zero_zero_point():
    assert _rules(_conv_model(zp=np.array(3, np.int8))) == ["PARSE001"] * 2  # on the Q and on the DQ


def test_uint8_zero_point_is_a_warning():
    f = check_parser(graph_from_model(_conv_model(zp=np.array(0, np.uint8))))
    assert [(x.rule_id, x.severity, x.nodes) for x in f] == [("PARSE009", "warning", ("act_q",)),
                                                             ("PARSE009", "warning", ("act_dq",))]


@pytest.mark.parametrize("value", [0.0, -0.1, np.inf])
def test_non_positive_scale(value):
    assert _rules(_conv_model(scale=value)) == ["PARSE003"] * 2


def test_non_constant_scale():
    b = QdqBuilder()
    zp = b.const("zp", np.array(0, np.int8))
    q = b.node("QuantizeLinear", ["x", "s", zp], "q")
    y = b.node("DequantizeLinear", [q, "s", zp], "dq")
    model = b.model([("x", [1, 2]), ("s", [])], [(y, None)], check=False)
    assert _rules(model) == ["PARSE002", "PARSE002"]


def test_identity_on_scale_and_zero_point():
    b = QdqBuilder()
    s = b.node("Identity", [b.const("s0", np.array(0.1, np.float32))], "id_s")
    z = b.node("Identity", [b.const("z0", np.array(0, np.int8))], "id_z")
    q = b.node("QuantizeLinear", ["x", s, z], "q")
    y = b.node("DequantizeLinear", [q, s, z], "dq")
    model = b.model([("x", [1, 2])], [(y, None)], check=False)
    assert _rules(model) == ["PARSE007"] * 4


def test_per_channel_activation():
    assert _rules(_conv_model(act_axis=1)) == ["PARSE004", "PARSE004"]


@pytest.mark.parametrize("op,shape,axis,attrs", [
    ("Conv", (4, 4, 1, 1), 1, {}),
    ("ConvTranspose", (2, 2, 1, 1), 0, {}),
    ("Gemm", (4, 32), 1, {"transB": 1}),
    ("Gemm", (32, 32), 0, {}),
])
def test_wrong_weight_axis(op, shape, axis, attrs):
    if op == "Conv":
        shape = (4, 2, 1, 1) if axis == 0 else (2, 2, 1, 1)
    assert _rules(_conv_model(op, shape, axis=axis, **attrs)) == ["PARSE005"]


def test_per_channel_before_opset_13():
    model = _conv_model(opset=13)
    model.opset_import[0].version = 12
    assert _rules(model) == ["PARSE006", "PARSE006"]


def test_qoperator_ops_rejected():
    b = QdqBuilder()
    y = b.node("ConvInteger", ["x", b.const("w", np.ones((1, 1, 1, 1), np.uint8))], "convint")
    model = b.model([("x", [1, 1, 2, 2])], [(y, None)], check=False)
    model.graph.input[0].type.tensor_type.elem_type = 2  # uint8
    assert _rules(model) == ["PARSE008"]


def test_expected_weight_axis_table():
    from onnx_graphsurgeon import Node
    assert expected_weight_axis(Node("Conv"), 1) == 0
    assert expected_weight_axis(Node("ConvTranspose"), 1) == 1
    assert expected_weight_axis(Node("Gemm", attrs={"transB": 1}), 1) == 0
    assert expected_weight_axis(Node("Gemm"), 1) == 1
    assert expected_weight_axis(Node("Conv"), 0) is None
    assert helper.make_node("Conv", ["a", "b"], ["c"]) is not None


def _fp16_scale_model(opset: int = 19):
    """A Q with an FP32 input and an FP16 scale: invalid ONNX, refused by the TensorRT parser."""
    b = QdqBuilder()
    s = b.const("s16", np.array(0.01, np.float16))
    z = b.const("z", np.array(0, np.int8))
    q = b.node("QuantizeLinear", ["x", s, z], "q")
    y = b.node("DequantizeLinear", [q, s, z], "dq")
    return b.model([("x", [1, 2, 4, 4])], [(y, [1, 2, 4, 4])], opset=opset, check=False)


def test_qdq_input_and_scale_types_differ_is_refused():
    from trtqat.graph.lint import lint_model
    from trtqat.graph.parser_checks import REFUSING_RULES

    model = _fp16_scale_model()
    # The Q reads FP32 with an FP16 scale; the DQ is declared to write FP32 with the same FP16 scale.
    assert [(f.rule_id, f.nodes) for f in check_parser(graph_from_model(model))] == [
        ("PARSE010", ("q",)), ("PARSE010", ("dq",))]
    report = lint_model(model)
    assert report.refused and report.summary["refused_by"] == ["PARSE010", "PARSE011"]
    assert report.summary["standalone_qdq"] is None and report.layers == () and report.standalone == ()
    assert {f.rule_id for f in report.findings} >= {"PARSE010", "PARSE011"} and "PARSE010" in REFUSING_RULES


def test_checker_full_check_rejection_is_refused():
    from trtqat.graph.lint import lint_model

    b = QdqBuilder()
    y = b.node("Relu", ["x"], "relu")
    model = b.model([("x", [1, 2])], [(y, [1, 3])], check=False)   # declared output shape contradicts the input
    report = lint_model(model)
    assert report.refused and report.summary["refused_by"] == ["PARSE011"]
    f = next(f for f in report.findings if f.rule_id == "PARSE011")
    assert f.severity == "error" and "onnx.checker rejects the model" in f.hazard


def _cast_model(to: int):
    b = QdqBuilder()
    x = b.qdq("x", "in")
    c = b.node("Cast", [x], "cast", to=to)
    w = b.weight("conv", (2, 2, 1, 1))
    y = b.node("Conv", [c, w], "conv", kernel_shape=[1, 1])
    return b.model([("x", [1, 2, 4, 4])], [(y, [1, 2, 4, 4])])


def test_noop_cast_is_reported_and_blocks_fusion_conservatively():
    from onnx import TensorProto

    from trtqat.graph.lint import lint_model

    report = lint_model(_cast_model(TensorProto.FLOAT))
    cast = [f for f in report.findings if f.rule_id == "PARSE012"]
    assert [(f.nodes, f.severity) for f in cast] == [(("cast",), "warning")]
    assert not report.refused
    # Conservative (no source says TensorRT drops a same-type Cast first): the DQ cannot reach the conv.
    assert {s.name: s.rule_id for s in report.standalone} == {"in_q": "LINT001", "in_dq": "LINT002"}
    assert {x.name: x.precision for x in report.layers} == {"conv": "float"}
    from trtqat.graph.optable import behaviour
    assert "conservative" in behaviour("Cast").source


def test_real_cast_is_not_a_finding():
    from onnx import TensorProto
    b = QdqBuilder()
    y = b.node("Cast", ["x"], "cast", to=TensorProto.FLOAT16)
    model = b.model([("x", [1, 2])], [(y, None)], check=False)
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    assert "PARSE012" not in _rules(model)


def test_batchnorm_params_through_identity_stay_a_float_layer():
    """TensorRT 8.5 did not fold a BatchNorm whose parameters come through an Identity of a shared constant."""
    from trtqat.graph.lint import lint_model

    def model(identity: bool):
        b = QdqBuilder()
        y = b.conv("x", "c1", 2, 2, 1, bn=False, act=None)
        ones = b.const("shared_ones", np.ones(2, np.float32))
        zeros = b.const("shared_zeros", np.zeros(2, np.float32))
        if identity:
            ones, zeros = b.node("Identity", [ones], "id_ones"), b.node("Identity", [zeros], "id_zeros")
        y = b.node("BatchNormalization", [y, ones, zeros, zeros, ones], "bn")
        y = b.node("Relu", [y], "relu")
        y = b.conv(y, "c2", 2, 2, 1, act=None)
        return b.model([("x", [1, 2, 4, 4])], [(y, [1, 2, 4, 4])])

    folded = lint_model(model(False))
    assert [s.name for s in folded.standalone] == ["c1_in_q"]
    assert "bn" in {x.name: x for x in folded.layers}["c1"].fused
    kept = lint_model(model(True))
    layers = {x.name: x for x in kept.layers}
    assert layers["bn"].precision == "float" and "relu" in layers["bn"].fused
    assert "non-initializer" in layers["bn"].why_float
    assert layers["c1"].precision == "INT8" and layers["c1"].output == "float"   # int8-in/float-out, free
    assert {s.name: s.rule_id for s in kept.standalone} == {"c1_in_q": "LINT001", "c2_in_q": "LINT007"}
    assert [f.nodes for f in kept.findings if f.rule_id == "LINT009"] == [("bn",)]


def test_plugin_op_in_default_domain_is_a_warning_not_a_refusal():
    from onnx import TensorProto

    from trtqat.graph.lint import lint_model
    from trtqat.graph.parser_checks import check_model_proto

    def model(domain: str):
        b = QdqBuilder()
        y = b.node("Relu", ["x"], "relu")
        b.nodes.append(helper.make_node("EfficientNMS_TRT", [y], ["z"], name="nms", domain=domain))
        g = helper.make_graph(b.nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 2])])
        ops = [helper.make_opsetid("", 13)] + ([helper.make_opsetid(domain, 1)] if domain else [])
        m = helper.make_model(g, opset_imports=ops)
        m.ir_version = 8
        return m

    assert check_model_proto(model("TRT")) == []
    [f] = check_model_proto(model(""))
    assert (f.rule_id, f.severity) == ("PARSE013", "warning") and "EfficientNMS_TRT" in f.hazard
    assert not lint_model(model("")).refused
