"""The Q/DQ TensorRT needs and a foreign ONNX lacks: find them, and insert them (pure ONNX).

Two rules of ``rules/*.yaml`` call for Q/DQ an exporter may have left out:

- ``residual-add`` (TQ005): TensorRT fuses a residual Add into the conv that produces one addend and writes
  INT8 only when the *other* addend (the skip) is INT8 (developer guide, "Q/DQ Layer-Placement
  Recommendations"; ModelOpt's ``build_non_residual_input_map`` does the same). Inserted: one Q/DQ on the
  skip input of an Add whose inputs carry none (ModelOpt's torch path, pytorch-quantization's default).
  Where neither addend is quantized and neither is a skip read elsewhere, lint's model of TensorRT says
  which addend no conv hosts (:func:`~.fusion.float_residuals`, the LINT004 case): that one. The case is
  attention's ``attn(q, k) @ v + pe(v)`` (YOLO11/YOLO26 C2PSA): the Add fuses into the ``pe`` conv, and
  with the MatMul-side addend quantized the conv + Add writes INT8 for ``proj``. That addend takes v's
  scale without data: it is a softmax-weighted average of v over the contracted axis, so ``|attn @ v| <=
  max |v|`` and v's scale clips nothing of it (checked from the graph, :func:`_softmax_average_bound`).
- ``align`` ops with several outputs (TQ004, e.g. the ``Split`` of a C2f block): when every output is
  quantized but the input is not, TensorRT can neither move the DQs forward (no DQ on the input) nor the
  Qs backward (several outputs), so the Split runs in float and each Q stays standalone. A Q/DQ on the
  input, with the scale of the group the op ties, lets the whole block run INT8.
- ``float-fanout`` in ``quantize-input`` mode (TQ007): a tensor read by a Quantize and by a float detect
  conv keeps a standalone Quantize; the float conv gets an INT8 input with its sibling's scale and INT8
  per-channel weights (amax = max |w| per output channel), its output stays float.

Where the tensor is already read by an activation Q (or, for an align op, its outputs are; or a Q of its
scale group quantizes it through data movement), the new Q takes that Q's scale: no data is needed and no
value is clipped that was not clipped before. Otherwise the scale must come from data (``--calib``);
without it the insertion is only reported as a suggestion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from .fusion import float_residuals, form_groups
from .normalize_qdq import is_activation_q, unique_name
from .optable import DEFAULT_VERSION, behaviour
from .policy import Policy
from .propagate import QdqIr
from .qdq import constant_value, consumer_map, is_dq, is_q, opset_of, producer_map, q_of, read_qparams
from .scale_groups import find_scale_sets

#: int8 narrow-range bound, as every trtqat and pytorch-quantization quantizer uses
BOUND = 127.0


@dataclass(frozen=True)
class Insertion:
    """Q/DQ that a rule asks for on ``tensor`` in front of ``node``."""

    rule: str
    kind: str  # "residual-add" | "align-input" | "float-fanout"
    node: str
    tensor: str
    sibling_q: str  # an existing activation Q of the same scale group (its scale is reused), or ""

    @property
    def needs_data(self) -> bool:
        return not self.sibling_q

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "kind": self.kind, "node": self.node, "tensor": self.tensor,
                "sibling_q": self.sibling_q, "needs_data": self.needs_data}


def plan_insertions(graph: gs.Graph, policy: Policy, *, trt_version: str = DEFAULT_VERSION) -> list[Insertion]:
    """Every Q/DQ the enabled residual-add, multi-output align and quantize-input float-fanout rules ask for
    (``trt_version``: the TensorRT whose fusions lint models, for the residual Adds it finds)."""
    cons = consumer_map(graph)
    prod = producer_map(graph)
    outputs = {t.name for t in graph.outputs}

    def act_q_of(name: str) -> str:
        return next((c.name for c in cons.get(name, []) if is_activation_q(c) and c.inputs[0].name == name), "")

    out: list[Insertion] = []
    group_q = {t: s.q_nodes[0] for s in find_scale_sets(graph, policy, min_q=1).sets for t in s.tensors}
    residual = [r for r in policy.active("residual-add")]
    for node in graph.nodes if residual else []:
        if node.op not in residual[0].ops or len(node.inputs) != 2 or node.outputs[0].name in outputs:
            continue
        ins = node.inputs
        if any(t is None or constant_value(t) is not None or (t.name in prod and is_dq(prod[t.name])) for t in ins):
            continue  # a constant addend (box decoding) or an Add already quantized
        if not any(act_q_of(t.name) for t in ins) or not all(_in_int8_region(t, prod, cons) for t in ins):
            continue  # not between quantized layers
        skip = max(ins, key=lambda t: len(cons.get(t.name, [])))  # the skip tensor also feeds the block
        out.append(Insertion(residual[0].id, "residual-add", node.name, skip.name, act_q_of(skip.name)))
    if residual:
        planned, tensors = {i.node for i in out}, graph.tensors()
        for add, tensor in _float_residuals(graph, trt_version):
            t = tensors.get(tensor)
            if add in planned or t is None or not _in_int8_region(t, prod, cons):
                continue
            sibling = act_q_of(tensor) or group_q.get(tensor, "") or _softmax_average_bound(t, prod, opset_of(graph))
            out.append(Insertion(residual[0].id, "residual-add", add, tensor, sibling))
    for node in graph.nodes:
        rule = next((r for r in policy.active("align") if node.op in r.ops), None)
        if rule is None or len(node.outputs) < 2 or not node.inputs:
            continue
        x = node.inputs[0]
        if constant_value(x) is not None or (x.name in prod and is_dq(prod[x.name])) or act_q_of(x.name):
            continue
        if x.name in group_q:  # the op ties its input to quantized outputs: that group's scale applies
            out.append(Insertion(rule.id, "align-input", node.name, x.name, group_q[x.name]))
    fanout = policy.active("float-fanout")
    if fanout and fanout[0].mode == "quantize-input":
        for t_name, readers in cons.items():
            sibling = act_q_of(t_name)
            if not sibling:
                continue
            for c in readers:
                if _float_head_conv(c, t_name, graph, cons):
                    out.append(Insertion(fanout[0].id, "float-fanout", c.name, t_name, sibling))
    return out


def _float_residuals(graph: gs.Graph, trt_version: str) -> list[tuple[str, str]]:
    """``(Add, residual tensor)`` where lint's model of TensorRT fuses the Add into a conv that would write INT8
    but for the float residual (:func:`~.fusion.float_residuals`), on a copy of the graph's structure."""
    ir = QdqIr(graph, trt_version)
    ir.propagate()
    return float_residuals(ir, form_groups(ir))


