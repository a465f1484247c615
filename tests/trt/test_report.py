"""Report, compare and draw on the fixtures, with exact numbers."""

from __future__ import annotations

import re

import pytest
from trt_fixtures import (
    CONVONLY_GRAPH,
    CONVONLY_PROFILE,
    MNIST10_GRAPH,
    MNIST10_LOG,
    QGAP_GRAPH,
    RESIDUAL_GRAPH,
)

from trtqat.trt.compare import diff_plans, engine_row
from trtqat.trt.draw import layout, render_svg
from trtqat.trt.engine import BenchResult
from trtqat.trt.log import parse_log
from trtqat.trt.plan import EnginePlan
from trtqat.trt.report import make_report


@pytest.fixture(scope="module")
def convonly(fixtures):
    return EnginePlan.from_files(fixtures / CONVONLY_GRAPH, fixtures / CONVONLY_PROFILE)


def test_convonly_report(convonly):
    rep = make_report(convonly, top=3)
    d = rep.to_dict()
    assert d["layers"] == 37
    assert d["reformat_counts"] == {"total": 12, "qdq": 10, "layout": 2, "other": 0}
    assert [(p["precision"], p["layers"]) for p in d["precision_mix"]] == [
        ("INT8", 22),
        ("FP16", 11),
        ("FP32", 4),
    ]
    times = {p["precision"]: p["time_ms"] for p in d["precision_mix"]}
    assert times == pytest.approx({"INT8": 0.710656, "FP16": 0.191488, "FP32": 0.193536})
    assert d["int8_share"]["layers"] == pytest.approx(22 / 37)
    assert d["int8_share"]["time"] == pytest.approx(0.710656 / 1.09568)
    assert d["reformat_time_ms"] == pytest.approx(0.278528)
    assert d["reformat_time_share"] == pytest.approx(0.278528 / 1.09568)  # ~25 % as SOURCES.md says
    assert len(d["qdq_unfused"]) == 10 and d["qdq_unfused"][0] == "QuantizeLinear_2"
    float_out = d["int8_convs_with_float_output"]
    assert len(float_out) == 13
    assert [x["output_precision"] for x in float_out].count("FP32") == 2  # conv1 and fc
    assert [(x["name"], x["time_ms"]) for x in d["top_layers"]] == [
        ("conv1.weight + QuantizeLinear_7 + Conv_9", 0.201728),
        ("MaxPool_12", 0.095232),
        ("QuantizeLinear_2", 0.06144),
    ]


@pytest.mark.parametrize(
    "graph,layers,qdq,layout,int8_layers,float_out",
    [(RESIDUAL_GRAPH, 26, 3, 0, 22, 2), (QGAP_GRAPH, 24, 1, 0, 22, 1), (MNIST10_GRAPH, 9, 0, 0, 0, 0)],
)
def test_reports_without_profile(fixtures, graph, layers, qdq, layout, int8_layers, float_out):
    rep = make_report(EnginePlan.from_files(fixtures / graph))
    d = rep.to_dict()
    assert (d["layers"], d["reformat_counts"]["qdq"], d["reformat_counts"]["layout"]) == (layers, qdq, layout)
    assert rep.share("INT8") * layers == pytest.approx(int8_layers)
    assert len(d["int8_convs_with_float_output"]) == float_out
    assert d["total_time_ms"] is None and d["int8_share"]["time"] is None and d["top_layers"] == []


def test_compare_rows_and_diff(fixtures, convonly):
    residual = EnginePlan.from_files(fixtures / RESIDUAL_GRAPH)
    bench = BenchResult(
        "a.engine", 32, "10.16.1", [], parse_log((fixtures / MNIST10_LOG).read_text()).summary
    )
    row = engine_row("convonly", convonly, bench)
    assert (
        row.qps,
        row.images_per_s,
        row.batch,
        row.layers,
        row.reformats,
        row.qdq_reformats,
        row.layout_reformats,
    ) == (15374.3, pytest.approx(15374.3 * 32), 32, 37, 12, 10, 2)
    assert (row.latency_median_ms, row.gpu_median_ms) == (0.0440674, 0.0361328)
    assert engine_row("residual", residual).qps is None
    diff = diff_plans(convonly, residual, label_a="convonly", label_b="residual")
    assert diff.reformats_only_b == ("DequantizeLinear_291", "QuantizeLinear_298")
    assert len(diff.reformats_only_a) == 11 and "QuantizeLinear_2" not in diff.reformats_only_a
    assert diff.precision_changes == (("MaxPool_12", "FP32", "INT8"),)  # MaxPool folded into INT8 ConvActPool
    assert (diff.layers_only_a, diff.layers_only_b) == (35, 24)


def test_svg_boxes_colours_and_highlights(convonly):
    svg = render_svg(convonly)
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert len(re.findall(r'<rect [^>]*rx="6"', svg)) == 37
    assert len(re.findall(r'stroke="#d62728" stroke-width="4"', svg)) == 10  # Q/DQ reformats
    assert len(re.findall(r'stroke="#ff7f0e" stroke-width="4"', svg)) == 2  # layout reformats
    assert svg.count('fill="#59a14f" fill-opacity') == 22  # INT8 boxes
    assert "<title>QuantizeLinear_2\nReformat" in svg


def test_layout_scales_to_hundreds_of_layers(convonly):
    # 10 engines' worth of layers chained: one row per depth, width bounded by the widest row
    import dataclasses

    from trtqat.trt.plan import Layer, Tensor

    layers = []
    for i in range(400):
        ins = (Tensor(f"t{i - 1}", (), "INT8"),) if i else ()
        if i % 10 == 5:
            ins += (Tensor(f"t{i - 5}", (), "FP16"),)
        layers.append(Layer(f"l{i}", "CaskConvolution", "INT8", ins, (Tensor(f"t{i}", (), "INT8"),)))
    lay = layout(dataclasses.replace(convonly, layers=tuple(layers)))
    assert len(lay.boxes) == 400 and len(lay.edges) == 399 + 40
    assert lay.width == 760 and lay.height > 400 * 46
