"""Ground truth: lint must predict the standalone Q/DQ of three real TensorRT 8.4 ResNet18 engines.

The engines (tests/fixtures/trtexec/trt8.4_a100_resnet18-qat-*_best.graph.json) were built from
pytorch-quantization exports of torchvision's resnet18; our ONNX is rebuilt from scratch, so node
names differ. Each engine Reformat layer with ``Origin: QDQ`` is mapped to a *position* in our
graph through the layer that reads its output (``layer2.0.conv1.weight + ...`` = block 3, conv1).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from qdq_builders import RESNET_VARIANTS, resnet18

from trtqat.graph.engine_compare import compare_with_engine
from trtqat.graph.lint import lint_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"  # tests/fixtures/trtexec (see SOURCES.md there)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
EXPECTED_COUNT = {"convonly": 10, "residual": 3, "residual-qgap": 1}


def _fixture(variant: str) -> dict:
    return json.loads((FIXTURES / f"trt8.4_a100_resnet18-qat-{variant}_best.graph.json").read_text())


def _position(layer_name: str) -> str:
    """Our node name for the engine layer whose first fused weight is ``layer_name``'s."""
    m = re.search(r"(conv1|fc|layer(\d)\.(\d)\.(conv1|conv2|downsample\.0))\.weight", layer_name)
    assert m, layer_name
    if m.group(1) in ("conv1", "fc"):
        return m.group(1)
    block = 2 * (int(m.group(2)) - 1) + int(m.group(3)) + 1
    return f"b{block}_" + {"downsample.0": "ds"}.get(m.group(4), m.group(4))


def engine_positions(info: dict) -> list[str]:
    """Positions (our node names) of the engine's standalone Q/DQ layers."""
    layers = info["Layers"]
    out = []
    for r in (x for x in layers if x["LayerType"] == "Reformat" and x.get("Origin") == "QDQ"):
        tensor = r["Outputs"][0]["Name"]
        reader = next(x for x in layers if any(i["Name"] == tensor for i in x.get("Inputs", [])))
        while reader["LayerType"] == "NoOp":  # a layout no-op in front of fc
            tensor = reader["Outputs"][0]["Name"]
            reader = next(x for x in layers if any(i["Name"] == tensor for i in x.get("Inputs", [])))
        pos = _position(reader["Name"])
        index = [i["Name"] for i in reader["Inputs"]].index(tensor)
        if r["Name"].startswith("Quantize"):
            out.append(f"{pos}_in_q")
        else:  # a DQ on the fused conv's second input: the residual (skip) of that block
            assert index == 1, r["Name"]
            out.append(pos.split("_")[0] + "_skip_dq")
    return sorted(out)


@pytest.mark.parametrize("shared_pairs", [False, True], ids=["pair-per-quantizer", "shared-pair"])
@pytest.mark.parametrize("variant", RESNET_VARIANTS)
def test_resnet18_matches_engine(variant, shared_pairs):
    info = _fixture(variant)
    expected = engine_positions(info)
    assert len(expected) == EXPECTED_COUNT[variant]
    report = lint_model(resnet18(variant, shared_pairs=shared_pairs))
    assert report.summary["standalone_qdq"] == EXPECTED_COUNT[variant]
    predicted = sorted(s.name for s in report.standalone)
    if shared_pairs:  # one pair per tensor, named after its first consumer (conv1 of the block)
        expected = sorted(e.replace("_ds_in_q", "_conv1_in_q").replace("b8_skip_dq", "b8_conv1_in_dq")
                          for e in expected)
    assert predicted == expected


def test_resnet18_convonly_reasons_and_precisions():
    report = lint_model(resnet18("convonly"))
    rules = {s.name: s.rule_id for s in report.standalone}
    assert rules["conv1_in_q"] == "LINT001"
    assert rules["b1_conv1_in_q"] == "LINT003"      # MaxPool output also read by the float residual Add
    assert rules["b3_conv1_in_q"] == "LINT004"      # float residual => fused conv+add writes float
    assert rules["fc_in_q"] == "LINT007"            # GAP runs float
    merged = {s.name: s.aliases for s in report.standalone}
    assert merged["b3_conv1_in_q"] == ("b3_ds_in_q",)
    layers = {x.name: x for x in report.layers}
    assert layers["maxpool"].precision == "float" and layers["gap"].precision == "float"
    assert layers["b3_ds"].fused[-2:] == ("b3_add", "b3_relu2")  # the later conv hosts the Add (engine)
    assert layers["fc"].precision == "INT8" and layers["fc"].output == "float"
    assert report.summary["compute_layers"] == 23 and report.summary["int8_layers"] == 21


