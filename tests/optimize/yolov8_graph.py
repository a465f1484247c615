"""A YOLOv8/YOLO11/YOLO26-style float ONNX written from scratch (onnx.helper; no Ultralytics code, no torch).

The blocks as Ultralytics exports them: Conv = Conv + SiLU (Sigmoid, Mul); C2f = cv1 -> Split in two ->
n Bottlenecks (two convs, shortcut Add in the backbone) each reading the previous chunk -> Concat of all
chunks -> cv2; SPPF = cv1 -> three chained MaxPool 5x5 -> Concat -> cv2; PAN neck with nearest Resize and
Concat; anchor-free decoupled head per level (box branch: two 3x3 convs and a 1x1 conv to 4 x 16 DFL bins;
class branch: two 3x3 convs and a 1x1 conv to nc); DFL = Reshape, Transpose, Softmax, 1x1 conv with the
fixed weights 0..15; boxes decoded against constant anchor points (Sub/Add), classes through Sigmoid.

``attention=True`` adds YOLO11's C2PSA after the SPPF as its ONNX export reads (after onnxslim): cv1 -> Split
in two -> PSABlock on the second half (Attention: qkv 1x1 conv -> Reshape to heads -> Split into q, k, v;
q scaled (Mul) and transposed, MatMul(q^T, k) -> Softmax -> Transpose -> MatMul(v, attn^T) -> Reshape, plus
the depthwise ``pe`` conv of v (Reshape) -> Add -> ``proj`` conv; then the block's two shortcut Adds around
attention and the FFN) -> Concat -> cv2. ``reg_max=1`` is YOLO26's head: the box branch writes the 4
distances directly, no DFL. ``end2end=K`` appends an NMS-free selection as YOLO26's end-to-end head exports
it: the best class score per anchor (ReduceMax), its top K (TopK), the boxes of those anchors
(GatherElements); output ``[1, K, 5]`` (box, score).

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

    def conv(self, x: str, name: str, cin: int, cout: int, k: int = 1, s: int = 1, act: bool = True,
             g: int = 1) -> str:
        w = (self.rng.standard_normal((cout, cin // g, k, k)) * np.sqrt(2.0 / (cin // g * k * k))).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        y = self.node("Conv", [x, self.const(f"{name}.weight", w), self.const(f"{name}.bias", b)], f"/{name}/conv/Conv",
                      kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, **({"group": g} if g > 1 else {}))[0]
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

    def attention(self, x: str, name: str, c: int, n: int, heads: int = 1) -> str:
        """Ultralytics' Attention (attn_ratio 0.5) on ``x`` [1, c, h, w] with ``n = h * w`` positions."""
        head_dim = c // heads
        key_dim = head_dim // 2
        qkv = self.conv(x, f"{name}.qkv", c, c + 2 * key_dim * heads, act=False)
        qkv = self.node("Reshape", [qkv, self.const(f"{name}.heads", np.array([1, heads, 2 * key_dim + head_dim, n],
                                                                              np.int64))], f"/{name}/Reshape")[0]
        q, k, v = self.node("Split", [qkv, self.const(f"{name}.qkv_split", np.array([key_dim, key_dim, head_dim],
                                                                                    np.int64))],
                            f"/{name}/Split", n_out=3, axis=2)
        q = self.node("Mul", [q, self.const(f"{name}.scale", np.float32(key_dim ** -0.5))], f"/{name}/Mul")[0]
        q = self.node("Transpose", [q], f"/{name}/Transpose", perm=[0, 1, 3, 2])[0]
        attn = self.node("MatMul", [q, k], f"/{name}/MatMul")[0]
        attn = self.node("Softmax", [attn], f"/{name}/Softmax", axis=-1)[0]
        attn = self.node("Transpose", [attn], f"/{name}/Transpose_1", perm=[0, 1, 3, 2])[0]
        side = int(round(n ** 0.5))
        image = self.const(f"{name}.image", np.array([1, c, side, side], np.int64))
        out = self.node("Reshape", [self.node("MatMul", [v, attn], f"/{name}/MatMul_1")[0], image],
                        f"/{name}/Reshape_1")[0]
        pe = self.conv(self.node("Reshape", [v, image], f"/{name}/Reshape_2")[0], f"{name}.pe", c, c, 3, act=False,
                       g=c)
        return self.conv(self.node("Add", [out, pe], f"/{name}/Add")[0], f"{name}.proj", c, c, act=False)

    def c2psa(self, x: str, name: str, c1: int, n: int) -> str:
        """C2PSA with one PSABlock (shortcut Adds around attention and the FFN)."""
        c = c1 // 2
        y = self.conv(x, f"{name}.cv1", c1, 2 * c)
        a, b = self.node("Split", [y, self.const(f"{name}.split", np.array([c, c], np.int64))], f"/{name}/Split",
                         n_out=2, axis=1)
        b = self.node("Add", [b, self.attention(b, f"{name}.m.0.attn", c, n)], f"/{name}/m.0/Add")[0]
        ffn = self.conv(self.conv(b, f"{name}.m.0.ffn.0", c, 2 * c), f"{name}.m.0.ffn.1", 2 * c, c, act=False)
        b = self.node("Add", [b, ffn], f"/{name}/m.0/Add_1")[0]
        return self.conv(self.node("Concat", [a, b], f"/{name}/Concat", axis=1)[0], f"{name}.cv2", 2 * c, c1)

    def up(self, x: str, name: str) -> str:
        scales = self.const(f"{name}.scales", np.array([1, 1, 2, 2], np.float32))
        return self.node("Resize", [x, "", scales], f"/{name}/Resize", mode="nearest")[0]

    def head_level(self, x: str, i: int, cin: int, c2: int, c3: int, reg_max: int = REG_MAX) -> tuple[str, str]:
        box = self.conv(self.conv(x, f"model.22.cv2.{i}.0", cin, c2, 3), f"model.22.cv2.{i}.1", c2, c2, 3)
        box = self.conv(box, f"model.22.cv2.{i}.2", c2, 4 * reg_max, 1, act=False)
        cls = self.conv(self.conv(x, f"model.22.cv3.{i}.0", cin, c3, 3), f"model.22.cv3.{i}.1", c3, c3, 3)
        cls = self.conv(cls, f"model.22.cv3.{i}.2", c3, NC, 1, act=False)
        self.head_float += [f"/model.22.cv2.{i}.2/conv/Conv", f"/model.22.cv3.{i}.2/conv/Conv"]
        return box, cls


