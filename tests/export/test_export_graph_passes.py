"""The pure-ONNX passes of ``trtqat export``: cleanup (Identity on Q/DQ parameters, shapes), simplify, FP16."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_graphs import images, qdq_conv_model, run

from trtqat.graph.cleanup import cleanup_model, count_qdq, infer_and_check, output_shapes, simplify_model
from trtqat.graph.fp16 import convert_to_fp16


def _qdq_param_producers(model: onnx.ModelProto) -> set[str]:
    prod = {o: n.op_type for n in model.graph.node for o in n.output}
    return {prod.get(name, "initializer") for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") for name in n.input[1:]}


def test_cleanup_removes_identity_on_qdq_parameters_and_keeps_numbers():
    model = qdq_conv_model(identity_params=True)
    assert _qdq_param_producers(model) == {"Identity"}
    clean, report = cleanup_model(model, dynamic_batch=True)
    assert report.identities_removed == 8  # 4 Q/DQ nodes x (scale, zero point)
    assert _qdq_param_producers(clean) == {"initializer"}
    assert not any(n.op_type == "Identity" for n in clean.graph.node)
    assert count_qdq(clean) == (2, 2)
    x = images()
    np.testing.assert_array_equal(run(clean, x), run(qdq_conv_model(), x))


def test_cleanup_gives_concrete_output_shape_with_dynamic_batch():
    clean, _ = cleanup_model(qdq_conv_model(), dynamic_batch=True)
    assert output_shapes(clean) == {"output": ["batch", 2, 3, 16, 16]}
    assert run(clean, images(3)).shape == (3, 2, 3, 16, 16)
    static, _ = cleanup_model(qdq_conv_model(batch=1), dynamic_batch=False)
    assert output_shapes(static) == {"output": [1, 2, 3, 16, 16]}


def test_simplify_keeps_qdq():
    clean, _ = cleanup_model(qdq_conv_model(), dynamic_batch=True)
    slim = simplify_model(clean, dynamic_batch=True)
    assert count_qdq(slim) == (2, 2)
    assert output_shapes(slim)["output"][0] == "batch"
    x = images()
    np.testing.assert_allclose(run(slim, x), run(clean, x), rtol=0, atol=1e-6)


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {i.name: i.data_type for i in model.graph.initializer}
    for v in list(inferred.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        out[v.name] = v.type.tensor_type.elem_type
    return out


@pytest.mark.parametrize("opset", [13, 19])
def test_fp16_conversion_valid_runnable_and_close(opset):
    clean, _ = cleanup_model(qdq_conv_model(opset=opset), dynamic_batch=True)
    f16, report = convert_to_fp16(clean)
    f16 = infer_and_check(f16, dynamic_batch=True)
    onnx.checker.check_model(f16, full_check=True)
    types = _dtypes(f16)
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    # network I/O stays float32 under the same names
    assert types["images"] == F32 and types["output"] == F32
    assert output_shapes(f16) == {"output": ["batch", 2, 3, 16, 16]}
    dq_out = {n.output[0] for n in f16.graph.node if n.op_type == "DequantizeLinear"}
    int8_convs = [n for n in f16.graph.node if n.op_type == "Conv" and n.input[0] in dq_out]
    float_convs = [n for n in f16.graph.node if n.op_type == "Conv" and n.input[0] not in dq_out]
    assert int8_convs and float_convs
    # opset 19: everything FP16; below: the DQ->Conv fusion region stays exactly as the FP32 export
    conv_dtype = F16 if opset >= 19 else F32
    assert all(types[n.input[0]] == conv_dtype and types[n.input[1]] == conv_dtype for n in int8_convs)
    assert all(types[n.input[0]] == F16 and types[n.input[1]] == F16 for n in float_convs)
    resize = next(n for n in f16.graph.node if n.op_type == "Resize")
    assert types[resize.input[0]] == F16  # the float tail runs in FP16 either way
    assert types[resize.input[2]] == F32  # Resize scales are float32-only in ONNX
    qdq = [n for n in f16.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    want = F16 if opset >= 19 else F32
    assert {types[n.input[1]] for n in qdq} == {want}
    assert report.qdq_dtype == ("float16" if opset >= 19 else "float32")
    if opset >= 19:
        assert report.casts_added == 2  # images -> fp16, fp16 -> output
    else:  # one Cast into the float tail (after the INT8 conv), one back to the float32 output
        assert report.casts_added == 2
        casts = [n for n in f16.graph.node if n.op_type == "Cast"]
        assert not any(n.input[0] in {q.output[0] for q in qdq} for n in casts)  # no Cast right after a DQ
    x = images()
    ref, got = run(clean, x), run(f16, x)
    assert got.dtype == np.float32
    cos = float((ref.ravel() @ got.ravel()) / np.linalg.norm(ref) / np.linalg.norm(got))
    assert cos > 0.999


def test_dynamic_cleanup_takes_shape_reads_off_the_activations():
    """``Shape -> Gather(0)`` of a tensor whose dim 0 is the batch reads the network input instead (the Resize
    gave that tensor a symbol of its own, so only folding at two pinned batch sizes proves it); a static dim
    is a constant; dim 0 of a tensor that is not batch-major (``[B*96, 16]``) is left as it is."""
    from onnx import helper, numpy_helper

    model = qdq_conv_model()
    g = model.graph
    g.initializer.extend([numpy_helper.from_array(np.int64(1), "idx1"),
                          numpy_helper.from_array(np.array([-1, 16], np.int64), "flat_shape"),
                          numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    g.node.extend([
        helper.make_node("Gather", ["shp", "idx1"], ["ch"]),  # a static dim (6)
        helper.make_node("Unsqueeze", ["ch", "axes0"], ["ch1"]),
        helper.make_node("Concat", ["ch1", "minus1"], ["shape2"], axis=0),
        helper.make_node("Reshape", ["c2", "shape2"], ["by_channel"]),
        helper.make_node("Reshape", ["c2", "flat_shape"], ["flat"]),  # [B*96, 16]
        helper.make_node("Shape", ["flat"], ["flat_shp"]),
        helper.make_node("Gather", ["flat_shp", "idx0"], ["rows"]),
        helper.make_node("Unsqueeze", ["rows", "axes0"], ["rows1"]),
        helper.make_node("Concat", ["rows1", "minus1"], ["shape3"], axis=0),
        helper.make_node("Reshape", ["flat", "shape3"], ["flat2"]),
    ])
    g.output.extend([helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("by_channel", "flat2")])
    clean, report = cleanup_model(model, dynamic_batch=True)
    assert report.batch_shapes_rewired == 1
    shapes = {n.output[0]: n.input[0] for n in clean.graph.node if n.op_type == "Shape"}
    assert sorted(shapes.values()) == ["flat", "images"]  # the static read of c2 folded (here by shape inference)
    import onnxruntime as ort

    for batch in (1, 3):
        x = images(batch)
        got = ort.InferenceSession(clean.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
