"""Small, reusable helpers over onnx-graphsurgeon graphs that hold QuantizeLinear/DequantizeLinear.

Why: every Q/DQ analysis (lint, parser checks, scale-matching rules) needs the same few questions
answered the same way: which nodes are Q/DQ, what are their constant scale/zero point/axis, who
produces and who consumes a tensor, which DQ feeds an input, and which Qs on one tensor TensorRT
will merge (it merges Qs of equal scale on one tensor before propagating them; TensorRT developer
guide, "Q/DQ Limitations").
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import InputError

Q_OP = "QuantizeLinear"
DQ_OP = "DequantizeLinear"


def load_graph(path: str | os.PathLike) -> gs.Graph:
    """Load an ONNX file into a gs.Graph.

    Raises:
        InputError: the file is missing, unreadable, not ONNX, or has no graph.
    """
    return graph_from_model(load_model(path), str(path))


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file (external data included), with an InputError for anything unreadable."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"ONNX file {str(p)!r} does not exist", "Pass the path of an .onnx model")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError ... for bad bytes
        raise InputError(f"{str(p)!r} is not a readable ONNX model ({type(exc).__name__})",
                         "Re-export the model or check the file is complete") from exc
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise InputError(f"{str(p)!r} has no graph nodes", "Re-export the model; the file looks empty")
    return model


def graph_from_model(model: onnx.ModelProto, label: str = "model") -> gs.Graph:
    """Import an in-memory ModelProto, with the same InputError as :func:`load_graph`."""
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise InputError(f"{label!r} has no graph nodes", "Re-export the model; the file looks empty")
    try:
        return gs.import_onnx(model)
    except Exception as exc:
        raise InputError(f"{label!r} is a malformed ONNX graph ({type(exc).__name__}: {exc})",
                         "Check it with onnx.checker.check_model") from exc


def opset_of(graph: gs.Graph) -> int:
    """The default-domain opset (0 when the model declares none)."""
    return int(getattr(graph, "opset", 0) or 0)


def is_q(node: gs.Node) -> bool:
    return node.op == Q_OP


def is_dq(node: gs.Node) -> bool:
    return node.op == DQ_OP


def qdq_nodes(graph: gs.Graph) -> list[gs.Node]:
    """All Q and DQ nodes, in graph order."""
    return [n for n in graph.nodes if n.op in (Q_OP, DQ_OP)]


def producer_map(graph: gs.Graph) -> dict[str, gs.Node]:
    """Tensor name -> the node that writes it."""
    return {t.name: n for n in graph.nodes for t in n.outputs}


def consumer_map(graph: gs.Graph) -> dict[str, list[gs.Node]]:
    """Tensor name -> the nodes that read it (in graph order; a node reading twice appears once)."""
    out: dict[str, list[gs.Node]] = {}
    for n in graph.nodes:
        for t in {t.name: t for t in n.inputs if t is not None and t.name}.values():
            out.setdefault(t.name, []).append(n)
    return out


def replace_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every node input and graph output that reads ``old`` read ``new`` instead (``old``'s producer is
    then dead and goes with the next ``cleanup()``): the one rewiring step of every Q/DQ rewrite."""
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new
    for i, t in enumerate(graph.outputs):
        if t is old:
            graph.outputs[i] = new


def constant_value(tensor: gs.Tensor | None, *, through_identity: bool = False) -> np.ndarray | None:
    """The build-time constant value of ``tensor``, or None when it is computed at run time.

    A gs.Constant (initializer) and the output of an ONNX ``Constant`` node count as constant.
    TensorRT's parser requires Q/DQ scales and zero points to be such constants; with
    ``through_identity`` an ``Identity`` in between is looked through (the parser of TensorRT 8.x
    does not, hence :mod:`trtqat.graph.parser_checks` reports it).
    """
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1:
        prod = tensor.inputs[0]
        if prod.op == "Constant":
            value = prod.attrs.get("value")
            if isinstance(value, gs.Constant):
                return np.asarray(value.values)
            for key in ("value_float", "value_int"):
                if key in prod.attrs:
                    return np.asarray(prod.attrs[key])
            for key in ("value_floats", "value_ints"):
                if key in prod.attrs:
                    return np.asarray(list(prod.attrs[key]))
        if through_identity and prod.op == "Identity" and prod.inputs:
            return constant_value(prod.inputs[0], through_identity=True)
    return None


