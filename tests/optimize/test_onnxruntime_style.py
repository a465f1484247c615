"""``optimize`` on onnxruntime's QDQ format, produced here by the real ``onnxruntime.quantization.quantize_static``
on the YOLOv8-style float graph (C2f Split/Concat, SPPF, decoupled head, DFL), called as Ultralytics'
``export(format="onnx", quantize=8)`` calls it (every node but Conv/Gemm/MatMul excluded), with its defaults
(asymmetric activations) and with symmetric settings, per tensor and per channel; also with nothing excluded.

After ``optimize`` (with ``--calib`` where the activations are asymmetric) the graph is TensorRT's pattern:
lint predicts only the network-input Quantize, no zero point is left that is not an int8 0, no int32 bias
DQ and no DQ in front of a SiLU; the head's box and class output convs and the DFL are float; the outputs
are closer to the float model's than the input's were (at most 1.5x its error). Without data, asymmetric
activations are refused with one line naming both fixes.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from optimize_helpers import noise_batches
from yolov8_graph import REG_MAX, yolov8_float

from trtqat.calib.ort_collect import run_outputs
from trtqat.cli import main
from trtqat.errors import InputError
from trtqat.graph.lint import lint_model
from trtqat.graph.normalize_qdq import normalize_qdq
from trtqat.graph.qdq import constant_value, dq_input_of, graph_from_model, is_dq, is_q, read_qparams
from trtqat.optimize import OptimizeConfig, optimize_model

SYMMETRIC = {"ActivationSymmetric": True, "WeightSymmetric": True}
#: quantize_static keyword arguments per variant (``"all"``: no node excluded)
VARIANTS = {
    "default": {},
    "default-uint8": {"activation_type": "QUInt8"},
    "symmetric": {"extra_options": SYMMETRIC},
    "symmetric-per-channel": {"extra_options": SYMMETRIC, "per_channel": True},
    "symmetric-uint8": {"extra_options": SYMMETRIC, "activation_type": "QUInt8"},
    "default-all-nodes": {"all": True},
}


@pytest.fixture(scope="module")
def ort_models(tmp_path_factory):
    """``variant -> quantized ModelProto`` (cached), plus ``"float"`` and ``"head"`` (the names of the convs
    Ultralytics keeps float: box/class output convs and the DFL)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    root = tmp_path_factory.mktemp("ort")
    model, head = yolov8_float()
    onnx.save(model, str(root / "float.onnx"))
    cache: dict = {"float": model, "head": head}
    attn, attn_head = yolov8_float(attention=True)  # YOLO11-style: C2PSA attention after the SPPF
    onnx.save(attn, str(root / "float_attention.onnx"))
    cache.update({"float_attention": attn, "head_attention": attn_head})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(noise_batches())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    def get(variant: str, arch: str = "") -> onnx.ModelProto:
        """``arch``: "" (the YOLOv8-style graph) or "attention" (the YOLO11-style one)."""
        key = f"{variant}_{arch}" if arch else variant
        if key not in cache:
            kw = dict(VARIANTS[variant])
            src = cache[f"float_{arch}" if arch else "float"]
            exclude = [] if kw.pop("all", False) else [n.name for n in src.graph.node
                                                        if n.op_type not in ("Conv", "Gemm", "MatMul")]
            if "activation_type" in kw:
                kw["activation_type"] = getattr(QuantType, kw["activation_type"])
            dst = root / f"{key}.onnx"
            quantize_static(str(root / (f"float_{arch}.onnx" if arch else "float.onnx")), str(dst), Reader(),
                            nodes_to_exclude=exclude, **kw)
            cache[key] = onnx.load(str(dst))
        return cache[key]

    cache["get"] = get
    return cache


def _rel_errors(model, reference, batch) -> tuple[float, float]:
    """Relative L2 error of the boxes and of the class scores against ``reference``."""
    out = run_outputs(model, batch)["output0"]
    rel = [float(np.linalg.norm(out[:, s] - reference[:, s]) / np.linalg.norm(reference[:, s]))
           for s in (slice(0, 4), slice(4, None))]
    return rel[0], rel[1]


@pytest.mark.parametrize("variant,calib", [("default", True), ("default-uint8", True), ("symmetric", False),
                                           ("symmetric", True), ("symmetric-per-channel", False),
                                           ("symmetric-uint8", False), ("default-all-nodes", True)])
