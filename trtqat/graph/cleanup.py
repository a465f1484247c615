"""Make a freshly traced Q/DQ ONNX clean for TensorRT's parser (pure ONNX: no torch).

What and why:

- **Identity on Q/DQ scales/zero points.** Some torch versions export the scale and int8 zero point of a
  QuantizeLinear/DequantizeLinear through an ``Identity`` node. TensorRT's ONNX parser requires them to be
  build-time constants (initializers or ``Constant`` outputs) and fails with "invalid weights type of Int8"
  otherwise (NVIDIA/TensorRT#2163, yolo_deepstream#53/#64; reference-qat-tools.md §9). We rewire the Q/DQ
  to the Identity's constant input, then drop the dead Identity.
- **Constant folding** (onnx-graphsurgeon, which never folds Q/DQ themselves, so weight Q/DQ stay in the
  graph for TensorRT to fold at build time with its own rounding) turns the exporter's ``Constant`` nodes
  and shape arithmetic on static dimensions into initializers.
- ``cleanup().toposort()`` removes dead nodes and orders the graph.
- **onnx.checker + shape inference** (with data propagation) so every output has a concrete shape except
  the dynamic batch dimension: deployment code and ``trtexec --shapes`` read those shapes.
- ``--simplify`` runs onnxslim (maintained successor of onnx-simplifier); the Q/DQ count is checked before
  and after, because a simplifier that folds weight Q/DQ would silently change what TensorRT quantizes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx
import onnx_graphsurgeon as gs

from ..errors import BuildError
from .qdq import DQ_OP, Q_OP, graph_from_model

#: name of the dynamic batch dimension in trtqat's ONNX (input ``images`` and every output)
BATCH_DIM = "batch"


@dataclass
class CleanupReport:
    """What :func:`cleanup_model` changed."""

    nodes_before: int = 0
    nodes_after: int = 0
    identities_removed: int = 0
    simplified: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def remove_qdq_param_identities(graph: gs.Graph) -> int:
    """Bypass every ``Identity`` that feeds a Q/DQ scale or zero point; return how many inputs were rewired.

    The Identity node itself is left for ``cleanup()`` (it may have other consumers).
    """
    rewired = 0
    for node in graph.nodes:
        if node.op not in (Q_OP, DQ_OP):
            continue
        for i in (1, 2):
            if i >= len(node.inputs) or node.inputs[i] is None:
                continue
            producers = node.inputs[i].inputs
            if len(producers) == 1 and producers[0].op == "Identity" and producers[0].inputs:
                node.inputs[i] = producers[0].inputs[0]
                rewired += 1
    return rewired


def count_qdq(model: onnx.ModelProto) -> tuple[int, int]:
    """(QuantizeLinear count, DequantizeLinear count) of a ModelProto."""
    ops = [n.op_type for n in model.graph.node]
    return ops.count(Q_OP), ops.count(DQ_OP)


def cleanup_model(model: onnx.ModelProto, *, dynamic_batch: bool = False) -> tuple[onnx.ModelProto, CleanupReport]:
    """Fold, de-Identity, clean and shape-infer ``model``; returns the new model and a report."""
    report = CleanupReport(nodes_before=len(model.graph.node))
    # gs folds Shape->Gather on static dims only when it knows the shapes: infer them first
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = graph_from_model(model, "exported model")
    report.identities_removed = remove_qdq_param_identities(graph)
    graph.cleanup()
    _quiet_onnxruntime()
    graph.fold_constants(error_ok=False)
    # folding leaves Identity chains on constants in rare exporter versions: rewire again after it
    report.identities_removed += remove_qdq_param_identities(graph)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    out = infer_and_check(out, dynamic_batch=dynamic_batch)
    report.nodes_after = len(out.graph.node)
    return out, report


def infer_and_check(model: onnx.ModelProto, *, dynamic_batch: bool = False) -> onnx.ModelProto:
    """onnx.checker and strict shape inference; graph outputs get concrete inferred shapes (batch aside).

    The exporter writes placeholder dims (``Concatoutput_dim_1``) on outputs it could not track: the
    detect head reshapes with a batch size read through ``Shape -> Gather``, which ONNX data propagation
    does not follow. We infer on a probe copy whose dynamic batch is pinned to 1 and constant-folded, take
    its output shapes, and write them back with the batch dim named ``batch`` when it is dynamic.
    """
    shapes = _probe_output_shapes(model)
    for out in model.graph.output:
        shape = out.type.tensor_type.shape
        if out.name in shapes:
            shape.CopyFrom(shapes[out.name])
        if dynamic_batch and len(shape.dim):
            shape.dim[0].Clear()
            shape.dim[0].dim_param = BATCH_DIM
    del model.graph.value_info[:]
    _check(model)
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # InferenceError and friends
        raise BuildError(f"ONNX shape inference failed on the exported model ({str(exc).splitlines()[0]})",
                         "Report this with the checkpoint and the trtqat export flags used") from exc
    return model


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise BuildError(f"the exported ONNX does not pass onnx.checker ({str(exc).splitlines()[0]})",
                         "Report this with the checkpoint and the trtqat export flags used") from exc


def _probe_output_shapes(model: onnx.ModelProto) -> dict[str, onnx.TensorShapeProto]:
    """Output shapes of ``model`` with every symbolic batch dim (dim 0 of the inputs) pinned to 1."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    for inp in probe.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = 1
    names = [o.name for o in probe.graph.output]
    _quiet_onnxruntime()
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(probe, data_prop=True))
    graph.fold_constants().cleanup()
    for t in graph.outputs:  # let inference recompute the outputs instead of trusting declared types
        t.shape = None
    folded = gs.export_onnx(graph, do_type_check=False)
    folded = onnx.shape_inference.infer_shapes(folded, data_prop=True)
    found = {o.name: o for o in folded.graph.output}
    out = {}
    for name in names:
        if name in found and found[name].type.tensor_type.HasField("shape"):
            out[name] = found[name].type.tensor_type.shape
    return out


