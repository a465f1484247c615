"""Keep the detect head's output convs float in any Q/DQ ONNX, as trtqat's rules do (pure ONNX).

Why: trtqat's policies keep the convs that write the box and score logits float (``ignore_detect_outputs``,
rules/default.yaml): their outputs are the network's answer, the int8 rounding of their input and weights
lands on it unfiltered, and they are about 1 % of the MACs. Exporters that quantize every conv (ModelOpt's
ONNX PTQ and torch paths: 100 % of MACs INT8) quantize them too. On the trained YOLOv7 in the ModelOpt
torch style (max calibration) that alone cost 3.4 mAP points: with these three convs float the same model
read 55.4, level with float (README, optimize accuracy).

Which convs: the head outputs, found from the structure, not from names: a Conv with a quantized input
from which no other Conv/ConvTranspose/Gemm/MatMul and no Quantize is reachable (only decoding follows).
The anchor-free head's DFL (Ultralytics YOLOv8/YOLO11: a Softmax over the box bins integrated by a fixed
1x1 conv with weights ``0..R-1``, recognised by :func:`trtqat.graph.family_detect.is_dfl`) is decoding,
not a learned layer: it is made float first (its weights restored to exactly ``0..R-1`` when an exporter
quantized them), and the box convs that feed it count as head outputs like the class convs. That is the
rule trtqat's own policy applies on the torch side (``rules/ultralytics.yaml``: ``cv2.*.2``, ``cv3.*.2``
and ``dfl`` float; YOLO26 has no DFL, and its one-to-one branches end the graph the same way).
One is made float only where that costs no standalone Q/DQ and leaves it really float: its input's
Quantize serves only head convs, and the tensor it quantizes is not INT8 anyway (a DQ that TensorRT
would move forward through Concat, MaxPool or another data-movement op into the conv). A head conv whose
input a quantized layer reads as well keeps its INT8 input and weights (a float reader there leaves a
standalone Quantize; it is the yolov5 policy's TQ007 ``quantize-input`` placement) and is listed as kept,
with the reason. ``ignore_detect_outputs: false`` in a rules file turns this off, DFL included.

Decoding after the last learned layer (box arithmetic, and in end-to-end heads such as YOLO26's
``end2end`` the top-k selection: ReduceMax, TopK, GatherElements) is float in trtqat's own export; an
exporter that quantizes tensors there (ModelOpt's ONNX PTQ puts Q/DQ in front of the TopK nodes) adds int8
rounding to the scores it ranks and, since no INT8 layer reads them, a standalone Quantize and Dequantize
each (lint LINT007/LINT002). Such pairs, activation Q/DQ from which no learned layer is reachable and to
which one leads, are removed first (kind ``decode`` in the report); otherwise they would also hide the
head's last convs, which only decoding follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from .family_detect import is_dfl
from .normalize_qdq import is_activation_q
from .optable import behaviour
from .policy import Policy
from .qdq import constant_value, consumer_map, dq_input_of, is_dq, is_q, producer_map, q_of, replace_uses
from .strip_qdq import float_source

#: ops whose presence downstream means a conv is not a head output (learned layers)
LEARNED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class HeadConv:
    """A detect output conv or DFL conv that had a quantized input or weights: made float, or kept INT8 and
    why. ``kind``: ``output`` (the last conv of a box or class branch), ``dfl``, or ``decode`` (then ``node``
    is a Quantize in the decoding whose Q/DQ pair was removed)."""

    node: str
    tensor: str  # the float tensor its input Quantize read
    floated: bool
    reason: str
    kind: str = "output"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "kind": self.kind, "tensor": self.tensor, "floated": self.floated,
                "reason": self.reason}


def dfl_convs(graph: gs.Graph) -> list[gs.Node]:
    """The DFL integral convs: 1x1 convs with one output channel reading (through Q/DQ) a Softmax that
    :func:`~trtqat.graph.family_detect.is_dfl` recognises."""
    out: list[gs.Node] = []
    for sm in (n for n in graph.nodes if n.op == "Softmax" and is_dfl(n)):
        stack, seen = [sm.outputs[0]], 0
        while stack and seen < 16:
            t, seen = stack.pop(), seen + 1
            for r in t.outputs:
                if (is_q(r) or is_dq(r)) and r.inputs[0] is t and r.outputs:
                    stack.append(r.outputs[0])
                elif r.op == "Conv" and r.inputs[0] is t and r not in out and _dfl_bins(r) is not None:
                    out.append(r)
    return out


def _dfl_bins(conv: gs.Node) -> int | None:
    """R for a conv whose weight (also behind a DQ) has the DFL's shape ``[1, R, 1, 1]``."""
    w = conv.inputs[1] if len(conv.inputs) > 1 else None
    while w is not None and len(w.inputs) == 1 and (is_dq(w.inputs[0]) or is_q(w.inputs[0])):
        w = w.inputs[0].inputs[0]
    value = constant_value(w, through_identity=True)
    shape = tuple(np.shape(value)) if value is not None else ()
    return shape[1] if len(shape) == 4 and shape[0] == 1 and shape[2:] == (1, 1) and shape[1] >= 2 else None