def _softmax_average_bound(t: gs.Tensor, prod: dict[str, gs.Node], opset: int) -> str:
    """The activation Q of ``v`` when ``t`` is, through data movement, attention's ``v @ softmax(...)``
    contracted over the softmax axis, else "".

    Why its scale is safe without data: each output element is a weighted average of ``v``'s values (the
    softmax weights are non-negative and sum to 1 along the contracted axis), so ``|t| <= max |v|`` and the
    scale that quantizes ``v`` clips nothing of ``t``.
    """
    seen = 0
    while t.name in prod and _moves_data(prod[t.name]) and seen < 8:
        t, seen = prod[t.name].inputs[0], seen + 1
    mm = prod.get(t.name)
    if mm is None or mm.op != "MatMul" or len(mm.inputs) != 2:
        return ""
    for i in (0, 1):  # MatMul(A, B) contracts A's last axis and B's second-to-last
        axis = _softmax_axis(mm.inputs[i], prod, opset)
        if axis is None or axis != (-1 if i == 0 else -2):
            continue
        dq = prod.get(mm.inputs[1 - i].name)
        q = q_of(dq) if dq is not None and is_dq(dq) else None
        if q is not None and is_activation_q(q) and np.size(read_qparams(q).scale) == 1:
            return q.name
    return ""


def _moves_data(node: gs.Node) -> bool:
    """A data-movement op with one data input (Reshape, Transpose, ...): values pass through unchanged."""
    beh = behaviour(node.op, attrs=node.attrs)
    return beh.commuting and not beh.compute and bool(node.inputs) and len(node.outputs) == 1


def _softmax_axis(t: gs.Tensor, prod: dict[str, gs.Node], opset: int) -> int | None:
    """The (negative) axis of ``t`` along which it sums to 1, when ``t`` is a Softmax output seen through
    Transposes and Q/DQ pairs (a quantized softmax still averages within its rounding), else None. Before
    opset 13 Softmax normalises over all axes from ``axis`` on: only the last axis means the same then."""
    perms: list[list[int]] = []
    seen = 0
    while t.name in prod and seen < 8:
        node, seen = prod[t.name], seen + 1
        if node.op == "Transpose" and "perm" in node.attrs:
            perms.append(list(node.attrs["perm"]))
        elif not (is_q(node) or is_dq(node)):
            break
        t = node.inputs[0]
    node = prod.get(t.name)
    rank = len(t.shape) if t.shape is not None else None
    if node is None or node.op != "Softmax" or rank is None:
        return None
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % rank
    if opset < 13 and axis != rank - 1:
        return None
    for perm in reversed(perms):  # follow the axis through each Transpose, first to last
        if len(perm) != rank:
            return None
        axis = perm.index(axis)
    return axis - rank


def _in_int8_region(t: gs.Tensor, prod: dict[str, gs.Node], cons: dict[str, list[gs.Node]]) -> bool:
    """A tensor written (through pointwise ops) by a conv with a quantized input, or read by a Q."""
    if any(is_activation_q(c) and c.inputs[0] is t for c in cons.get(t.name, [])):
        return True
    seen = 0
    while t.name in prod and seen < 8:
        p = prod[t.name]
        if p.op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            return len(p.inputs) > 0 and p.inputs[0].name in prod and is_dq(prod[p.inputs[0].name])
        data = [x for x in p.inputs if x is not None and constant_value(x) is None]
        if not data:
            return False
        t, seen = data[0], seen + 1
    return False