def test_resnet18_residual_variants_int8_regions():
    res = {x.name: x for x in lint_model(resnet18("residual")).layers}
    assert res["maxpool"].precision == "INT8" and res["conv1"].output == "INT8"   # ConvActPool
    assert res["b8_conv2"].output == "float" and res["gap"].precision == "float"
    qgap = lint_model(resnet18("residual-qgap"))
    assert qgap.summary["int8_share"] == 1.0 and qgap.summary["precision_boundaries"] == 0
    assert {x.name: x for x in qgap.layers}["gap"].output == "INT8"


def test_macs_of_full_width_resnet18():
    report = lint_model(resnet18("convonly", width=64))
    # torchvision resnet18 at 224x224: 1.814 GMACs per image; batch 32
    assert report.summary["macs"] == pytest.approx(32 * 1.814e9, rel=0.01)
    assert report.summary["int8_share_macs"] == 1.0


@pytest.mark.parametrize("variant", RESNET_VARIANTS)
def test_engine_compare_on_fixture_shows_name_mismatch(variant):
    info = _fixture(variant)
    model = resnet18(variant)
    names = {n.name for n in model.graph.node if n.op_type in QDQ_OPS}
    cmp = compare_with_engine(lint_model(model), info, names)
    assert cmp.engine_standalone_qdq == EXPECTED_COUNT[variant]
    assert cmp.agree == () and len(cmp.engine_unknown) == EXPECTED_COUNT[variant]
    assert len(cmp.predicted_only) == EXPECTED_COUNT[variant]


def _rename(model, mapping: dict[str, str]):
    for n in model.graph.node:
        n.name = mapping.get(n.name, n.name)
    return model


def test_engine_compare_agrees_when_names_match():
    """Our residual ResNet18 with the engine's ONNX names on its Q/DQ and a few layers."""
    info = _fixture("residual")
    model = _rename(resnet18("residual"), {
        "conv1_in_q": "QuantizeLinear_2", "b8_skip_dq": "DequantizeLinear_291", "fc_in_q": "QuantizeLinear_298",
        "b1_conv1_in_q": "QuantizeLinear_15", "conv1": "Conv_9", "maxpool": "MaxPool_12", "gap": "GlobalAveragePool_294",
        "fc": "Gemm_305", "b8_conv2": "Conv_284"})
    names = {n.name for n in model.graph.node if n.op_type in QDQ_OPS}
    cmp = compare_with_engine(lint_model(model), info, names)
    assert cmp.agree == ("DequantizeLinear_291", "QuantizeLinear_2", "QuantizeLinear_298")
    assert cmp.predicted_only == () and cmp.engine_only == () and cmp.engine_unknown == ()
    assert sorted(cmp.precision_agree) == ["Conv_284", "Conv_9", "Gemm_305", "GlobalAveragePool_294", "MaxPool_12"]
    assert cmp.precision_disagree == ()


def test_engine_compare_reports_disagreement():
    """The conv-only engine against the residual model: the engine has Q/DQ layers we did not predict."""
    info = _fixture("convonly")
    model = _rename(resnet18("residual"), {"conv1_in_q": "QuantizeLinear_2", "b1_conv1_in_q": "QuantizeLinear_15",
                                            "maxpool": "MaxPool_12"})
    names = {n.name for n in model.graph.node if n.op_type in QDQ_OPS}
    cmp = compare_with_engine(lint_model(model), info, names)
    assert cmp.agree == ("QuantizeLinear_2",)
    assert cmp.engine_only == ("QuantizeLinear_15",)
    assert ("MaxPool_12", "INT8", "float") in cmp.precision_disagree


def test_names_only_layer_info():
    model = _rename(resnet18("convonly"), {"conv1_in_q": "QuantizeLinear_2"})
    info = {"Layers": ["QuantizeLinear_2", "conv1.weight + QuantizeLinear_7 + Conv_9", "Foo"], "Bindings": []}
    names = {n.name for n in model.graph.node if n.op_type in QDQ_OPS}
    cmp = compare_with_engine(lint_model(model), info, names)
    assert not cmp.detailed and cmp.agree == ("QuantizeLinear_2",) and cmp.engine_standalone_qdq == 1
