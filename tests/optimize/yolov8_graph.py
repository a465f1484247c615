"""A YOLOv8/YOLO11-style float ONNX written from scratch (onnx.helper; no Ultralytics code, no torch).

The blocks as Ultralytics exports them: Conv = Conv + SiLU (Sigmoid, Mul); C2f = cv1 -> Split in two ->
n Bottlenecks (two convs, shortcut Add in the backbone) each reading the previous chunk -> Concat of all
chunks -> cv2; SPPF = cv1 -> three chained MaxPool 5x5 -> Concat -> cv2; PAN neck with nearest Resize and
Concat; anchor-free decoupled head per level (box branch: two 3x3 convs and a 1x1 conv to 4 x 16 DFL bins;
class branch: two 3x3 convs and a 1x1 conv to nc); DFL = Reshape, Transpose, Softmax, 1x1 conv with the
fixed weights 0..15; boxes decoded against constant anchor points (Sub/Add), classes through Sigmoid.

:data:`HEAD_FLOAT` names the convs Ultralytics keeps float (the head's output convs and the DFL conv).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REG_MAX = 16
NC = 4


class _B:
    def __init__(self, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.head_float: list[str] = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> list[str]:
        outs = [f"{name}_out{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs

    def conv(self, x: str, name: str, cin: int, cout: int, k: int = 1, s: int = 1, act: bool = True) -> str:
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        y = self.node("Conv", [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)], f"/{name}/conv/Conv",
                      kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)[0]
        if not act:
            return y
        sig = self.node("Sigmoid", [y], f"/{name}/act/Sigmoid")[0]
        return self.node("Mul", [y, sig], f"/{name}/act/Mul")[0]

    def c2f(self, x: str, name: str, cin: int, cout: int, n: int, shortcut: bool) -> str:
        c = cout // 2
        y = self.conv(x, f"{name}.cv1", cin, 2 * c)
        a, b = self.node("Split", [y, self.const(f"{name}.split", np.array([c, c], np.int64))], f"/{name}/Split",
                         n_out=2, axis=1)
        chunks = [a, b]
        for i in range(n):
            h = self.conv(chunks[-1], f"{name}.m.{i}.cv1", c, c, 3)
            h = self.conv(h, f"{name}.m.{i}.cv2", c, c, 3)
            if shortcut:
                h = self.node("Add", [chunks[-1], h], f"/{name}/m.{i}/Add")[0]
            chunks.append(h)
        cat = self.node("Concat", chunks, f"/{name}/Concat", axis=1)[0]
        return self.conv(cat, f"{name}.cv2", (2 + n) * c, cout)

    def sppf(self, x: str, name: str, cin: int, cout: int) -> str:
        c = cin // 2
        y = self.conv(x, f"{name}.cv1", cin, c)
        pools = [y]
        for i in range(3):
            pools.append(self.node("MaxPool", [pools[-1]], f"/{name}/m_{i}/MaxPool", kernel_shape=[5, 5],
                                   strides=[1, 1], pads=[2, 2, 2, 2])[0])
        cat = self.node("Concat", pools, f"/{name}/Concat", axis=1)[0]
        return self.conv(cat, f"{name}.cv2", 4 * c, cout)

    def up(self, x: str, name: str) -> str:
        scales = self.const(f"{name}.scales", np.array([1, 1, 2, 2], np.float32))
        return self.node("Resize", [x, "", scales], f"/{name}/Resize", mode="nearest")[0]

    def head_level(self, x: str, i: int, cin: int, c2: int, c3: int) -> tuple[str, str]:
        box = self.conv(self.conv(x, f"model.22.cv2.{i}.0", cin, c2, 3), f"model.22.cv2.{i}.1", c2, c2, 3)
        box = self.conv(box, f"model.22.cv2.{i}.2", c2, 4 * REG_MAX, 1, act=False)
        cls = self.conv(self.conv(x, f"model.22.cv3.{i}.0", cin, c3, 3), f"model.22.cv3.{i}.1", c3, c3, 3)
        cls = self.conv(cls, f"model.22.cv3.{i}.2", c3, NC, 1, act=False)
        self.head_float += [f"/model.22.cv2.{i}.2/conv/Conv", f"/model.22.cv3.{i}.2/conv/Conv"]
        return box, cls


def yolov8_float(size: int = 64, width: int = 8, seed: int = 0) -> tuple[onnx.ModelProto, list[str]]:
    """The float model (input ``images`` [1,3,size,size], output ``output0`` [1, 4 + NC, anchors]) and the
    names of the convs Ultralytics keeps float."""
    b = _B(seed)
    w = width
    x = b.conv("images", "model.0", 3, w, 3, 2)
    x = b.conv(x, "model.1", w, 2 * w, 3, 2)
    x = b.c2f(x, "model.2", 2 * w, 2 * w, 1, True)
    x = b.conv(x, "model.3", 2 * w, 4 * w, 3, 2)
    p3 = b.c2f(x, "model.4", 4 * w, 4 * w, 2, True)
    x = b.conv(p3, "model.5", 4 * w, 8 * w, 3, 2)
    p4 = b.c2f(x, "model.6", 8 * w, 8 * w, 2, True)
    x = b.conv(p4, "model.7", 8 * w, 8 * w, 3, 2)
    x = b.c2f(x, "model.8", 8 * w, 8 * w, 1, True)
    p5 = b.sppf(x, "model.9", 8 * w, 8 * w)
    x = b.node("Concat", [b.up(p5, "model.10"), p4], "/model.11/Concat", axis=1)[0]
    n4 = b.c2f(x, "model.12", 16 * w, 8 * w, 1, False)
    x = b.node("Concat", [b.up(n4, "model.13"), p3], "/model.14/Concat", axis=1)[0]
    o3 = b.c2f(x, "model.15", 12 * w, 4 * w, 1, False)
    x = b.node("Concat", [b.conv(o3, "model.16", 4 * w, 4 * w, 3, 2), n4], "/model.17/Concat", axis=1)[0]
    o4 = b.c2f(x, "model.18", 12 * w, 8 * w, 1, False)
    x = b.node("Concat", [b.conv(o4, "model.19", 8 * w, 8 * w, 3, 2), p5], "/model.20/Concat", axis=1)[0]
    o5 = b.c2f(x, "model.21", 16 * w, 8 * w, 1, False)
    boxes, classes, anchors = [], [], []
    for i, (feat, c, stride) in enumerate(((o3, 4 * w, 8), (o4, 8 * w, 16), (o5, 8 * w, 32))):
        box, cls = b.head_level(feat, i, c, 4 * w, 4 * w)
        n = (size // stride) ** 2
        boxes.append(b.node("Reshape", [box, b.const(f"r_box{i}", np.array([1, 4 * REG_MAX, n], np.int64))],
                            f"/model.22/Reshape_box{i}")[0])
        classes.append(b.node("Reshape", [cls, b.const(f"r_cls{i}", np.array([1, NC, n], np.int64))],
                              f"/model.22/Reshape_cls{i}")[0])
        g = np.arange(size // stride, dtype=np.float32) + 0.5
        yy, xx = np.meshgrid(g, g, indexing="ij")
        anchors.append(np.stack([xx.ravel(), yy.ravel()]) * stride)
    box = b.node("Concat", boxes, "/model.22/Concat_box", axis=2)[0]
    cls = b.node("Concat", classes, "/model.22/Concat_cls", axis=2)[0]
    a = sum(int(v.shape[1]) for v in anchors)
    # DFL: [1, 64, A] -> [1, 4, 16, A] -> [1, 16, 4, A] -> softmax over the bins -> 1x1 conv with weights 0..15
    d = b.node("Reshape", [box, b.const("r_dfl", np.array([1, 4, REG_MAX, a], np.int64))], "/model.22/dfl/Reshape")[0]
    d = b.node("Transpose", [d], "/model.22/dfl/Transpose", perm=[0, 2, 1, 3])[0]
    d = b.node("Softmax", [d], "/model.22/dfl/Softmax", axis=1)[0]
    dfl_w = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    d = b.node("Conv", [d, b.const("model.22.dfl.conv.weight", dfl_w)], "/model.22/dfl/conv/Conv",
               kernel_shape=[1, 1])[0]
    b.head_float.append("/model.22/dfl/conv/Conv")
    d = b.node("Reshape", [d, b.const("r_dist", np.array([1, 4, a], np.int64))], "/model.22/dfl/Reshape_1")[0]
    lt, rb = b.node("Split", [d, b.const("split_lt", np.array([2, 2], np.int64))], "/model.22/Split_dist", n_out=2,
                    axis=1)
    anchor = b.const("anchor_points", np.concatenate(anchors, axis=1)[None].astype(np.float32))
    x1y1 = b.node("Sub", [anchor, lt], "/model.22/Sub")[0]
    x2y2 = b.node("Add", [anchor, rb], "/model.22/Add")[0]
    c_xy = b.node("Div", [b.node("Add", [x1y1, x2y2], "/model.22/Add_1")[0], b.const("two", np.float32(2))],
                  "/model.22/Div")[0]
    wh = b.node("Sub", [x2y2, x1y1], "/model.22/Sub_1")[0]
    boxes_xywh = b.node("Concat", [c_xy, wh], "/model.22/Concat_xywh", axis=1)[0]
    scores = b.node("Sigmoid", [cls], "/model.22/Sigmoid")[0]
    out = b.node("Concat", [boxes_xywh, scores], "/model.22/Concat_out", axis=1)[0]
    b.nodes.append(helper.make_node("Identity", [out], ["output0"], name="/model.22/Identity_out"))
    graph = helper.make_graph(b.nodes, "yolov8_style",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + NC, a])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, list(b.head_float)
