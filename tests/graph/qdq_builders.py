"""Builders of Q/DQ ONNX test models, from scratch with onnx.helper (no torch, no torchvision).

The ResNet18 mirrors what pytorch-quantization exports for torchvision's resnet18 at opset 13 (the
TREx example behind shared/fixtures/trtexec/trt8.4_a100_resnet18-qat-*): per-tensor Q->DQ on every
Conv/Gemm activation input, per-channel (axis 0) Q->DQ on every weight, eval-mode BatchNorm kept.
Without calibration every quantizer reading one tensor gets the same scale, so scales are a pure
function of the tensor name here. Node names describe positions (``b3_conv1_in_q`` = the Q on the
input of block 3's first conv) so tests can compare with the engines by position.
"""
from __future__ import annotations

import zlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def scale_for(tensor: str) -> float:
    """A deterministic per-tensor activation scale (same tensor => same scale)."""
    return float(np.float32((1 + zlib.crc32(tensor.encode()) % 997 / 997.0) / 127.0))


class QdqBuilder:
    """Accumulates nodes and initializers; ``model()`` returns a checked ModelProto."""

    def __init__(self, shared_pairs: bool = False, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shared_pairs = shared_pairs
        self._pairs: dict[str, str] = {}
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> str:
        outs = [f"{name}_out{i}" if i else f"{name}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs[0]

    def qdq(self, x: str, name: str, scale: float | np.ndarray | None = None, axis: int | None = None,
            zero_point: np.ndarray | None = None) -> str:
        """Q->DQ on ``x``; per-tensor scale from :func:`scale_for` unless given."""
        if self.shared_pairs and axis is None and scale is None and x in self._pairs:
            return self._pairs[x]
        s = np.asarray(scale_for(x) if scale is None else scale, dtype=np.float32)
        zp = np.zeros(s.shape, np.int8) if zero_point is None else zero_point
        sc = self.const(f"{name}_scale", s)
        zpn = self.const(f"{name}_zp", zp)
        kw = {"axis": axis} if axis is not None else {}
        q = self.node("QuantizeLinear", [x, sc, zpn], f"{name}_q", **kw)
        out = self.node("DequantizeLinear", [q, sc, zpn], f"{name}_dq", **kw)
        if self.shared_pairs and axis is None and scale is None:
            self._pairs[x] = out
        return out

    def weight(self, name: str, shape: tuple[int, ...], axis: int = 0) -> str:
        w = self.const(f"{name}.weight", (self.rng.standard_normal(shape) * 0.05).astype(np.float32))
        amax = np.full(shape[axis], 0.2, np.float32)
        return self.qdq(w, f"{name}_w", scale=amax / 127.0, axis=axis)

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, quant: bool = True,
             bn: bool = True, act: str | None = "Relu", group: int = 1) -> str:
        xin = self.qdq(x, f"{name}_in") if quant else x
        w = self.weight(name, (cout, cin // group, k, k)) if quant else self.const(
            f"{name}.weight", np.zeros((cout, cin // group, k, k), np.float32))
        y = self.node("Conv", [xin, w], name, kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4, group=group)
        if bn:
            c = np.ones(cout, np.float32)
            y = self.node("BatchNormalization", [y, self.const(f"{name}_bn.g", c), self.const(f"{name}_bn.b", 0 * c),
                                                 self.const(f"{name}_bn.m", 0 * c), self.const(f"{name}_bn.v", c)],
                          f"{name}_bn")
        if act == "Relu":
            y = self.node("Relu", [y], f"{name}_relu")
        elif act == "SiLU":
            s = self.node("Sigmoid", [y], f"{name}_sig")
            y = self.node("Mul", [y, s], f"{name}_silu")
        return y

    def model(self, inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]],
              opset: int = 13, check: bool = True) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        if check:
            onnx.checker.check_model(model)
        return model


RESNET_VARIANTS = ("convonly", "residual", "residual-qgap")


def resnet18(variant: str, width: int = 8, shared_pairs: bool = False) -> onnx.ModelProto:
    """A QAT ResNet18 (torchvision layout) with the Q/DQ placement of ``variant``.

    Args:
        variant: ``convonly`` (Conv/Gemm inputs only), ``residual`` (plus the skip input of every Add),
            ``residual-qgap`` (plus the GlobalAveragePool input).
        width: channels of the first stage (64 in torchvision; smaller keeps tests fast).
        shared_pairs: one Q/DQ pair per quantized tensor, shared by all its consumers.
    """
    assert variant in RESNET_VARIANTS
    b = QdqBuilder(shared_pairs=shared_pairs)
    x = b.conv("input.1", "conv1", 3, width, 7, stride=2)
    x = b.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin, k = width, 0
    for stage, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for i in range(2):
            k += 1
            stride = 2 if stage > 0 and i == 0 else 1
            y = b.conv(x, f"b{k}_conv1", cin, cout, 3, stride=stride)
            y = b.conv(y, f"b{k}_conv2", cout, cout, 3, act=None)
            if stride == 2:
                skip = b.conv(x, f"b{k}_ds", cin, cout, 1, stride=2, act=None)
            else:
                skip = x
            if variant != "convonly":
                skip = b.qdq(skip, f"b{k}_skip")
            x = b.node("Relu", [b.node("Add", [y, skip], f"b{k}_add")], f"b{k}_relu2")
            cin = cout
    if variant == "residual-qgap":
        x = b.qdq(x, "gap_in")
    x = b.node("GlobalAveragePool", [x], "gap")
    x = b.node("Flatten", [x], "flatten", axis=1)
    xq = b.qdq(x, "fc_in")
    w = b.weight("fc", (1000, cin))
    y = b.node("Gemm", [xq, w, b.const("fc.bias", np.zeros(1000, np.float32))], "fc", transB=1)
    return b.model([("input.1", [32, 3, 224, 224])], [(y, [32, 1000])])