def head_output_convs(graph: gs.Graph, decode: frozenset[str] = frozenset()) -> list[gs.Node]:
    """Convs with a quantized input from which no learned layer and no Quantize is reachable.

    ``decode`` names convs that are decoding, not learned (the DFL): neither they nor the Quantize nodes
    that only feed them stop a conv before them from being a head output. Sorts ``graph`` topologically
    in place (the reachability is one pass in reverse order)."""
    cons = consumer_map(graph)
    graph.toposort()

    def decode_q(r: gs.Node) -> bool:  # a Quantize whose DQs feed only decode convs
        dqs = [d for d in cons.get(r.outputs[0].name, [])] if r.outputs else []
        return bool(dqs) and all(is_dq(d) and all(c.name in decode for c in cons.get(d.outputs[0].name, []))
                                 for d in dqs)

    feeds_more: dict[int, bool] = {}  # node id -> a learned layer or a Quantize is reachable from its outputs
    for node in reversed(graph.nodes):
        readers = [r for t in node.outputs for r in cons.get(t.name, [])]
        feeds_more[id(node)] = any((is_q(r) and not decode_q(r)) or (r.op in LEARNED_OPS and r.name not in decode)
                                   or feeds_more.get(id(r), False) for r in readers)
    return [n for n in graph.nodes if n.op == "Conv" and n.name not in decode and dq_input_of(n, 0) is not None
            and not feeds_more[id(n)]]


def float_decode_qdq(graph: gs.Graph, decode: frozenset[str] = frozenset()) -> list[HeadConv]:
    """Remove the activation Q/DQ pairs that sit in the decoding: a learned layer leads to them and none is
    reachable from them (``decode`` convs, the DFL, do not count as learned). A pair whose DQ writes a graph
    output is kept (the output's name is the DQ's). In place; one ``decode`` entry per Quantize removed."""
    cons = consumer_map(graph)
    graph.toposort()
    after: dict[int, bool] = {}  # node id -> a learned layer leads to it
    prod = producer_map(graph)
    for node in graph.nodes:
        ins = [prod.get(t.name) for t in node.inputs if t is not None]
        after[id(node)] = any(p is not None and ((p.op in LEARNED_OPS and p.name not in decode) or after[id(p)])
                              for p in ins)
    before: dict[int, bool] = {}  # node id -> a learned layer is reachable from it
    for node in reversed(graph.nodes):
        readers = [r for t in node.outputs for r in cons.get(t.name, [])]
        before[id(node)] = any((r.op in LEARNED_OPS and r.name not in decode) or before[id(r)] for r in readers)
    outputs = {id(t) for t in graph.outputs}
    out: list[HeadConv] = []
    for q in [n for n in graph.nodes if is_activation_q(n) and after[id(n)] and not before[id(n)] and n.outputs]:
        dqs = list(q.outputs[0].outputs)
        if not dqs or not all(is_dq(d) and d.outputs and id(d.outputs[0]) not in outputs for d in dqs):
            continue
        x = q.inputs[0]
        for d in dqs:
            replace_uses(graph, d.outputs[0], x)
        readers = sorted({r.name for r in x.outputs if r is not q})
        out.append(HeadConv(q.name, x.name, True, f"Q/DQ in the decoding after the last learned layer (read by "
                            f"{', '.join(readers[:2])}): removed", "decode"))
    return out


