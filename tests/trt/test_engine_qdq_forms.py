"""Every form a standalone Q/DQ takes in real layer info: 8.4 Reformat/QDQ, 8.2 Scale-as-Quantize,
``_clone_N`` copies of a Quantize split across a Concat, exact numbers on the MobileNetV2/ResNet50 engines."""

from __future__ import annotations

import json

import pytest

from trtqat.engine_qdq import is_standalone_qdq, onnx_qdq_name
from trtqat.trt.compare import diff_plans, engine_row
from trtqat.trt.plan import EnginePlan, engine_layers_summary
from trtqat.trt.report import make_report

MBV2 = "trt{}_titanrtx_mobilenetv2-qat-{}_best.graph.json"
R50 = "trt8.4_rtx3090_tf-resnet50-qat_best"


@pytest.mark.parametrize(
    "graph,layers,counts,int8_layers",
    [
        (MBV2.format("8.4", "convonly"), 73, {"total": 18, "qdq": 17, "layout": 1, "other": 0}, 53),
        (MBV2.format("8.4", "residual"), 58, {"total": 3, "qdq": 2, "layout": 1, "other": 0}, 53),
        (MBV2.format("8.2", "convonly"), 85, {"total": 29, "qdq": 17, "layout": 12, "other": 0}, 54),
        (MBV2.format("8.2", "residual"), 59, {"total": 3, "qdq": 2, "layout": 1, "other": 0}, 54),
        (R50 + ".graph.json", 63, {"total": 2, "qdq": 1, "layout": 1, "other": 0}, 58),
        ("trt8.4_rtx3090_tf-resnet50-fp16.graph.json", 86, {"total": 2, "qdq": 0, "layout": 2, "other": 0}, 0),
    ],
)
def test_report_counts_on_new_engines(fixtures, graph, layers, counts, int8_layers):
    d = make_report(EnginePlan.from_files(fixtures / graph)).to_dict()
    assert (d["layers"], d["reformat_counts"]) == (layers, counts)
    assert d["int8_share"]["layers"] * layers == pytest.approx(int8_layers)


def test_trt82_scale_layers_are_standalone_quantize(fixtures):
    plan = EnginePlan.from_files(fixtures / MBV2.format("8.2", "convonly"))
    scales = [x for x in plan.layers if x.type == "Scale"]
    assert len(scales) == 17 and all(x.is_standalone_qdq and not x.is_reformat for x in scales)
    entries = [e for e in engine_layers_summary(plan) if e.origin == "QDQ"]
    assert [e.name for e in entries] == [x.name for x in scales]
    assert {(e.layer_type, e.kind, e.input_precision, e.output_precision) for e in entries} == {
        ("Scale", "quantize", "FP32", "INT8")}
    assert entries[1].onnx_nodes == ("QuantizeLinear_98",)
    # The INT8->FP32 copies TensorRT 8.2 puts in front of a Scale-as-Q are layout reformats, not Q/DQ.
    assert "Reformatting CopyNode for Input Tensor 0 to QuantizeLinear_341" in [
        e.name for e in engine_layers_summary(plan) if e.origin == "REFORMAT"]


def test_scale_layer_that_is_not_a_conversion_is_not_qdq():
    layer = {"Name": "bn", "LayerType": "Scale", "Inputs": [{"Format/Datatype": "Row major linear FP32"}],
             "Outputs": [{"Format/Datatype": "Row major linear FP32"}]}
    assert not is_standalone_qdq(layer)
    assert is_standalone_qdq({**layer, "Outputs": [{"Format/Datatype": "Row major Int8 format"}]})
    assert not is_standalone_qdq({"Name": "r", "LayerType": "Reformat", "Origin": "REFORMAT"})


def test_compare_rows_count_trt82_scale_as_qdq(fixtures):
    p82 = EnginePlan.from_files(fixtures / MBV2.format("8.2", "convonly"))
    p84 = EnginePlan.from_files(fixtures / MBV2.format("8.4", "convonly"))
    r82, r84 = engine_row("8.2", p82), engine_row("8.4", p84)
    assert (r82.qdq_reformats, r82.layout_reformats, r84.qdq_reformats, r84.layout_reformats) == (17, 12, 17, 1)
    diff = diff_plans(p82, p84, label_a="8.2", label_b="8.4")
    # Same ONNX, same 17 standalone Qs in both builds: only 8.2's layout copies differ.
    assert diff.reformats_only_b == ()
    assert len(diff.reformats_only_a) == 11 and all(n.startswith("Reformatting CopyNode") for n in diff.reformats_only_a)
    assert diff.precision_changes == (("GlobalAveragePool_843", "FP32", "FP16"),)


def test_mobilenetv2_residual_q_costs_time(fixtures):
    """The 15 extra standalone Qs of the conv-only placement, measured: profiles and trtexec summaries."""
    def report(v):
        g = fixtures / MBV2.format("8.4", v)
        return make_report(EnginePlan.from_files(g, str(g).replace("graph.json", "profile.json")))

    conv, res = report("convonly"), report("residual")
    assert len(conv.qdq_unfused) - len(res.qdq_unfused) == 15
    assert sum(r.time_ms for r in conv.qdq_unfused) == pytest.approx(0.07847049)
    assert (conv.total_time_ms, res.total_time_ms) == (pytest.approx(0.47038876), pytest.approx(0.35592094))
    qps = {v: json.loads((fixtures / MBV2.format("8.4", v).replace("graph.json", "profile.metadata.json"))
                         .read_text())["performance_summary"]["Throughput"] for v in ("convonly", "residual")}
    assert qps == {"convonly": 2829.15, "residual": pytest.approx(3766, abs=1)}


def test_clone_suffix_names_the_onnx_quantize(tmp_path):
    assert onnx_qdq_name("QuantizeLinear_45_clone_1") == "QuantizeLinear_45"
    assert onnx_qdq_name("/model.2/cv1/act/QuantizeLinear") == "/model.2/cv1/act/QuantizeLinear"
    fmt32, fmt8 = "Row major linear FP32", "Four wide channel vectorized row major Int8 format"
    layers = [{"Name": f"QuantizeLinear_45_clone_{i}", "LayerType": "Reformat", "Origin": "QDQ",
               "Inputs": [{"Name": f"a{i}", "Format/Datatype": fmt32}],
               "Outputs": [{"Name": f"b{i}", "Format/Datatype": fmt8}]} for i in range(2)]
    path = tmp_path / "l.json"
    path.write_text(json.dumps({"Layers": layers, "Bindings": []}))
    entries = engine_layers_summary(EnginePlan.from_files(path))
    assert [(e.name, e.onnx_nodes, e.kind) for e in entries] == [
        ("QuantizeLinear_45_clone_0", ("QuantizeLinear_45",), "quantize"),
        ("QuantizeLinear_45_clone_1", ("QuantizeLinear_45",), "quantize")]
    assert make_report(EnginePlan.from_files(path)).reformat_counts["qdq"] == 2


def test_draw_highlights_trt82_scale_as_quantize(fixtures):
    import re

    from trtqat.trt.draw import render_svg

    svg = render_svg(EnginePlan.from_files(fixtures / MBV2.format("8.2", "convonly")))
    assert len(re.findall(r'stroke="#d62728" stroke-width="4"', svg)) == 17   # the Scale-as-Q layers
    assert len(re.findall(r'stroke="#ff7f0e" stroke-width="4"', svg)) == 12   # 8.2's layout copies
    assert "85 layers, 29 reformats" in svg
