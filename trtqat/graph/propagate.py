"""A small mutable copy of a Q/DQ graph and TensorRT's Q/DQ propagation rewrites on it.

Why a private IR: the simulation rewrites the graph many times (DQs swapped forward, Qs copied
backward, Q/DQ pairs erased) and must never touch the user's model. It keeps only what the rules
look at: op, tensor names, attributes, the constant-ness of tensors and the quantization
parameters of Q/DQ nodes.

Rewrites implemented (TensorRT developer guide, "Processing of Q/DQ Networks"; rule names as in
shared/reference/trt-qdq-processing.md §4):
  fold   constants: weight Q/DQ, BN/bias constants, Identity on scales (TensorRT constant-folds).
  merge  Qs of equal scale on one tensor become one Q ("Q/DQ Limitations").
  P1     a DQ moves forward through a commuting op whose data inputs are all DQs of one scale.
  P2     a Q moves backward through a commuting op when it is the only consumer of the op's output
         (after merging): the fan-out rule, observed on the TREx ResNet18 MaxPool. It does not move
         onto a network input: it would stay a standalone Reformat there too, and the TF-ResNet50
         engine keeps the input ``Pad`` in FP32 in front of the input Q.
  P4     DQ(s) -> Q(s) is erased; DQ(s1) -> Q(s2) stays as a requantization.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from .optable import OpBehaviour, behaviour
from .qdq import DQ_OP, Q_OP, QParams, read_qparams, scales_equal


@dataclass(eq=False)
class IrNode:
    """One node of the simulation graph (compared by identity)."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    beh: OpBehaviour
    qp: QParams | None = None          # Q/DQ only
    merged: list[str] = field(default_factory=list)  # Q names merged into this one
    int8: bool = False                 # a commuting op that Q/DQ moved across
    requant_of: str | None = None      # Q fed by a DQ of another scale
    moved: bool = False                # a Q/DQ copy created by P1/P2
    why_float: str = ""                # why TensorRT keeps this op as its own float layer (set on import)

    @property
    def is_q(self) -> bool:
        return self.op == Q_OP

    @property
    def is_dq(self) -> bool:
        return self.op == DQ_OP