def float_head_outputs(graph: gs.Graph, policy: Policy) -> list[HeadConv]:
    """Make the DFL and the head output convs float where it costs no standalone Q/DQ (in place); see the
    module doc."""
    if not policy.ignore_detect_outputs:
        return []
    dfl = dfl_convs(graph)
    out = [_float_dfl(conv, graph) for conv in dfl]
    out = [h for h in out if h is not None]
    graph.cleanup()
    out += float_decode_qdq(graph, frozenset(c.name for c in dfl))
    graph.cleanup()
    heads = head_output_convs(graph, frozenset(c.name for c in dfl))
    names = {c.name for c in heads}
    cons, prod = consumer_map(graph), producer_map(graph)
    for conv in heads:
        dq = dq_input_of(conv, 0)
        q = q_of(dq)
        if q is None:
            continue  # an integer input from elsewhere: not a Q/DQ pair to remove
        x = q.inputs[0]
        wdq = dq_input_of(conv, 1)
        weights = float_source(wdq) if wdq is not None else conv.inputs[1]
        reason = _kept_int8(dq, q, x, weights is None, names, cons, prod)
        if reason:
            out.append(HeadConv(conv.name, x.name, False, reason))
            continue
        conv.inputs[0], conv.inputs[1] = x, weights
        out.append(HeadConv(conv.name, x.name, True, "detect output conv (ignore_detect_outputs)"))
    graph.cleanup()
    return out


def _float_dfl(conv: gs.Node, graph: gs.Graph) -> HeadConv | None:
    """The DFL conv float (input Q/DQ bypassed, weights exactly ``0..R-1``); ``None`` when it has no Q/DQ.

    Its input is a Softmax, which TensorRT runs in float: a Quantize there is a standalone conversion,
    and its weights are the bin indices, not learned values, so rounding them only shifts every box."""
    dq, wdq = dq_input_of(conv, 0), dq_input_of(conv, 1)
    if dq is None and wdq is None:
        return None
    x = conv.inputs[0]
    if dq is not None:
        q = q_of(dq)
        if q is None:
            return HeadConv(conv.name, x.name, False, "DFL input is a run-time integer tensor: kept", "dfl")
        x = q.inputs[0]
    bins = _dfl_bins(conv)
    if wdq is not None:
        w = float_source(wdq)
        if w is None:
            return HeadConv(conv.name, x.name, False, "DFL weights are a run-time integer tensor: kept", "dfl")
        dtype = np.asarray(constant_value(w, through_identity=True)).dtype
        conv.inputs[1] = gs.Constant(f"{conv.name}/trtqat_dfl_bins", np.arange(bins, dtype=dtype).reshape(1, bins, 1, 1))
    conv.inputs[0] = x
    return HeadConv(conv.name, x.name, True, f"DFL (the fixed integral conv, weights 0..{bins - 1}): decoding, "
                    "made float", "dfl")


def _kept_int8(dq: gs.Node, q: gs.Node, x: gs.Tensor, runtime_weights: bool, heads: set[str],
               cons: dict[str, list[gs.Node]], prod: dict[str, gs.Node]) -> str:
    """Why ``conv`` keeps its INT8 input, or "" when making it float is clean."""
    shared = [r.name for r in cons.get(dq.outputs[0].name, []) if r.name not in heads]
    shared += [r.name for r in cons.get(q.outputs[0].name, []) if r is not dq]
    shared += [r.name for r in cons.get(x.name, []) if r is not q and is_activation_q(r)]
    if shared:
        return f"input shared with quantized {shared[0]}: kept INT8"
    if runtime_weights:
        return "weights are a run-time integer tensor: kept INT8"
    via = _int8_through(x, prod)
    return f"input INT8 through {via} (a DQ moves forward into it): kept INT8" if via else ""


def _int8_through(t: gs.Tensor, prod: dict[str, gs.Node], depth: int = 0) -> str:
    """The data-movement op through which TensorRT moves DQs forward into ``t`` ("" when none does)."""
    p = prod.get(t.name)
    if p is None or depth > 32:
        return ""
    if is_dq(p):
        return p.name
    b = behaviour(p.op, attrs=p.attrs)
    if not b.dq_forward:
        return ""
    data = [p.inputs[i] for i in (b.data_inputs if b.data_inputs is not None else range(len(p.inputs)))
            if i < len(p.inputs) and p.inputs[i] is not None and constant_value(p.inputs[i]) is None]
    return p.name if data and all(_int8_through(d, prod, depth + 1) for d in data) else ""