def test_tensorrt_pattern_after_optimize(ort_models, variant, calib):
    model = onnx.ModelProto()
    model.CopyFrom(ort_models["get"](variant))
    onnx.helper.set_model_props(model, {"task": "detect", "stride": "32"})  # as Ultralytics' exporter writes
    before = lint_model(model).summary
    assert before["standalone_qdq"] > 50 or before["parse_errors"], before
    out, report = optimize_model(model, OptimizeConfig(), calib=noise_batches() if calib else None)
    onnx.checker.check_model(out)
    assert report.family_from == "metadata" and {p.key: p.value for p in out.metadata_props}["task"] == "detect"
    n = report.normalize
    assert n.onnxruntime_style and n.bias_dq_folded > 0 and n.float_readers_rewired > 0
    assert (n.zero_points_shifted > 0) == (variant == "symmetric-uint8")
    assert bool(n.asymmetric) == variant.startswith("default")
    summary = lint_model(out).summary
    assert summary["standalone_qdq"] == 1 and not summary["parse_errors"], summary
    graph = graph_from_model(out)
    for node in (x for x in graph.nodes if is_q(x) or is_dq(x)):  # symmetric int8 only
        zp = read_qparams(node).zero_point
        assert zp is None or (zp.dtype == np.int8 and not np.any(zp)), node.name
        data = constant_value(node.inputs[0])
        assert data is None or data.dtype != np.int32, node.name  # no int32 bias DQ
    for conv in (x for x in graph.nodes if x.op == "Conv" and len(x.inputs) > 2):  # float biases
        assert isinstance(conv.inputs[2], gs.Constant) and conv.inputs[2].values.dtype == np.float32, conv.name
    for sig in (x for x in graph.nodes if x.op == "Sigmoid"):  # nothing between a conv and its SiLU
        assert not is_dq(sig.inputs[0].inputs[0]), sig.name
    nodes = {x.name: x for x in graph.nodes}
    for name in ort_models["head"]:  # box and class output convs and the DFL: float input and weights
        conv = nodes[name]
        assert dq_input_of(conv, 0) is None and dq_input_of(conv, 1) is None, name
    dfl = nodes["/model.22/dfl/conv/Conv"]
    np.testing.assert_array_equal(constant_value(dfl.inputs[1]).reshape(-1), np.arange(REG_MAX))
    assert sorted(h.kind for h in report.head if h.floated) == ["dfl"] + ["output"] * 6
    if n.asymmetric:  # every asymmetric scale was derived again from the data, none kept as a placeholder
        groups = {q: g for g in report.groups for q in g.q_nodes}
        assert all(groups[q].source.startswith("calib:") for q in n.asymmetric if q in groups)
        assert {q for q in n.asymmetric if q in nodes} <= set(groups)
    batch = np.concatenate(noise_batches())
    reference = run_outputs(ort_models["float"], batch)["output0"]
    for err_in, err_out in zip(_rel_errors(model, reference, batch), _rel_errors(out, reference, batch)):
        assert err_out <= max(1.5 * err_in, 1e-4), (err_in, err_out)
    again, second = optimize_model(out, OptimizeConfig())  # idempotent, and TensorRT-style now
    assert not second.normalize.onnxruntime_style and not second.inserted and not second.head
    assert sum(g.changed for g in second.groups) == 0


@pytest.mark.parametrize("variant,calib", [("default", True), ("symmetric", False)])
def test_attention_block_after_optimize(ort_models, variant, calib):
    """YOLO11's C2PSA as onnxruntime quantizes it (both attention MatMuls' inputs, the qkv/pe/proj convs):
    after optimize the MatMul-side addend of ``attn @ v + pe(v)`` is quantized with v's scale (no data
    needed: a softmax-weighted average of v stays within v's range), so the pe conv + Add writes INT8 for
    proj and only the network-input Quantize is left."""
    model = ort_models["get"](variant, "attention")
    out, report = optimize_model(model, OptimizeConfig(), calib=noise_batches() if calib else None)
    onnx.checker.check_model(out)
    assert (report.family, report.version) == ("ultralytics", "11")
    summary = lint_model(out).summary
    assert summary["standalone_qdq"] == 1 and summary["standalone_by_rule"] == {"LINT001": 1}, summary
    attn = [i for i in report.inserted if i.node == "/model.10.m.0.attn/Add"]
    assert len(attn) == 1 and attn[0].kind == "residual-add" and attn[0].tensor == "/model.10.m.0.attn/Reshape_1_out0"
    assert not attn[0].needs_data and not report.suggested
    graph = graph_from_model(out)
    nodes = {x.name: x for x in graph.nodes}
    for name in ort_models["head_attention"]:  # head output convs and DFL float
        assert dq_input_of(nodes[name], 0) is None and dq_input_of(nodes[name], 1) is None, name
    batch = np.concatenate(noise_batches())
    reference = run_outputs(ort_models["float_attention"], batch)["output0"]
    for err_in, err_out in zip(_rel_errors(model, reference, batch), _rel_errors(out, reference, batch)):
        assert err_out <= max(1.5 * err_in, 1e-4), (err_in, err_out)


@pytest.mark.parametrize("variant", ["default", "default-uint8"])
def test_asymmetric_refused_without_data(ort_models, variant):
    with pytest.raises(InputError) as err:
        optimize_model(ort_models["get"](variant), OptimizeConfig())
    line = err.value.one_line()
    assert "\n" not in line and "asymmetric" in line and "--calib DIR" in line
    assert 'extra_options={"ActivationSymmetric": True, "WeightSymmetric": True}' in line