class QdqIr:
    """The simulation graph: nodes in topological order plus constant/IO tensor sets."""

    def __init__(self, graph: gs.Graph, version: str):
        self.version = version
        self.inputs = [t.name for t in graph.inputs]
        self.outputs = {t.name for t in graph.outputs}
        self.shapes = {t.name: t.shape for t in graph.tensors().values() if getattr(t, "shape", None)}
        self.constants: dict[str, list[str]] = {}  # tensor -> Q/DQ node names folded into it
        self.const_values: dict[str, np.ndarray] = {}
        self.nodes: list[IrNode] = []
        self._fold_and_import(graph)
        self.order = {id(n): i for i, n in enumerate(self.nodes)}
        self.refresh()

    # -- construction -------------------------------------------------------------------------
    def _fold_and_import(self, graph: gs.Graph) -> None:
        for t in graph.tensors().values():
            if isinstance(t, gs.Constant):
                self.constants[t.name] = []
                self.const_values[t.name] = t.values
        for n in graph.nodes:
            ins = [t.name if t is not None else "" for t in n.inputs]
            data_ins = [x for x in ins if x]
            if n.op == "Constant" or (data_ins and all(x in self.constants for x in data_ins)):
                folded = [q for x in data_ins for q in self.constants[x]]
                if n.op in (Q_OP, DQ_OP):
                    folded.append(n.name)
                for t in n.outputs:
                    self.constants[t.name] = folded
                    value = n.attrs.get("value")
                    if n.op == "Constant" and isinstance(value, gs.Constant):
                        self.const_values[t.name] = value.values
                continue
            qp = read_qparams(n) if n.op in (Q_OP, DQ_OP) else None
            if qp is not None:
                ins = ins[:1]
            beh, why = behaviour(n.op, self.version, n.attrs), ""
            if n.op == "BatchNormalization" and not all(_initializer_like(t) for t in n.inputs[1:5]):
                beh = dataclasses.replace(beh, pointwise=False)
                why = ("its parameters come through non-initializer nodes, so TensorRT does not fold it into "
                       "the conv before it (seen on TensorRT 8.5)")
            self.nodes.append(IrNode(n.name, n.op, ins, [t.name for t in n.outputs], dict(n.attrs), beh, qp,
                                     why_float=why))

    def refresh(self) -> None:
        """Rebuild the producer/consumer maps after a rewrite."""
        self.producer: dict[str, IrNode] = {}
        self.consumers: dict[str, list[IrNode]] = {}
        for n in self.nodes:
            for t in n.outputs:
                self.producer[t] = n
            for t in dict.fromkeys(n.inputs):
                if t:
                    self.consumers.setdefault(t, []).append(n)

    def _unlink(self, node: IrNode) -> None:
        for t in node.outputs:
            if self.producer.get(t) is node:
                del self.producer[t]
        for t in dict.fromkeys(node.inputs):
            if t and node in self.consumers.get(t, []):
                self.consumers[t].remove(node)

    def _link(self, node: IrNode) -> None:
        for t in node.outputs:
            self.producer[t] = node
        for t in dict.fromkeys(node.inputs):
            if t:
                self.consumers.setdefault(t, []).append(node)

    # -- queries ------------------------------------------------------------------------------
    def is_const(self, tensor: str) -> bool:
        return tensor in self.constants

    def data_inputs(self, node: IrNode) -> list[int]:
        """Indices of the inputs of ``node`` that carry activations (non-empty, non-constant)."""
        idx = node.beh.data_inputs if node.beh.data_inputs is not None else range(len(node.inputs))
        return [i for i in idx if i < len(node.inputs) and node.inputs[i] and not self.is_const(node.inputs[i])]

    def prod(self, tensor: str) -> IrNode | None:
        return self.producer.get(tensor)

    def cons(self, tensor: str) -> list[IrNode]:
        return self.consumers.get(tensor, [])

    def dq_of(self, tensor: str) -> IrNode | None:
        p = self.prod(tensor)
        return p if p is not None and p.is_dq else None

    def index(self, node: IrNode) -> int:
        return self.order.get(id(node), len(self.order))

    # -- rewrites -----------------------------------------------------------------------------
    def _insert_after(self, anchor: IrNode, node: IrNode) -> None:
        self.nodes.insert(self.nodes.index(anchor) + 1, node)
        self.order[id(node)] = self.index(anchor)

    def _drop_if_dead(self, node: IrNode) -> None:
        if node in self.nodes and not any(self.cons(t) or t in self.outputs for t in node.outputs):
            self._unlink(node)
            self.nodes.remove(node)

    def merge_qs(self) -> bool:
        """Merge equal-scale Qs on each tensor into the first one."""
        changed = False
        for cons in list(self.consumers.values()):
            qs = [c for c in cons if c.is_q]
            gone: set[int] = set()
            for i, keep in enumerate(qs):
                if id(keep) in gone:
                    continue
                for other in qs[i + 1:]:
                    if id(other) not in gone and scales_equal(keep.qp, other.qp):
                        self._rewire(other.outputs[0], keep.outputs[0])
                        keep.merged += [other.name, *other.merged]
                        gone.add(id(other))
            if gone:
                self.nodes = [n for n in self.nodes if id(n) not in gone]
                changed = True
        if changed:
            self.refresh()
        return changed

    def _rewire(self, old: str, new: str) -> None:
        for n in list(self.consumers.get(old, [])):
            self._unlink(n)
            n.inputs = [new if t == old else t for t in n.inputs]
            self._link(n)
        if old in self.outputs:
            self.outputs.discard(old)
            self.outputs.add(new)

    def dq_forward(self) -> bool:
        """P1: one DQ-forward rewrite; True if something moved."""
        for node in self.nodes:
            if not node.beh.dq_forward or node.int8 or node.is_q or node.is_dq:
                continue
            idx = self.data_inputs(node)
            dqs = [self.dq_of(node.inputs[i]) for i in idx]
            if not idx or any(d is None or not _per_tensor(d) for d in dqs):
                continue
            if not all(scales_equal(dqs[0].qp, d.qp) for d in dqs[1:]):
                continue
            self._unlink(node)
            for i, d in zip(idx, dqs):
                node.inputs[i] = d.inputs[0]
            new_outs = []
            for out in node.outputs:
                q_out = f"{out}::int8"
                new_outs.append(q_out)
                dq = IrNode(dqs[0].name, DQ_OP, [q_out], [out], {}, behaviour(DQ_OP, self.version), dqs[0].qp,
                            moved=True)
                self._insert_after(node, dq)
                self._link(dq)
            node.outputs = new_outs
            node.int8 = True
            self._link(node)
            for d in dqs:
                self._drop_if_dead(d)
            return True
        return False

    def q_backward(self) -> bool:
        """P2: one Q-backward rewrite; True if something moved."""
        for q in list(self.nodes):
            if not q.is_q or not _per_tensor(q):
                continue
            x = q.inputs[0]
            node = self.prod(x)
            if node is None or not node.beh.q_backward or node.int8 or node.is_dq or len(node.outputs) != 1:
                continue
            if x in self.outputs or self.cons(x) != [q]:
                continue  # fan-out rule: another consumer needs the float tensor
            idx = self.data_inputs(node)
            if not idx or all(node.inputs[i] in self.inputs for i in idx):
                continue  # onto a network input: the Q stays standalone anyway (TF-ResNet50 engine: Pad runs FP32)
            self._unlink(node)
            self._unlink(q)
            for k, i in enumerate(idx):
                t_q = f"{node.inputs[i]}::q{k}@{node.name}"
                copy = IrNode(q.name, Q_OP, [node.inputs[i]], [t_q], {}, q.beh, q.qp, list(q.merged), moved=True)
                self.nodes.insert(self.nodes.index(node), copy)
                self.order[id(copy)] = self.index(node)
                self._link(copy)
                node.inputs[i] = t_q
            node.outputs = [q.outputs[0]]
            node.int8 = True
            self._link(node)
            self.nodes.remove(q)
            return True
        return False

    def erase_pairs(self) -> bool:
        """P4: erase DQ(s)->Q(s); mark DQ(s1)->Q(s2) as a requantization."""
        for q in list(self.nodes):
            if not q.is_q:
                continue
            d = self.dq_of(q.inputs[0])
            if d is None:
                continue
            if scales_equal(d.qp, q.qp):
                self._rewire(q.outputs[0], d.inputs[0])
                self._unlink(q)
                self.nodes.remove(q)
                self._drop_if_dead(d)
                return True
            q.requant_of = d.name
        return False

    def propagate(self, max_rounds: int = 100_000) -> None:
        """Run merge, P1, P2 and P4 to a fixed point (P1 before P2, as TensorRT documents)."""
        self.merge_qs()
        for _ in range(max_rounds):
            if self.dq_forward() or self.erase_pairs() or self.q_backward() or self.merge_qs():
                continue
            return


def _initializer_like(t: gs.Tensor | None) -> bool:
    """An initializer or a Constant node's output: what TensorRT's BatchNorm folding reads directly."""
    if t is None or isinstance(t, gs.Constant):
        return True
    return len(t.inputs) == 1 and t.inputs[0].op == "Constant"


def _per_tensor(node: IrNode) -> bool:
    return node.qp is not None and node.qp.scale is not None and node.qp.scale.size == 1