def _quiet_onnxruntime() -> None:
    """onnx-graphsurgeon evaluates folded subgraphs with onnxruntime, which warns on stderr; keep it quiet."""
    try:
        import onnxruntime
    except ImportError:  # gs then cannot fold subgraphs needing evaluation either; nothing to silence
        return
    onnxruntime.set_default_logger_severity(3)


def output_shapes(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Graph output name -> shape (int for a fixed dim, its name for a symbolic one, '?' when unknown)."""
    out = {}
    for o in model.graph.output:
        dims = []
        for d in o.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        out[o.name] = dims
    return out


def simplify_model(model: onnx.ModelProto, *, dynamic_batch: bool = False) -> onnx.ModelProto:
    """Run onnxslim, keeping every Q/DQ (raises BuildError when the simplifier removed any)."""
    from .._deps import require

    onnxslim = require("onnxslim", purpose="--simplify")
    before = count_qdq(model)
    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        raise BuildError(f"onnxslim failed on the exported model ({type(exc).__name__}: {exc})",
                         "Export without --simplify") from exc
    after = count_qdq(slim)
    if after != before:
        raise BuildError(f"onnxslim changed the Q/DQ nodes (Q/DQ {before[0]}/{before[1]} -> {after[0]}/{after[1]})",
                         "Export without --simplify; the Q/DQ placement must reach TensorRT unchanged")
    return infer_and_check(slim, dynamic_batch=dynamic_batch)


def qdq_summary(model: onnx.ModelProto) -> dict[str, int]:
    """Counts of Q/DQ nodes by role, for reports: weight (per-channel) vs activation (per-tensor)."""
    from .qdq import is_q, is_weight_qdq, read_qparams

    graph = graph_from_model(model, "model")
    qs = [n for n in graph.nodes if is_q(n)]
    weight = [n for n in qs if is_weight_qdq(n)]
    return {"quantize": len(qs), "dequantize": sum(n.op == DQ_OP for n in graph.nodes),
            "weight": len(weight), "activation": len(qs) - len(weight),
            "per_channel": sum(read_qparams(n).per_channel for n in qs)}