def test_asymmetric_refused_on_the_command_line(ort_models, tmp_path):
    src, out = tmp_path / "in.onnx", tmp_path / "out.onnx"
    onnx.save(ort_models["get"]("default"), str(src))
    res = CliRunner().invoke(main, ["optimize", str(src), "--save", str(out)])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "--calib DIR" in lines[0], res.output
    assert not out.exists()


def _exact_model() -> onnx.ModelProto:
    """x -> Q/DQ (uint8, zero point 128) -> Conv(W: uint8 initializer with zero point 128, bias: int32 DQ);
    and the same input through a second conv whose weights are asymmetric (uint8, zero point 100)."""
    rng = np.random.default_rng(0)
    s_x, s_w = np.float32(0.02), np.float32(0.01)
    w_sym = rng.integers(28, 229, size=(4, 3, 3, 3)).astype(np.uint8)  # 128 +- 100
    w_asym = rng.integers(0, 256, size=(4, 3, 1, 1)).astype(np.uint8)
    inits = [numpy_helper.from_array(v, k) for k, v in {
        "s_x": s_x, "zp_x": np.uint8(128), "s_w": s_w, "zp_w": np.uint8(128), "w": w_sym,
        "s_b": np.float32(s_x * s_w), "zp_b": np.int32(0), "b": rng.integers(-500, 500, 4).astype(np.int32),
        "w2": w_asym, "zp_w2": np.uint8(100)}.items()]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "zp_x"], ["xq"], name="q_x"),
             helper.make_node("DequantizeLinear", ["xq", "s_x", "zp_x"], ["xd"], name="dq_x"),
             helper.make_node("DequantizeLinear", ["w", "s_w", "zp_w"], ["wd"], name="dq_w"),
             helper.make_node("DequantizeLinear", ["b", "s_b", "zp_b"], ["bd"], name="dq_b"),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["w2", "s_w", "zp_w2"], ["w2d"], name="dq_w2"),
             helper.make_node("Conv", ["xd", "w2d"], ["y2"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8]),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_zero_points_shifted_exactly_and_asymmetric_weights_requantized():
    model = _exact_model()
    graph = graph_from_model(onnx.shape_inference.infer_shapes(model))
    report = normalize_qdq(graph)
    assert (report.zero_points_shifted, report.weights_shifted, report.weights_requantized) == (1, 1, 1)
    assert report.bias_dq_folded == 1 and report.onnxruntime_style and not report.asymmetric
    for node in (x for x in graph.nodes if is_q(x) or is_dq(x)):
        zp = read_qparams(node).zero_point
        assert zp.dtype == np.int8 and not np.any(zp), node.name
    conv2 = next(x for x in graph.nodes if x.name == "conv2")
    w2 = dq_input_of(conv2, 1)
    assert w2.attrs["axis"] == 0 and read_qparams(w2).scale.shape == (4,)  # per output channel now
    out = gs.export_onnx(graph)
    onnx.checker.check_model(out)
    x = np.random.default_rng(1).uniform(-2, 2, (1, 3, 8, 8)).astype(np.float32)
    before, after = run_outputs(model, x), run_outputs(out, x)
    np.testing.assert_allclose(after["y"], before["y"], rtol=1e-6, atol=1e-6)  # the shifts change no value
    # y2: weights on a new symmetric grid (per channel); each of the 3 products moves by at most
    # |x| * scale / 2, |x| <= 2.56 (the input's int8 range)
    bound = 3 * 2.56 * float(read_qparams(w2).scale.max()) / 2
    assert float(np.abs(after["y2"] - before["y2"]).max()) <= bound


@pytest.mark.parametrize("style", ["pq", "modelopt-onnx", "modelopt-torch"])
def test_tensorrt_style_exports_are_not_taken_for_onnxruntime(family_onnx, style):
    """The onnxruntime step changes nothing in TensorRT-style exports (YOLOv5 fixture)."""
    from foreign_styles import modelopt_onnx, modelopt_torch

    d = family_onnx("yolov5")
    float_model = onnx.load(str(d["float"]))
    model = {"pq": lambda: onnx.load(str(d["pq"])), "modelopt-onnx": lambda: modelopt_onnx(float_model, d["amax"]),
             "modelopt-torch": lambda: modelopt_torch(float_model, d["amax"])}[style]()
    report = normalize_qdq(graph_from_model(onnx.shape_inference.infer_shapes(model)))
    assert not report.onnxruntime_style and not report.asymmetric
    assert report.float_readers_rewired == report.bias_dq_folded == report.constant_dq_folded == 0
    assert report.weights_shifted == report.weights_requantized == report.zero_points_shifted == 0