def _float_head_conv(c: gs.Node, tensor: str, graph: gs.Graph, cons: dict[str, list[gs.Node]]) -> bool:
    """A float Conv reading ``tensor`` directly, with constant weights, from which no Quantize is reachable
    (a head output conv, kept float by the exporter: what the ``quantize-input`` mode converts)."""
    if c.op != "Conv" or not c.inputs or c.inputs[0].name != tensor or len(c.inputs) < 2:
        return False
    if constant_value(c.inputs[1]) is None:
        return False  # weights behind a DQ (already quantized) or computed
    w = np.asarray(constant_value(c.inputs[1]))
    if w.dtype == np.float16 and opset_of(graph) < 19:
        return False  # Q/DQ of float16 values needs opset 19
    stack, seen = [c], set()
    while stack:
        n = stack.pop()
        for t in n.outputs:
            for r in cons.get(t.name, []):
                if is_q(r):
                    return False
                if id(r) not in seen:
                    seen.add(id(r))
                    stack.append(r)
    return True


def apply_insertions(graph: gs.Graph, insertions: list[Insertion], *, placeholder: float = 1.0
                     ) -> dict[str, Insertion]:
    """Insert the planned Q/DQ pairs (and weight Q/DQ for float-fanout convs); returns new Q name -> insertion.

    Each new Q takes its sibling's scale (dtype included), or ``placeholder`` (float32) when it has none:
    the caller then calibrates it.
    """
    nodes = {n.name: n for n in graph.nodes}
    taken = set(graph.tensors())
    new_qs: dict[str, Insertion] = {}
    for ins in insertions:
        node = nodes[ins.node]
        tensor = next(t for t in node.inputs if t is not None and t.name == ins.tensor)
        sibling = nodes.get(ins.sibling_q)
        if sibling is not None:
            value = np.asarray(constant_value(sibling.inputs[1], through_identity=True))
            scale = gs.Constant(unique_name(f"{ins.node}/trtqat_in_scale", taken), value)
            zp = np.asarray(constant_value(sibling.inputs[2], through_identity=True)) if len(sibling.inputs) > 2 \
                else np.zeros((), np.int8)
        else:
            scale = gs.Constant(unique_name(f"{ins.node}/trtqat_in_scale", taken),
                                np.asarray(placeholder, np.float32))
            zp = np.zeros((), np.int8)
        zero = gs.Constant(unique_name(f"{ins.node}/trtqat_in_zp", taken),
                           np.asarray(zp, np.int8).reshape(np.shape(zp)))
        q, dq_out = _pair(graph, tensor, scale, zero, unique_name(f"{ins.node}/trtqat_in", taken))
        for i, t in enumerate(node.inputs):
            if t is tensor:
                node.inputs[i] = dq_out
        new_qs[q.name] = ins
        if ins.kind == "float-fanout":
            _quantize_weight(graph, node, unique_name(f"{node.name}/trtqat_w", taken))
    graph.cleanup().toposort()
    return new_qs


def _pair(graph: gs.Graph, x: gs.Tensor, scale: gs.Constant, zero: gs.Constant, name: str
          ) -> tuple[gs.Node, gs.Variable]:
    q_out = gs.Variable(f"{name}_q_out", dtype=np.int8, shape=x.shape)
    dq_out = gs.Variable(f"{name}_dq_out", dtype=x.dtype, shape=x.shape)
    q = gs.Node("QuantizeLinear", name=f"{name}_q", inputs=[x, scale, zero], outputs=[q_out])
    dq = gs.Node("DequantizeLinear", name=f"{name}_dq", inputs=[q_out, scale, zero], outputs=[dq_out])
    graph.nodes += [q, dq]
    return q, dq_out


def _quantize_weight(graph: gs.Graph, conv: gs.Node, name: str) -> None:
    """Per-output-channel (axis 0) Q/DQ on ``conv``'s constant weight, amax = max |w| per channel."""
    w_t = conv.inputs[1]
    w = np.asarray(constant_value(w_t))
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.maximum(amax / BOUND, float(np.finfo(w.dtype).tiny)).astype(w.dtype)
    s = gs.Constant(f"{name}_scale", scale)
    z = gs.Constant(f"{name}_zp", np.zeros(w.shape[0], np.int8))
    q_out = gs.Variable(f"{name}_q_out", dtype=np.int8, shape=list(w.shape))
    dq_out = gs.Variable(f"{name}_dq_out", dtype=w.dtype, shape=list(w.shape))
    graph.nodes += [gs.Node("QuantizeLinear", name=f"{name}_q", inputs=[w_t, s, z], outputs=[q_out],
                            attrs={"axis": 0}),
                    gs.Node("DequantizeLinear", name=f"{name}_dq", inputs=[q_out, s, z],
                            outputs=[dq_out], attrs={"axis": 0})]
    conv.inputs[1] = dq_out


def scale_of(q: gs.Node) -> float:
    """The per-tensor scale of activation Q ``q`` as a float."""
    return float(np.asarray(read_qparams(q).scale).reshape(-1)[0])