@dataclass(frozen=True)
class QParams:
    """The quantization parameters of one Q or DQ node.

    ``scale`` is None when it is not a build-time constant; ``zero_point`` is None when absent.
    """

    scale: np.ndarray | None
    zero_point: np.ndarray | None
    axis: int

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and self.scale.size > 1

    def same_scale(self, other: QParams) -> bool:
        """Exactly equal scales and axis (TensorRT compares bit-exactly before merging)."""
        return scales_equal(self, other)


def read_qparams(node: gs.Node, *, through_identity: bool = True) -> QParams:
    """Scale, zero point and axis of Q/DQ ``node`` (axis defaults to 1 as in ONNX)."""
    scale = constant_value(node.inputs[1] if len(node.inputs) > 1 else None, through_identity=through_identity)
    zp = constant_value(node.inputs[2] if len(node.inputs) > 2 else None, through_identity=through_identity)
    return QParams(None if scale is None else np.asarray(scale, dtype=np.float64), zp,
                   int(node.attrs.get("axis", 1)))


def scales_equal(a: QParams, b: QParams) -> bool:
    """True when both scales are constant, bit-identical, and (for per-channel) on the same axis."""
    if a.scale is None or b.scale is None:
        return False
    sa, sb = np.asarray(a.scale).reshape(-1), np.asarray(b.scale).reshape(-1)
    if sa.shape != sb.shape or not np.array_equal(sa, sb):
        return False
    return sa.size == 1 or a.axis == b.axis


def dq_input_of(node: gs.Node, index: int = 0) -> gs.Node | None:
    """The DequantizeLinear that produces input ``index`` of ``node``, if any."""
    if index >= len(node.inputs) or node.inputs[index] is None:
        return None
    producers = node.inputs[index].inputs
    return producers[0] if len(producers) == 1 and is_dq(producers[0]) else None


def q_of(dq: gs.Node) -> gs.Node | None:
    """The QuantizeLinear that feeds DequantizeLinear ``dq``, or ``None`` (a DQ of a constant or of an
    integer tensor from elsewhere)."""
    src = dq.inputs[0] if dq.inputs else None
    return src.inputs[0] if src is not None and len(src.inputs) == 1 and is_q(src.inputs[0]) else None


def is_weight_qdq(node: gs.Node) -> bool:
    """A Q or DQ whose data input is a constant (weight quantization, folded by TensorRT at build time)."""
    q = q_of(node) if is_dq(node) else None
    if q is not None:
        return is_weight_qdq(q)
    return bool(node.inputs) and constant_value(node.inputs[0], through_identity=True) is not None


def equal_scale_groups(qs: Iterable[gs.Node]) -> list[list[gs.Node]]:
    """Partition Q nodes into groups of equal parameters (first-seen order)."""
    groups: list[tuple[QParams, list[gs.Node]]] = []
    for q in qs:
        p = read_qparams(q)
        for gp, members in groups:
            if scales_equal(gp, p):
                members.append(q)
                break
        else:
            groups.append((p, [q]))
    return [members for _, members in groups]


def merge_equal_scale_qs(graph: gs.Graph) -> dict[str, list[str]]:
    """Merge Qs of equal scale that read the same tensor into the first one (mutates ``graph``).

    Why: TensorRT does the same before propagating Qs backward, so two sibling convs that quantize
    one tensor with one scale cost one quantization. The consumers of a merged Q are rewired to the
    kept Q's output; run ``graph.cleanup()`` afterwards to drop the dead nodes.

    Returns:
        kept Q name -> names of the Qs merged into it (only groups with more than one member).
    """
    merged: dict[str, list[str]] = {}
    cons = consumer_map(graph)
    for tensor in list(graph.tensors().values()):
        qs = [n for n in cons.get(tensor.name, []) if is_q(n) and n.inputs[0] is tensor]  # not a shared scale
        if len(qs) < 2:
            continue
        for group in equal_scale_groups(qs):
            keep, rest = group[0], group[1:]
            for q in rest:
                for out in q.outputs:
                    replace_uses(graph, out, keep.outputs[0])
                q.outputs.clear()
            if rest:
                merged[keep.name] = [q.name for q in rest]
    return merged
