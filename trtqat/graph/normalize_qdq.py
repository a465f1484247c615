"""Bring a Q/DQ ONNX from any exporter to one canonical form before its scales are tied (pure ONNX).

Why: ``trtqat optimize`` reads graphs written by trtqat, by NVIDIA Model Optimizer (ONNX PTQ and
``torch.onnx.export`` of its torch models) and by pytorch-quantization. They encode the same Q/DQ in
different ways, and each way hides something from the analysis that follows:

- **no-op Casts** (``Cast(to=FLOAT)`` on a tensor that is already float32; ModelOpt's torch export puts
  one after many DequantizeLinear nodes): a Cast between a DQ and its conv breaks the DQ -> Conv pattern
  that TensorRT fuses and that :mod:`trtqat.graph.scale_groups` follows. Removing a Cast whose input
  already has the target dtype changes no value.
- **scale/zero-point producers** (``Identity`` or ``Constant`` nodes instead of initializers): TensorRT 8.x
  does not see an Identity output as a constant (PARSE007), and scales must be initializers to be
  rewritten. They are folded into initializers.
- **duplicate Quantize nodes** reading one tensor with one scale (one Q/DQ pair per consumer): TensorRT
  merges them itself (developer guide, "Q/DQ Limitations"); merging them here, and the identical
  DequantizeLinear nodes that then read one Q, lets a scale be changed in one place.
- **onnxruntime's QDQ format** (``quantize_static``, Ultralytics' ``quantize=8``): Q/DQ on conv outputs and
  shared by float readers, int32 bias DQs, zero points (:mod:`trtqat.graph.onnxruntime_qdq`): brought to
  TensorRT's pattern, Q/DQ on the inputs of weighted layers, float biases, int8 zero points of 0.

Every step returns counts. The first three change no value the network computes; the onnxruntime step
changes only what TensorRT would not run as written (Q/DQ between a conv and its activation, zero
points), and lists the activation scales it could not make symmetric without data
(``NormalizeReport.asymmetric``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .onnxruntime_qdq import to_tensorrt_pattern
from .qdq import DQ_OP, Q_OP, constant_value, consumer_map, is_dq, is_q, merge_equal_scale_qs, read_qparams, replace_uses

_ONNX_TO_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
               onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.BFLOAT16: None}


@dataclass
class NormalizeReport:
    """What :func:`normalize_qdq` changed."""

    noop_casts_removed: int = 0
    qparams_folded: int = 0
    duplicate_q_merged: int = 0
    duplicate_dq_merged: int = 0
    onnxruntime_style: bool = False  # Q/DQ on conv outputs / shared by float readers (onnxruntime QDQ)
    float_readers_rewired: int = 0
    bias_dq_folded: int = 0
    constant_dq_folded: int = 0
    weights_shifted: int = 0
    weights_requantized: int = 0
    zero_points_shifted: int = 0
    asymmetric: list[str] = field(default_factory=list)  # activation Qs whose symmetric scale needs data

    def to_dict(self) -> dict:
        return {"noop_casts_removed": self.noop_casts_removed, "qparams_folded": self.qparams_folded,
                "duplicate_q_merged": self.duplicate_q_merged, "duplicate_dq_merged": self.duplicate_dq_merged,
                "onnxruntime_style": self.onnxruntime_style, "float_readers_rewired": self.float_readers_rewired,
                "bias_dq_folded": self.bias_dq_folded, "constant_dq_folded": self.constant_dq_folded,
                "weights_shifted": self.weights_shifted,
                "weights_requantized": self.weights_requantized, "zero_points_shifted": self.zero_points_shifted,
                "asymmetric_activations": len(self.asymmetric)}


def normalize_qdq(graph: gs.Graph) -> NormalizeReport:
    """Remove no-op Casts, fold scale/zero-point producers, bring onnxruntime's QDQ format to TensorRT's
    pattern, merge duplicate Q and DQ nodes (in place).

    ``graph`` should carry tensor dtypes (import it from a shape-inferred model); a Cast whose input
    dtype is unknown is kept. Runs ``cleanup().toposort()`` at the end.
    """
    report = NormalizeReport()
    name_nodes(graph)
    report.noop_casts_removed = remove_noop_casts(graph)
    report.qparams_folded = fold_qparam_producers(graph)
    ort = to_tensorrt_pattern(graph, set(graph.tensors()))
    report.onnxruntime_style, report.float_readers_rewired = ort.output_style, ort.readers_rewired
    report.bias_dq_folded, report.zero_points_shifted = ort.bias_dq_folded, ort.zero_points_shifted
    report.weights_shifted, report.weights_requantized = ort.weights_shifted, ort.weights_requantized
    report.constant_dq_folded = ort.constants_folded
    graph.cleanup()
    merged = merge_equal_scale_qs(graph)
    report.duplicate_q_merged = sum(len(v) for v in merged.values())
    graph.cleanup()
    report.duplicate_dq_merged = merge_duplicate_dqs(graph)
    graph.cleanup().toposort()
    alive = {n.name for n in graph.nodes}
    report.asymmetric = [q for q in ort.asymmetric if q in alive]
    return report


def name_nodes(graph: gs.Graph) -> int:
    """Give unnamed nodes, and every repeat of a name, a unique name (groups and reports refer to nodes by
    name); returns how many were renamed."""
    seen: set[str] = set()
    renamed = 0
    for i, n in enumerate(graph.nodes):
        if not n.name or n.name in seen:
            n.name = f"{n.name or n.op}_trtqat{i}"
            renamed += 1
        seen.add(n.name)
    return renamed


def unique_name(base: str, taken: set[str]) -> str:
    """A name for new tensors/nodes: ``base`` or ``base_<n>``, chosen so that neither it nor any name derived
    from it (``<name>_q_out`` ...) is in ``taken`` (which it joins). Two tensors of one name would become one
    in the exported ONNX, silently (a second ``optimize`` run would otherwise reuse the first run's names)."""
    name, n = base, 1
    while name in taken or any(t.startswith(name + "_") for t in taken):
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def tensor_dtype(tensor: gs.Tensor) -> np.dtype | None:
    """The element type of ``tensor``, or None when neither the graph nor a DQ producer says."""
    if tensor.dtype is not None:
        try:
            return np.dtype(tensor.dtype)
        except TypeError:  # an onnx enum that numpy cannot name (bfloat16, float8)
            return None
    prod = tensor.inputs[0] if len(tensor.inputs) == 1 else None
    if prod is not None and is_dq(prod):  # a DQ writes the dtype of its scale
        scale = constant_value(prod.inputs[1], through_identity=True) if len(prod.inputs) > 1 else None
        return None if scale is None else np.asarray(scale).dtype
    return None


def remove_noop_casts(graph: gs.Graph) -> int:
    """Bypass every Cast whose input already has the target dtype; returns how many were removed.

    A Cast writing a graph output is kept (the output name is part of the model's interface).
    """
    outputs = {t.name for t in graph.outputs}
    removed = 0
    for node in list(graph.nodes):
        if node.op != "Cast" or not node.inputs or not node.outputs or node.outputs[0].name in outputs:
            continue
        to = _ONNX_TO_NP.get(int(node.attrs.get("to", 0)))
        src = tensor_dtype(node.inputs[0])
        if to is None or src is None or np.dtype(to) != src:
            continue
        if any(t is node.outputs[0] for t in graph.outputs):
            continue  # removing it would rename a graph output
        replace_uses(graph, node.outputs[0], node.inputs[0])
        node.outputs.clear()
        removed += 1
    return removed


def fold_qparam_producers(graph: gs.Graph) -> int:
    """Make every constant Q/DQ scale and zero point an initializer (through Identity/Constant nodes)."""
    folded = 0
    made: dict[str, gs.Constant] = {}  # a Q and its DQ usually read the same scale tensor: one initializer
    taken = set(graph.tensors())
    for node in graph.nodes:
        if node.op not in (Q_OP, DQ_OP):
            continue
        for i in (1, 2):
            t = node.inputs[i] if i < len(node.inputs) else None
            if t is None or isinstance(t, gs.Constant) or not t.name:
                continue
            value = constant_value(t, through_identity=True)
            if value is None:
                continue  # a computed scale: the parser check reports it
            if t.name not in made:
                made[t.name] = gs.Constant(unique_name(f"{t.name}_folded", taken), np.array(value))
                folded += 1
            node.inputs[i] = made[t.name]
    return folded


def merge_duplicate_dqs(graph: gs.Graph) -> int:
    """Merge DequantizeLinear nodes that read one tensor with equal parameters into the first one."""
    cons = consumer_map(graph)
    merged = 0
    for name, consumers in cons.items():
        dqs = [n for n in consumers if is_dq(n) and n.inputs[0].name == name and n.outputs]
        kept: list[gs.Node] = []
        for dq in dqs:
            twin = next((k for k in kept if _same_dq(k, dq)), None)
            if twin is None:
                kept.append(dq)
                continue
            replace_uses(graph, dq.outputs[0], twin.outputs[0])
            dq.outputs.clear()
            merged += 1
    return merged


def _same_dq(a: gs.Node, b: gs.Node) -> bool:
    pa, pb = read_qparams(a), read_qparams(b)
    if pa.scale is None or pb.scale is None or pa.scale.shape != pb.scale.shape:
        return False
    za = np.zeros(1) if pa.zero_point is None else pa.zero_point
    zb = np.zeros(1) if pb.zero_point is None else pb.zero_point
    return (np.array_equal(pa.scale, pb.scale) and np.array_equal(za, zb) and pa.axis == pb.axis
            and np.asarray(constant_value(a.inputs[1], through_identity=True)).dtype
            == np.asarray(constant_value(b.inputs[1], through_identity=True)).dtype)


def is_activation_q(node: gs.Node) -> bool:
    """A QuantizeLinear of a run-time tensor (not a weight)."""
    return is_q(node) and bool(node.inputs) and constant_value(node.inputs[0], through_identity=True) is None
