"""Builders of Q/DQ ONNX test models, from scratch with onnx.helper (no torch, no torchvision).

The ResNet18 mirrors what pytorch-quantization exports for torchvision's resnet18 at opset 13 (the
TREx example behind tests/fixtures/trtexec/trt8.4_a100_resnet18-qat-*): per-tensor Q->DQ on every
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
        elif act == "Relu6":  # torch exports ReLU6 as Clip(0, 6)
            lo = self.const(f"{name}_clip.min", np.array(0, np.float32))
            hi = self.const(f"{name}_clip.max", np.array(6, np.float32))
            y = self.node("Clip", [y, lo, hi], f"{name}_clip")
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


MOBILENET_VARIANTS = ("convonly", "residual")
#: torchvision MobileNetV2 inverted-residual settings: expansion t, channels c, repeats n, stride s.
_MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                  (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenetv2(variant: str, width: float = 0.25) -> onnx.ModelProto:
    """A QAT MobileNetV2 (torchvision layout, ReLU6 as Clip) with the Q/DQ placement of ``variant``.

    Mirrors the TREx MobileNetV2 engines (tests/fixtures/trtexec/trt8.*_titanrtx_mobilenetv2-qat-*):
    ``convonly`` is pytorch-quantization's default (Q/DQ on Conv/Gemm inputs and weights only);
    ``residual`` adds a Q/DQ on the identity input of every residual Add (``x + conv(x)``). Conv
    nodes are named after torchvision's modules (``features.3.conv.2`` = block 3's projection), so
    an engine layer ``features.3.conv.2.weight + ... + Conv_142 + Add_144`` maps to them by position.
    ``width`` scales the channel counts (1.0 = torchvision); placement does not depend on it.
    """
    assert variant in MOBILENET_VARIANTS
    b = QdqBuilder()

    def ch(c: int) -> int:
        return max(4, int(c * width))

    x = b.conv("input1", "features.0.0", 3, ch(32), 3, stride=2, act="Relu6")
    cin, idx = ch(32), 1
    for t, c, n, s in _MBV2_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            cout, hidden = ch(c), ch(32) * t if idx == 1 else cin * t
            k, y = 0, x
            if t != 1:
                y = b.conv(y, f"features.{idx}.conv.0.0", cin, hidden, 1, act="Relu6")
                k = 1
            dw = f"features.{idx}.conv.{k}.0" if t != 1 else f"features.{idx}.conv.0.0"
            y = b.conv(y, dw, hidden, hidden, 3, stride=stride, act="Relu6", group=hidden)
            y = b.conv(y, f"features.{idx}.conv.{k + 1}", hidden, cout, 1, act=None)
            if stride == 1 and cin == cout:
                skip = b.qdq(x, f"features.{idx}.skip") if variant == "residual" else x
                y = b.node("Add", [skip, y], f"features.{idx}.add")
            x, cin, idx = y, cout, idx + 1
    x = b.conv(x, "features.18.0", cin, ch(1280), 1, act="Relu6")
    x = b.node("GlobalAveragePool", [x], "gap")
    x = b.node("Flatten", [x], "flatten", axis=1)
    w = b.weight("classifier.1", (1000, ch(1280)))
    y = b.node("Gemm", [b.qdq(x, "classifier.1_in"), w, b.const("classifier.1.bias", np.zeros(1000, np.float32))],
               "classifier.1", transB=1)
    return b.model([("input1", [1, 3, 224, 224])], [(y, [1, 1000])])


#: Keras ResNet50 stacks: bottleneck filters, blocks, first stride.
_R50_STACKS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


def tf_resnet50(width: float = 0.125) -> onnx.ModelProto:
    """A Keras ResNet50 as NVIDIA tensorflow-quantization + tf2onnx export it (rebuilt, not copied).

    Mirrors tests/fixtures/trtexec/trt8.4_rtx3090_tf-resnet50-qat_best: NHWC input, ZeroPadding
    (``conv1_pad``) before the input Q/DQ, a Transpose to NCHW, BatchNorm folded into the convs
    (tf2onnx), ``pool1_pad`` + MaxPool, bottlenecks whose shortcut input of the Add carries its own
    Q/DQ (the toolkit's ResNet residual case: an equal-scale Q beside the next conv's Q on an
    identity shortcut), GlobalAveragePool with Q/DQ on its input, Squeeze, a quantized MatMul with a
    per-channel weight on axis 1 (TF (C, K) layout), bias Add and Softmax. Node names follow the
    Keras layer names (``conv2_block1_3_conv``).
    """
    b = QdqBuilder()

    def ch(c: int) -> int:
        return max(4, int(c * width))

    def conv(x: str, name: str, cin: int, cout: int, k: int, stride: int = 1, act: bool = True,
             pads: int | None = None) -> str:
        xin = b.qdq(x, f"{name}_in")
        w = b.weight(name, (cout, cin, k, k))
        bias = b.const(f"{name}.bias", np.zeros(cout, np.float32))
        p = k // 2 if pads is None else pads
        y = b.node("Conv", [xin, w, bias], name, kernel_shape=[k, k], strides=[stride, stride], pads=[p] * 4)
        return b.node("Relu", [y], f"{name}_relu") if act else y

    pad = b.const("conv1_pad.pads", np.array([0, 3, 3, 0, 0, 3, 3, 0], np.int64))
    x = b.node("Pad", ["input_1", pad], "conv1_pad")
    x = b.qdq(x, "conv1_in")
    x = b.node("Transpose", [x], "conv1_in_transpose", perm=[0, 3, 1, 2])
    w = b.weight("conv1_conv", (ch(64), 3, 7, 7))
    x = b.node("Conv", [x, w, b.const("conv1_conv.bias", np.zeros(ch(64), np.float32))], "conv1_conv",
               kernel_shape=[7, 7], strides=[2, 2], pads=[0] * 4)
    x = b.node("Relu", [x], "conv1_relu")
    x = b.node("Pad", [x, b.const("pool1_pad.pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))], "pool1_pad")
    x = b.node("MaxPool", [x], "pool1_pool", kernel_shape=[3, 3], strides=[2, 2])
    cin = ch(64)
    for stack, (f, blocks, stride1) in enumerate(_R50_STACKS, start=2):
        for i in range(1, blocks + 1):
            name = f"conv{stack}_block{i}"
            stride = stride1 if i == 1 else 1
            if i == 1:
                shortcut = conv(x, f"{name}_0_conv", cin, ch(4 * f), 1, stride=stride, act=False, pads=0)
            else:
                shortcut = x
            y = conv(x, f"{name}_1_conv", cin, ch(f), 1, stride=stride, pads=0)
            y = conv(y, f"{name}_2_conv", ch(f), ch(f), 3)
            y = conv(y, f"{name}_3_conv", ch(f), ch(4 * f), 1, act=False, pads=0)
            y = b.node("Add", [b.qdq(shortcut, f"{name}_add_shortcut"), y], f"{name}_add")
            x = b.node("Relu", [y], f"{name}_out")
            cin = ch(4 * f)
    x = b.node("GlobalAveragePool", [b.qdq(x, "avg_pool_in")], "avg_pool")
    x = b.node("Squeeze", [x, b.const("avg_pool_squeeze.axes", np.array([2, 3], np.int64))], "avg_pool_squeeze")
    w = b.weight("predictions", (cin, 1000), axis=1)
    y = b.node("MatMul", [b.qdq(x, "predictions_in"), w], "predictions_matmul")
    y = b.node("Add", [y, b.const("predictions.bias", np.zeros(1000, np.float32))], "predictions_bias")
    y = b.node("Softmax", [y], "predictions_softmax", axis=1)
    return b.model([("input_1", [32, 224, 224, 3])], [(y, [32, 1000])])
