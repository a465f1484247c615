"""Small hand-built ONNX graphs shaped like an exported YOLO (Q/DQ conv, float conv, Resize, head reshape)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def qdq_conv_model(*, opset: int = 13, identity_params: bool = False, batch: int | str = "batch") -> onnx.ModelProto:
    """images[B,3,8,8] -> Q/DQ -> Conv(Q/DQ weight, per-channel) -> SiLU -> Resize x2 -> float Conv ->
    Reshape [B, 2, 3, 16, 16] via Shape->Gather (like the detect head) -> output.

    ``identity_params`` routes every Q/DQ scale and zero point through an Identity node (the exporter
    pattern TensorRT 8.x rejects).
    """
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (6, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (6, 6, 1, 1)).astype(np.float32)
    inits = [_init("w1", w1), _init("b1", np.zeros(6, np.float32)), _init("w2", w2),
             _init("b2", rng.normal(0, 0.1, 6).astype(np.float32)),
             _init("a_scale", np.float32(1.0 / 127)), _init("a_zp", np.int8(0)),
             _init("w_scale", (np.abs(w1).reshape(6, -1).max(1) / 127).astype(np.float32)),
             _init("w_zp", np.zeros(6, np.int8)),
             _init("roi", np.zeros(0, np.float32)), _init("scales", np.array([1, 1, 2, 2], np.float32)),
             _init("idx0", np.int64(0)), _init("axes0", np.array([0], np.int64)),
             _init("tail", np.array([2, 3, 16, 16], np.int64))]
    nodes = []

    def param(name: str) -> str:
        if not identity_params:
            return name
        out = f"{name}_id{len(nodes)}"
        nodes.append(helper.make_node("Identity", [name], [out]))
        return out

    nodes += [
        helper.make_node("QuantizeLinear", ["images", param("a_scale"), param("a_zp")], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", param("a_scale"), param("a_zp")], ["xdq"]),
        helper.make_node("QuantizeLinear", ["w1", param("w_scale"), param("w_zp")], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", param("w_scale"), param("w_zp")], ["wdq"], axis=0),
        helper.make_node("Conv", ["xdq", "wdq", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c1"], ["s1"]),
        helper.make_node("Mul", ["c1", "s1"], ["a1"]),
        helper.make_node("Resize", ["a1", "roi", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["up", "w2", "b2"], ["c2"]),
        helper.make_node("Shape", ["c2"], ["shp"]),
        helper.make_node("Gather", ["shp", "idx0"], ["bs"]),
        helper.make_node("Unsqueeze", ["bs", "axes0"], ["bs1"]),
        helper.make_node("Concat", ["bs1", "tail"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["c2", "newshape"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset < 19 else 9
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"images": x})[0]


def images(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(1).random((batch, 3, 8, 8), dtype=np.float32)
