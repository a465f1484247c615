"""Ground truth beyond ResNet18: lint against the real MobileNetV2 (TensorRT 8.4 and 8.2) and TF-ResNet50 engines.

The engines (tests/fixtures/trtexec/, section C of SOURCES.md) were built from ONNX files that are
not public; the networks are rebuilt from scratch in tests/graph/qdq_builders.py with the same Q/DQ
placements. Layers are matched by *position*: our Conv nodes carry the module path of the original
(``features.3.conv.2`` = block 3's projection conv), which the engine's fused layer names start with
(``features.3.conv.2.weight + QuantizeLinear_138 + Conv_142 + Add_144``). A standalone Quantize is
placed by the layer that produces the tensor it reads ("the Q reading block 3's output").
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import onnx
import pytest
from qdq_builders import MOBILENET_VARIANTS, QdqBuilder, mobilenetv2, tf_resnet50

from trtqat.graph.engine_compare import compare_with_engine
from trtqat.graph.lint import lint_model
from trtqat.graph.propagate import QdqIr
from trtqat.graph.qdq import graph_from_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"  # tests/fixtures/trtexec (see SOURCES.md there)
MBV2_COUNT = {"convonly": 17, "residual": 2}


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _is_engine_q(layer: dict) -> bool:
    """A standalone Quantize: 8.4 ``Reformat``/``Origin: QDQ``; 8.2 a ``Scale`` layer named after the Q."""
    if layer["LayerType"] == "Reformat" and layer.get("Origin") == "QDQ":
        return True
    return layer["LayerType"] == "Scale" and layer["Name"].startswith("QuantizeLinear")


def _producer(layers: list[dict], tensor: str) -> dict | None:
    """The engine layer writing ``tensor``, looking through layout/precision copies (8.2 puts one in front of a Q)."""
    for layer in layers:
        if any(o["Name"] == tensor for o in layer.get("Outputs", [])):
            if layer["LayerType"] == "Reformat" and layer.get("Origin") != "QDQ":
                return _producer(layers, layer["Inputs"][0]["Name"])
            return layer
    return None


def _mbv2_position(name: str) -> str:
    if name.startswith(("GlobalAveragePool", "gap")):
        return "gap"
    m = re.match(r"(features\.\d+)", name)
    assert m, name
    return m.group(1)


def engine_q_positions(info: dict) -> list[str]:
    layers = info["Layers"]
    out = []
    for q in (x for x in layers if _is_engine_q(x)):
        prod = _producer(layers, q["Inputs"][0]["Name"])
        out.append("input" if prod is None else _mbv2_position(prod["Name"]))
    return sorted(out)


def lint_q_positions(model: onnx.ModelProto, report) -> list[str]:
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for s in report.standalone:
        assert s.op == "QuantizeLinear", s
        node = producer.get(s.tensor)
        out.append("input" if node is None else _mbv2_position(node.name))
    return sorted(out)


def engine_precisions(info: dict, position) -> dict[str, tuple[str, str]]:
    """Our node name -> (input precision, output precision) of the engine layer at that position."""
    from trtqat.trt.normalize import precision_of, tensor_format

    def word(t: dict) -> str:
        p = precision_of(tensor_format(t))
        return "INT8" if p == "INT8" else "float"

    out = {}
    for layer in info["Layers"]:
        node = position(layer["Name"])
        if node and layer["LayerType"] not in ("Reformat", "Scale", "NoOp"):
            out[node] = (word(layer["Inputs"][0]), word(layer["Outputs"][0]))
    return out


def _mbv2_node(name: str) -> str | None:
    if name.startswith("GlobalAveragePool"):
        return "gap"
    m = re.match(r"((?:features|classifier)\.[\d.conv]+?)\.weight \+", name)
    return m.group(1) if m else None


@pytest.mark.parametrize("trt", ["8.4", "8.2"])
@pytest.mark.parametrize("variant", MOBILENET_VARIANTS)
def test_mobilenetv2_standalone_q_match_engine(variant, trt):
    info = _fixture(f"trt{trt}_titanrtx_mobilenetv2-qat-{variant}_best.graph.json")
    expected = engine_q_positions(info)
    assert len(expected) == MBV2_COUNT[variant]
    model = mobilenetv2(variant)
    report = lint_model(model)
    assert report.summary["standalone_qdq"] == report.summary["standalone_q"] == MBV2_COUNT[variant]
    assert lint_q_positions(model, report) == expected


def test_mobilenetv2_convonly_places():
    """The 15 inner Qs read the output of every block that is also a residual addend or a residual sum."""
    info = _fixture("trt8.4_titanrtx_mobilenetv2-qat-convonly_best.graph.json")
    inner = [p for p in engine_q_positions(info) if p.startswith("features")]
    assert sorted(int(p.split(".")[1]) for p in inner) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    rules = {s.name: s.rule_id for s in lint_model(mobilenetv2("convonly")).standalone}
    assert rules["features.0.0_in_q"] == "LINT001" and rules["classifier.1_in_q"] == "LINT007"
    assert rules["features.3.conv.0.0_in_q"] == "LINT003"   # block 2's output is also the float residual of block 3
    assert rules["features.4.conv.0.0_in_q"] == "LINT004"   # block 3's conv+add writes float (float residual)


@pytest.mark.parametrize("trt", ["8.4", "8.2"])
@pytest.mark.parametrize("variant", MOBILENET_VARIANTS)
def test_mobilenetv2_layer_precisions_match_engine(variant, trt):
    info = _fixture(f"trt{trt}_titanrtx_mobilenetv2-qat-{variant}_best.graph.json")
    engine = engine_precisions(info, _mbv2_node)
    layers = {x.name: x for x in lint_model(mobilenetv2(variant)).layers}
    assert len(engine) == 54 == len(layers)   # 52 convs, the GAP, the classifier
    predicted = {n: (layers[n].precision, layers[n].output) for n in engine}
    assert predicted == engine
    floats = sorted(n for n, (_, out) in engine.items() if out == "float")
    if variant == "convonly":   # 5 projections feeding a float residual, 10 conv+add, last conv, GAP, fc
        assert len(floats) == 18
    else:
        assert floats == ["classifier.1", "features.18.0", "gap"]


def _r50_node(name: str) -> str | None:
    m = re.match(r"resnet50/quant_(conv\d_block\d+_\d_conv|conv1_conv)/", name)
    if m:
        return m.group(1)
    table = {"resnet50/pool1_pool/MaxPool": "pool1_pool", "resnet50/quant_avg_pool/Mean": "avg_pool",
             "resnet50/quant_predictions/Softmax": "predictions_softmax"}
    if name in table:
        return table[name]
    return "predictions_matmul" if "quant_predictions/MatMul" in name else None


def test_tf_resnet50_matches_engine():
    info = _fixture("trt8.4_rtx3090_tf-resnet50-qat_best.graph.json")
    qs = [x for x in info["Layers"] if _is_engine_q(x)]
    assert [q["Inputs"][0]["Name"] for q in qs] == ["resnet50/conv1_pad/Pad:0"]   # the input Q, after the Pad
    report = lint_model(tf_resnet50())
    assert [(s.name, s.rule_id, s.tensor) for s in report.standalone] == [("conv1_in_q", "LINT001", "conv1_pad_out")]
    engine = engine_precisions(info, _r50_node)
    layers = {x.name: x for x in report.layers}
    assert len(engine) == 57 == len(layers)   # 53 convs + MatMul, MaxPool, GAP, Softmax
    assert {n: (layers[n].precision, layers[n].output) for n in engine} == engine
    assert engine["pool1_pool"] == engine["avg_pool"] == ("INT8", "INT8")
    assert engine["predictions_matmul"] == ("INT8", "float") and engine["predictions_softmax"] == ("float", "float")
    # The two Pads: pool1_pad runs INT8 (engine "Padding" layer), the input's conv1_pad FP32 (a "Slice" layer).
    pads = {x["Name"]: word for x in info["Layers"] if x["Name"] in ("resnet50/conv1_pad/Pad", "resnet50/pool1_pad/Pad")
            for word in ["INT8" if "Int8" in x["Inputs"][0]["Format/Datatype"] else "float"]}
    assert pads == {"resnet50/conv1_pad/Pad": "float", "resnet50/pool1_pad/Pad": "INT8"}
    ir = QdqIr(graph_from_model(tf_resnet50()), "10")
    ir.propagate()
    assert {n.name: n.int8 for n in ir.nodes if n.op == "Pad"} == {"conv1_pad": False, "pool1_pad": True}


def _positions_to_names(info: dict) -> dict[str, str]:
    layers = info["Layers"]
    out = {}
    for q in (x for x in layers if _is_engine_q(x)):
        prod = _producer(layers, q["Inputs"][0]["Name"])
        out["input" if prod is None else _mbv2_position(prod["Name"])] = q["Name"]
    return out


@pytest.mark.parametrize("trt", ["8.4", "8.2"])
@pytest.mark.parametrize("variant", MOBILENET_VARIANTS)
def test_engine_compare_matches_reformat_and_scale_layers(variant, trt):
    """With the engine's names on our Qs, --engine-layers agrees on every standalone Q (8.2: Scale layers)."""
    info = _fixture(f"trt{trt}_titanrtx_mobilenetv2-qat-{variant}_best.graph.json")
    model = mobilenetv2(variant)
    report = lint_model(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    engine_names = _positions_to_names(info)
    rename = {}
    for s in report.standalone:
        node = producer.get(s.tensor)
        rename[s.name] = engine_names["input" if node is None else _mbv2_position(node.name)]
    for n in model.graph.node:
        n.name = rename.get(n.name, n.name)
    names = {n.name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    cmp = compare_with_engine(lint_model(model), info, names)
    assert cmp.engine_standalone_qdq == MBV2_COUNT[variant]
    assert sorted(cmp.agree) == sorted(engine_names.values()) and len(cmp.agree) == MBV2_COUNT[variant]
    assert cmp.predicted_only == cmp.engine_only == cmp.engine_unknown == ()


def test_engine_compare_clone_and_merged_names():
    """A Q split across a Concat's inputs (``_clone_N``) and a Q merged with an equal-scale one both match."""
    b = QdqBuilder()
    a = b.conv("x", "ca", 2, 2, 1)
    c = b.conv("x", "cb", 2, 2, 1)
    cat = b.node("Concat", [a, c], "cat", axis=1)
    y = b.conv(cat, "cc", 4, 2, 1)
    z = b.node("Sigmoid", [a], "float_reader")   # a is also read in float: the copy onto it stays standalone
    model = b.model([("x", [1, 2, 8, 8])], [(y, [1, 2, 8, 8]), (z, [1, 2, 8, 8])])
    report = lint_model(model)
    assert [(s.name, s.tensor) for s in report.standalone] == [("ca_in_q", "x"), ("cc_in_q", "ca_relu_out")]
    names = {n.name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    layer = {"LayerType": "Reformat", "Origin": "QDQ"}
    info = {"Layers": [{**layer, "Name": "cb_in_q"}, {**layer, "Name": "cc_in_q_clone_0"}]}
    cmp = compare_with_engine(report, info, names)
    # ca_in_q and cb_in_q read x with one scale: merged, and TensorRT kept the other name.
    assert cmp.agree == ("ca_in_q", "cc_in_q") and cmp.engine_only == cmp.engine_unknown == ()
    names_only = compare_with_engine(report, {"Layers": ["cc_in_q_clone_1", "Conv_1"]}, names)
    assert names_only.agree == ("cc_in_q",) and names_only.engine_standalone_qdq == 1


def test_tf_resnet50_engine_compare_with_engine_names():
    info = _fixture("trt8.4_rtx3090_tf-resnet50-qat_best.graph.json")
    model = tf_resnet50()
    rename = {"conv1_in_q": "QuantLinearNode__838", "pool1_pool": "resnet50/pool1_pool/MaxPool",
              "avg_pool": "resnet50/quant_avg_pool/Mean", "predictions_softmax": "resnet50/quant_predictions/Softmax"}
    for n in model.graph.node:
        n.name = rename.get(n.name, n.name)
    names = {n.name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    cmp = compare_with_engine(lint_model(model), info, names)
    assert (cmp.engine_standalone_qdq, cmp.agree, cmp.predicted_only, cmp.engine_only) == (
        1, ("QuantLinearNode__838",), (), ())
    assert sorted(cmp.precision_agree) == sorted(v for k, v in rename.items() if k != "conv1_in_q")
    assert cmp.precision_disagree == ()


@pytest.mark.parametrize("version", ["8.6", "10", "11"])
def test_same_prediction_for_every_modelled_trt_version(version):
    """The engines are TensorRT 8.2/8.4; lint models 8.6 and later, whose table changes none of these rules."""
    counts = [lint_model(m, trt_version=version).summary["standalone_qdq"]
              for m in (mobilenetv2("convonly"), mobilenetv2("residual"), tf_resnet50())]
    assert counts == [17, 2, 1]
