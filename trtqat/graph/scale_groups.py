"""Find the quantizers that must share one scale, from the ONNX graph alone (union-find over tensors).

Why on the graph: TensorRT decides from the ONNX which Q/DQ it can move and fuse, so the same graph is the
robust place to find the tensors it wants on one scale, for any CNN and any exporter (the reference tool
walks fixed patterns from the first consumer and string-splits initializer names; it misses the SPPF/
SPPCSPC maxpools, Resize, and sibling convs, see docs/rules.md).

Model: a Q->DQ pair is transparent (a DQ output *aliases* the tensor its Q reads: its canonical tensor).
Union-find over canonical tensors joins

- inputs and outputs of every ``align`` op of the policy (Concat, MaxPool, nearest Resize, data movement:
  ops TensorRT propagates Q/DQ across, :mod:`trtqat.graph.optable`);
- both addends of a ``residual-add`` op whose two inputs are quantized.

Every activation Q reading a tensor of a set belongs to that set's group (this covers sibling consumers
of one tensor). A tensor of a quantized set that a float layer also reads is a *float fan-out*: TensorRT's
producer can write only one precision, so a standalone Quantize stays (reference §4 P2). Float weighted
layers are visible to this module only as *probe* Q nodes (named by the caller, see
:func:`trtqat.quant.share.discover`): in ``report`` mode they count as float readers, in
``quantize-input`` mode they join the group (their layer gets the shared INT8 input).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx_graphsurgeon as gs

from .optable import behaviour
from .policy import Policy
from .qdq import constant_value, consumer_map, is_dq, is_q, is_weight_qdq, producer_map

GRAPH_OUTPUT = "<graph output>"


@dataclass(frozen=True)
class ScaleSet:
    """Q nodes that must share one scale, the canonical tensors and the ops that tied them."""

    q_nodes: tuple[str, ...]
    tensors: tuple[str, ...]
    ops: tuple[str, ...]
    rules: tuple[str, ...]
    probes: tuple[str, ...] = ()  # probe Q nodes joined by a quantize-input float-fanout rule

    def to_dict(self) -> dict[str, Any]:
        return {"q_nodes": list(self.q_nodes), "tensors": list(self.tensors), "ops": list(self.ops),
                "rules": list(self.rules), "probes": list(self.probes)}


@dataclass(frozen=True)
class Fanout:
    """A quantized tensor also read in float: ``float_readers`` still force a standalone Quantize;
    ``converted`` are probe layers the quantize-input mode gives the shared INT8 input."""

    tensor: str
    q_nodes: tuple[str, ...]
    float_readers: tuple[str, ...]
    converted: tuple[str, ...]
    rule: str

    @property
    def standalone_q(self) -> bool:
        """TensorRT keeps a standalone Quantize on this tensor (some reader stays float)."""
        return bool(self.float_readers)

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "q_nodes": list(self.q_nodes), "float_readers": list(self.float_readers),
                "converted": list(self.converted), "rule": self.rule, "standalone_q": self.standalone_q}


@dataclass(frozen=True)
class Discovery:
    sets: tuple[ScaleSet, ...]
    fanouts: tuple[Fanout, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"sets": [s.to_dict() for s in self.sets], "fanouts": [f.to_dict() for f in self.fanouts]}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, items: list[str]) -> None:
        roots = [self.find(x) for x in items]
        for r in roots[1:]:
            self.parent[r] = roots[0]
            roots[0] = self.find(roots[0])


class _Graph:
    """Producer/consumer lookups plus the Q->DQ aliasing."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.prod = producer_map(graph)
        self.cons = consumer_map(graph)
        self.order = {id(n): i for i, n in enumerate(graph.nodes)}
        self.outputs = {t.name for t in graph.outputs}

    def label(self, node: gs.Node) -> str:
        """The node's name (ONNX names are optional: ``<op>#<index>`` for an unnamed node)."""
        return node.name or f"{node.op}#{self.order[id(node)]}"

    def position(self, tensor: str) -> int:
        """Graph order of the tensor's producer (-1 for graph inputs)."""
        return self.order[id(self.prod[tensor])] if tensor in self.prod else -1

    def act_q(self, node: gs.Node | None) -> bool:
        return node is not None and is_q(node) and not is_weight_qdq(node)

    def q_of_dq(self, tensor: str) -> gs.Node | None:
        """The activation Q behind ``tensor`` when it is the output of a DQ(Q(x)) pair."""
        dq = self.prod.get(tensor)
        if dq is None or not is_dq(dq) or not dq.inputs:
            return None
        q = self.prod.get(dq.inputs[0].name)
        return q if self.act_q(q) else None

    def canonical(self, tensor: str) -> str:
        seen = 0
        while (q := self.q_of_dq(tensor)) is not None and seen < 64:
            tensor, seen = q.inputs[0].name, seen + 1
        return tensor

    def data_tensors(self, node: gs.Node, data_inputs: tuple[int, ...] | None) -> list[str]:
        idx = range(len(node.inputs)) if data_inputs is None else [i for i in data_inputs if i < len(node.inputs)]
        ins = [node.inputs[i] for i in idx]
        return [self.canonical(t.name) for t in ins if t is not None and t.name and constant_value(t) is None]


