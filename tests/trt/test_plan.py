"""EnginePlan parsing of every layer-info/profile fixture, and the defensive paths."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from trt_fixtures import (
    CONVONLY_GRAPH,
    CONVONLY_PROFILE,
    MNIST8_NAMES_ONLY,
    MNIST10_GRAPH,
    QGAP_GRAPH,
    RESIDUAL_GRAPH,
)

from trtqat.errors import InputError
from trtqat.trt.normalize import onnx_nodes_from_name, precision_of
from trtqat.trt.plan import EnginePlan, engine_layers_summary, resolve_plan_files

CONVONLY_QDQ = [
    "QuantizeLinear_2",
    "QuantizeLinear_15",
    "QuantizeLinear_40",
    "QuantizeLinear_65",
    "QuantizeLinear_101",
    "QuantizeLinear_126",
    "QuantizeLinear_162",
    "QuantizeLinear_187",
    "QuantizeLinear_223",
    "QuantizeLinear_250",
]


def test_convonly_with_profile(fixtures):
    plan = EnginePlan.from_files(fixtures / CONVONLY_GRAPH, fixtures / CONVONLY_PROFILE)
    assert len(plan.layers) == 37
    assert Counter(layer.type for layer in plan.layers) == {
        "CaskConvolution": 21,
        "Reformat": 12,
        "TiledPooling": 2,
        "NoOp": 2,
    }
    assert Counter(r.origin for r in plan.reformats) == {"QDQ": 10, "REFORMAT": 2}
    assert plan.bindings == ("input.1", "422")
    assert plan.profile_count == 1 and plan.unmatched_profile == ()
    assert all(layer.time_ms is not None for layer in plan.layers)
    assert plan.total_time_ms == pytest.approx(1.09568)
    first = plan.layers[0]
    assert (first.name, first.precision, first.output_precision, first.time_ms) == (
        "QuantizeLinear_2",
        "FP32",
        "INT8",
        0.06144,
    )
    assert first.inputs[0].dims == (32, 3, 224, 224) and first.inputs[0].format == "Row major linear FP32"
    residual_conv = plan.layer("layer1.0.conv2.weight + QuantizeLinear_32 + Conv_34 + Add_36 + Relu_37")
    assert [t.precision for t in residual_conv.inputs] == ["INT8", "FP16"]  # inputs[1] is the residual
    assert residual_conv.onnx_nodes == ("QuantizeLinear_32", "Conv_34", "Add_36", "Relu_37")


def test_engine_layers_summary_names_the_unfused_qdq_nodes(fixtures):
    entries = engine_layers_summary(EnginePlan.from_files(fixtures / CONVONLY_GRAPH))
    assert [e.name for e in entries if e.origin == "QDQ"] == CONVONLY_QDQ
    assert all(e.kind == "quantize" and e.onnx_nodes == (e.name,) for e in entries if e.origin == "QDQ")
    layout = [e for e in entries if e.origin == "REFORMAT"]
    assert [(e.input_precision, e.output_precision, e.onnx_nodes) for e in layout] == [
        ("FP32", "FP16", ()),
        ("FP16", "FP16", ()),
    ]
    assert layout[0].output_tensor == "inputs"


def test_residual_and_qgap(fixtures):
    residual = EnginePlan.from_files(fixtures / RESIDUAL_GRAPH)
    assert len(residual.layers) == 26
    assert [(e.name, e.kind) for e in engine_layers_summary(residual)] == [
        ("QuantizeLinear_2", "quantize"),
        ("DequantizeLinear_291", "dequantize"),
        ("QuantizeLinear_298", "quantize"),
    ]
    assert residual.layers[1].type == "ConvActPool"
    assert residual.layers[1].onnx_nodes == ("QuantizeLinear_7", "Conv_9", "MaxPool_12")
    qgap = EnginePlan.from_files(fixtures / QGAP_GRAPH)
    assert len(qgap.layers) == 24
    assert [e.name for e in engine_layers_summary(qgap)] == ["QuantizeLinear_2"]
    gap = next(layer for layer in qgap.layers if layer.type == "CudaPooling")
    assert (gap.precision, gap.output_precision) == ("INT8", "INT8")
    assert not residual.has_times and residual.total_time_ms is None


def test_trt10_schema(fixtures):
    plan = EnginePlan.from_files(fixtures / MNIST10_GRAPH)
    assert len(plan.layers) == 9
    assert Counter(layer.type for layer in plan.layers) == {
        "kgen": 4,
        "CaskConvolution": 2,
        "CaskPooling": 2,
        "gemm": 1,
    }
    assert plan.bindings == ("x", "y", "z") and plan.reformats == ()
    assert [layer.onnx_nodes for layer in plan.layers] == [
        ("node_conv2d", "node_relu"),
        ("node_max_pool2d",),
        ("node_conv2d_1", "node_relu_1"),
        ("node_max_pool2d_1",),
        ("node_linear", "node_relu_2"),
        ("node_linear_1",),
        ("node_linear_1", "node_softmax"),
        ("node_softmax", "node_argmax"),
        (),
    ]
    last = plan.layers[-1]
    assert (last.precision, last.output_precision, last.inputs[0].location) == ("INT32", "INT64", None)
    assert Counter(layer.precision for layer in plan.layers) == {"FP32": 8, "INT32": 1}


def test_trt11_io_tensors_replace_bindings(tmp_path):
    path = tmp_path / "l.json"
    path.write_text(
        json.dumps(
            {
                "Layers": [
                    {
                        "Name": "a",
                        "LayerType": "Reformat",
                        "Origin": "QDQ",
                        "Inputs": [{"Name": "x", "Format/Datatype": "Half"}],
                        "Outputs": [{"Name": "y", "Format/Datatype": "Int8"}],
                    }
                ],
                "I/O Tensors": [{"Name": "x", "IOMode": "Input"}, {"Name": "y", "IOMode": "Output"}],
            }
        )
    )
    plan = EnginePlan.from_files(path)
    assert plan.bindings == ("x", "y")
    assert engine_layers_summary(plan)[0].kind == "quantize"


def test_names_only_layer_info_says_how_to_rebuild(fixtures):
    with pytest.raises(InputError) as err:
        EnginePlan.from_files(fixtures / MNIST8_NAMES_ONLY)
    assert "has layer names only (12 layers)" in err.value.message
    assert "--profilingVerbosity=detailed" in err.value.hint


@pytest.mark.parametrize(
    "content,expected",
    [
        ("{not json", "is not valid JSON (line 1"),
        ('{"nodes": []}', "is not trtexec layer info (found keys ['nodes'])"),
        ("[1, 2]", "is not trtexec layer info (found a JSON list)"),
        (
            '[{"count": 1}, {"name": "a", "timeMs": 1, "averageMs": 1, "percentage": 100}]',
            "is an --exportProfile file, not layer info",
        ),
        ('{"Layers": [{"LayerType": "Reformat"}]}', 'layer 0 is not an object with a "Name"'),
    ],
)
def test_malformed_or_foreign_layer_info_names_the_file(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        EnginePlan.from_files(path)
    assert str(path) in err.value.message and expected in err.value.message


def test_profile_with_unescaped_names_is_parsed_defensively(fixtures, tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(
        '[\n  { "count" : 20 }\n'
        ', { "name" : "QuantizeLinear_2", "timeMs" : 2.0, "averageMs" : 0.1, "medianMs" : 0.1, '
        '"percentage" : 50 }\n'
        ', { "name" : "weird "quoted" \\name", "timeMs" : 2.0, "averageMs" : 0.1, '
        '"percentage" : 50 }\n]\n'
    )
    with pytest.raises(ValueError):
        json.loads(profile.read_text())
    plan = EnginePlan.from_files(fixtures / CONVONLY_GRAPH, profile)
    assert plan.profile_count == 20
    assert plan.layer("QuantizeLinear_2").time_ms == 0.1
    assert plan.unmatched_profile == ('weird "quoted" \\name',)


def test_profile_errors(fixtures, tmp_path):
    foreign = tmp_path / "p.json"
    foreign.write_text('[{"count": 1}, {"name": "nope", "timeMs": 1, "averageMs": 1, "percentage": 100}]')
    with pytest.raises(InputError, match="no layer of .* matches a layer of"):
        EnginePlan.from_files(fixtures / CONVONLY_GRAPH, foreign)
    garbage = tmp_path / "g.json"
    garbage.write_text("hello")
    with pytest.raises(InputError, match="is neither valid JSON nor a trtexec profile"):
        EnginePlan.from_files(fixtures / CONVONLY_GRAPH, garbage)
    with pytest.raises(InputError, match="is layer info, not an --exportProfile file"):
        EnginePlan.from_files(fixtures / CONVONLY_GRAPH, fixtures / CONVONLY_GRAPH)


def test_resolve_plan_files_next_to_engine(tmp_path, fixtures):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(InputError, match="no layer info next to .*m.engine: expected .*m.engine.graph.json"):
        resolve_plan_files(engine)
    (tmp_path / "m.engine.graph.json").write_text((fixtures / CONVONLY_GRAPH).read_text())
    assert resolve_plan_files(engine) == (tmp_path / "m.engine.graph.json", None)
    (tmp_path / "m.engine.profile.json").write_text((fixtures / CONVONLY_PROFILE).read_text())
    assert resolve_plan_files(engine)[1] == tmp_path / "m.engine.profile.json"
    assert resolve_plan_files(tmp_path / "m.engine.graph.json")[1] == tmp_path / "m.engine.profile.json"
    assert EnginePlan.from_engine(engine).has_times


@pytest.mark.parametrize(
    "fmt,expected",
    [
        ("Thirty-two wide channel vectorized row major Int8 format", "INT8"),
        ("Row major linear FP32", "FP32"),
        ("Channel major FP16 format where channel % 8 == 0", "FP16"),
        ("Float", "FP32"),
        ("Half", "FP16"),
        ("BFloat16", "BF16"),
        ("Int64", "INT64"),
        ("UInt8", "UINT8"),
        ("FP8", "FP8"),
        (None, None),
        ("Weird", None),
    ],
)
def test_precision_of(fmt, expected):
    assert precision_of(fmt) == expected


def test_onnx_nodes_from_fused_names():
    assert onnx_nodes_from_name("conv1.weight + QuantizeLinear_7 + Conv_9") == ("QuantizeLinear_7", "Conv_9")
    assert onnx_nodes_from_name("PWN(Sigmoid_3, Mul_4) + Conv_1") == ("Sigmoid_3", "Mul_4", "Conv_1")
    assert onnx_nodes_from_name("{ForeignNode[Conv_1...Concat_9]}") == ("Conv_1", "Concat_9")
    assert onnx_nodes_from_name("Reformatting CopyNode for Input Tensor 0 to fc.weight + Gemm_2") == ()
    assert onnx_nodes_from_name("MatMul + b3/read:0 + (Unnamed Layer* 21) [Shuffle] + add_2") == (
        "MatMul",
        "add_2",
    )