def yolov8_float(size: int = 64, width: int = 8, seed: int = 0, *, attention: bool = False, reg_max: int = REG_MAX,
                 end2end: int = 0) -> tuple[onnx.ModelProto, list[str]]:
    """The float model (input ``images`` [1,3,size,size], output ``output0`` [1, 4 + NC, anchors]) and the
    names of the convs Ultralytics keeps float; ``attention``: a C2PSA after the SPPF (YOLO11, YOLO26);
    ``reg_max=1``: YOLO26's head, without DFL; ``end2end=K``: the top-K selection, output [1, K, 5]."""
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
    if attention:
        p5 = b.c2psa(p5, "model.10", 8 * w, (size // 32) ** 2)
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
        box, cls = b.head_level(feat, i, c, 4 * w, 4 * w, reg_max)
        n = (size // stride) ** 2
        boxes.append(b.node("Reshape", [box, b.const(f"r_box{i}", np.array([1, 4 * reg_max, n], np.int64))],
                            f"/model.22/Reshape_box{i}")[0])
        classes.append(b.node("Reshape", [cls, b.const(f"r_cls{i}", np.array([1, NC, n], np.int64))],
                              f"/model.22/Reshape_cls{i}")[0])
        g = np.arange(size // stride, dtype=np.float32) + 0.5
        yy, xx = np.meshgrid(g, g, indexing="ij")
        anchors.append(np.stack([xx.ravel(), yy.ravel()]) * stride)
    box = b.node("Concat", boxes, "/model.22/Concat_box", axis=2)[0]
    cls = b.node("Concat", classes, "/model.22/Concat_cls", axis=2)[0]
    a = sum(int(v.shape[1]) for v in anchors)
    d = box if reg_max == 1 else _dfl(b, box, a)
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
    out_shape = [1, 4 + NC, a]
    if end2end:
        out, out_shape = _top_k(b, out, end2end), [1, end2end, 5]
    b.nodes.append(helper.make_node("Identity", [out], ["output0"], name="/model.22/Identity_out"))
    graph = helper.make_graph(b.nodes, "yolo11_style" if attention else "yolov8_style",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, list(b.head_float)


def _dfl(b: _B, box: str, a: int) -> str:
    """DFL: [1, 64, A] -> [1, 4, 16, A] -> [1, 16, 4, A] -> softmax over the bins -> 1x1 conv with weights
    0..15 -> [1, 4, A]."""
    d = b.node("Reshape", [box, b.const("r_dfl", np.array([1, 4, REG_MAX, a], np.int64))], "/model.22/dfl/Reshape")[0]
    d = b.node("Transpose", [d], "/model.22/dfl/Transpose", perm=[0, 2, 1, 3])[0]
    d = b.node("Softmax", [d], "/model.22/dfl/Softmax", axis=1)[0]
    dfl_w = np.arange(REG_MAX, dtype=np.float32).reshape(1, REG_MAX, 1, 1)
    d = b.node("Conv", [d, b.const("model.22.dfl.conv.weight", dfl_w)], "/model.22/dfl/conv/Conv",
               kernel_shape=[1, 1])[0]
    b.head_float.append("/model.22/dfl/conv/Conv")
    return b.node("Reshape", [d, b.const("r_dist", np.array([1, 4, a], np.int64))], "/model.22/dfl/Reshape_1")[0]


def _top_k(b: _B, out: str, k: int) -> str:
    """[1, 4 + NC, A] -> the K anchors of the highest class scores: [1, K, 5] (box, score)."""
    t = b.node("Transpose", [out], "/model.22/Transpose_e2e", perm=[0, 2, 1])[0]
    boxes, scores = b.node("Split", [t, b.const("split_e2e", np.array([4, NC], np.int64))], "/model.22/Split_e2e",
                           n_out=2, axis=2)
    best = b.node("ReduceMax", [scores], "/model.22/ReduceMax", axes=[-1], keepdims=0)[0]
    vals, idx = b.node("TopK", [best, b.const("k", np.array([k], np.int64))], "/model.22/TopK", n_out=2, axis=1)
    idx = b.node("Unsqueeze", [idx, b.const("axis2", np.array([2], np.int64))], "/model.22/Unsqueeze")[0]
    idx = b.node("Expand", [idx, b.const("box_shape", np.array([1, k, 4], np.int64))], "/model.22/Expand")[0]
    picked = b.node("GatherElements", [boxes, idx], "/model.22/GatherElements", axis=1)[0]
    vals = b.node("Unsqueeze", [vals, b.const("axis2_v", np.array([2], np.int64))], "/model.22/Unsqueeze_1")[0]
    return b.node("Concat", [picked, vals], "/model.22/Concat_e2e", axis=2)[0]