def find_scale_sets(graph: gs.Graph, policy: Policy, *, probes: Mapping[str, str] | None = None,
                    convertible: Collection[str] | None = None, min_q: int = 2) -> Discovery:
    """Scale sets of ``graph`` under ``policy``.

    Args:
        graph: an ONNX graph with activation QuantizeLinear/DequantizeLinear pairs.
        policy: the rules (only enabled ``align``/``residual-add``/``siblings``/``float-fanout`` are used).
        probes: Q node name -> label of a *float* weighted layer whose input the caller probed.
        convertible: the probe Q nodes a quantize-input fan-out rule may convert (default: all); the
            others stay float readers.
        min_q: report sets with at least this many Q nodes (the torch side counts distinct quantizers).
    """
    g = _Graph(graph)
    probes = dict(probes or {})
    uf = _UnionFind()
    ties: list[tuple[str, gs.Node, str]] = []  # (a tensor of the set, tying node, rule id)
    for node in graph.nodes:
        tied = _tie(g, node, policy)
        if tied:
            tensors, rule_id = tied
            uf.union(tensors)
            ties.append((tensors[0], node, rule_id))
    members: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        if g.act_q(node) and node.name not in probes:
            members.setdefault(uf.find(g.canonical(node.inputs[0].name)), []).append(node)
    fanout = policy.active("float-fanout")
    joined: dict[str, list[gs.Node]] = {}
    for node in graph.nodes:
        if (node.name in probes and fanout and fanout[0].mode == "quantize-input"
                and (convertible is None or node.name in convertible)):
            root = uf.find(g.canonical(node.inputs[0].name))
            if root in members:  # only a tensor that some real quantizer reads
                joined.setdefault(root, []).append(node)
    siblings = next((r for r in policy.rules if r.kind == "siblings"), None)
    by_root: dict[str, set[str]] = {}
    for t in list(uf.parent):
        by_root.setdefault(uf.find(t), set()).add(t)
    sets: list[tuple[int, ScaleSet]] = []
    fanouts: list[Fanout] = []
    for root, qs in members.items():
        extra = joined.get(root, [])
        tensors = sorted({g.canonical(q.inputs[0].name) for q in qs} | by_root.get(root, set()), key=g.position)
        ops = {id(n): (n, r) for t, n, r in ties if uf.find(t) == root}
        rule_ids = {r for _, r in ops.values()}
        readers = {t: [c for c in g.cons.get(t, []) if id(c) not in ops] for t in tensors}  # tie ops pass INT8 on
        quantized = {id(n) for n in [*qs, *extra]}
        if siblings is not None and siblings.enabled and any(
                sum(1 for c in readers[t] if id(c) in quantized) >= 2 for t in tensors):
            rule_ids.add(siblings.id)
        if extra:
            rule_ids.add(fanout[0].id)
        if fanout:
            fanouts += _fanouts(g, tensors, readers, qs, probes, extra, fanout[0].id)
        all_q = sorted([*qs, *extra], key=lambda n: g.order[id(n)])
        if not rule_ids or len(all_q) < min_q:
            continue  # (no rule: only sibling readers, and the siblings rule is disabled)
        sets.append((g.order[id(all_q[0])], ScaleSet(q_nodes=tuple(g.label(n) for n in all_q), tensors=tuple(tensors),
                             ops=tuple(g.label(n) for n, _ in sorted(ops.values(), key=lambda x: g.order[id(x[0])])),
                             rules=tuple(r.id for r in policy.rules if r.id in rule_ids),
                             probes=tuple(n.name for n in extra))))
    return Discovery(tuple(s for _, s in sorted(sets, key=lambda x: x[0])), tuple(fanouts))


def _tie(g: _Graph, node: gs.Node, policy: Policy) -> tuple[list[str], str] | None:
    """The canonical tensors ``node`` ties together and the rule that does it (first matching rule)."""
    for rule in policy.rules:
        if not rule.enabled or node.op not in rule.ops:
            continue
        if rule.kind == "align":
            beh = behaviour(node.op, attrs=node.attrs)
            if not beh.commuting:
                continue  # e.g. a linear Resize: interpolation is not exact on INT8
            tensors = g.data_tensors(node, beh.data_inputs) + [t.name for t in node.outputs if t.name]
        elif rule.kind == "residual-add":
            ins = [t for t in node.inputs if t is not None and t.name]
            if len(ins) != 2 or any(g.q_of_dq(t.name) is None for t in ins):
                continue  # only an Add whose two addends are both quantized
            tensors = [g.canonical(t.name) for t in ins]
        else:
            continue
        unique = list(dict.fromkeys(tensors))
        return (unique, rule.id) if len(unique) >= 2 else None
    return None


def _fanouts(g: _Graph, tensors: list[str], readers: dict[str, list[gs.Node]], qs: list[gs.Node],
             probes: Mapping[str, str], joined: list[gs.Node], rule_id: str) -> list[Fanout]:
    """Float readers of the set's raw tensors: probes (by label), other layers, the network output."""
    out = []
    joined_ids = {id(n) for n in joined}
    q_ids = {id(q) for q in qs}
    for t in tensors:
        floats, converted = [], []
        for c in readers[t]:
            if id(c) in joined_ids:
                converted.append(probes[c.name])
            elif c.name in probes:
                floats.append(probes[c.name])
            elif id(c) not in q_ids and not is_dq(c):
                floats.append(f"{g.label(c)} ({c.op})")
        if t in g.outputs:
            floats.append(GRAPH_OUTPUT)
        if floats or converted:
            own = tuple(g.label(q) for q in qs if g.canonical(q.inputs[0].name) == t) or tuple(g.label(q) for q in qs)
            out.append(Fanout(t, own, tuple(floats), tuple(converted), rule_id))
    return out
