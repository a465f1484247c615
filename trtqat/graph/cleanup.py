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
- **Same-type Casts** (``int64 -> int64``: the exporter writes one for integer division of top-k indices
  in YOLO26's end-to-end head) are bypassed: TensorRT imports every Cast as a layer and ``trtqat lint``
  reports them (PARSE012); a Cast that writes a graph output is kept.
- **Shape reads off the activations.** With ``--dynamic``, ``Shape -> Gather`` on an activation (a head
  or attention block that reshapes with ``x.shape``) becomes a constant where the dim is static, and reads
  the batch size from the network input where it is the batch (both found by folding the graph with the
  batch pinned to 2 and to 3: :func:`settle_shape_reads`): the activation loses a float reader that keeps
  its Quantize standalone in lint's model of TensorRT.
- ``cleanup().toposort()`` removes dead nodes and orders the graph.
- **onnx.checker + shape inference** (with data propagation) so every output has a concrete shape except
  the dynamic batch dimension: deployment code and ``trtexec --shapes`` read those shapes. Shapes read
  through ``Shape -> Gather`` of a tensor whose own shape is only known after folding (Ultralytics' DFL
  reshapes with the anchor count of the concatenated box logits) need folding and inference in turns.
- ``--simplify`` runs onnxslim (maintained successor of onnx-simplifier); the Q/DQ count is checked before
  and after, because a simplifier that folds weight Q/DQ would silently change what TensorRT quantizes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import BuildError
from .qdq import DQ_OP, Q_OP, graph_from_model, replace_uses

#: name of the dynamic batch dimension in trtqat's ONNX (input ``images`` and every output)
BATCH_DIM = "batch"
#: at most this many fold + infer rounds (Ultralytics' head needs 2: its DFL reshapes with the anchor count
#: of a tensor whose own shape is known only after the first folding)
_FOLD_ROUNDS = 4


@dataclass
class CleanupReport:
    """What :func:`cleanup_model` changed."""

    nodes_before: int = 0
    nodes_after: int = 0
    identities_removed: int = 0
    casts_removed: int = 0
    batch_shapes_rewired: int = 0
    shape_reads_folded: int = 0
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


def remove_same_type_casts(graph: gs.Graph) -> int:
    """Bypass every Cast whose input already has the target type (any type: the exporter's ``int64 -> int64``
    after an integer division); returns how many. A Cast writing a graph output is kept (the output name is
    part of the model's interface), and so is one whose input type is unknown.

    :func:`trtqat.graph.normalize_qdq.remove_noop_casts` does the same for float Casts of foreign Q/DQ graphs.
    """
    outputs = {id(t) for t in graph.outputs}
    removed = 0
    for node in list(graph.nodes):
        if node.op != "Cast" or len(node.inputs) != 1 or len(node.outputs) != 1 or id(node.outputs[0]) in outputs:
            continue
        src = node.inputs[0].dtype
        try:
            to = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs.get("to", 0)))
            same = src is not None and np.dtype(src) == to
        except (TypeError, KeyError, ValueError):  # an onnx enum numpy cannot name (bfloat16, float8)
            same = False
        if same:
            replace_uses(graph, node.outputs[0], node.inputs[0])
            node.outputs.clear()
            removed += 1
    return removed


def settle_shape_reads(graph: gs.Graph, values: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """Take the run-time ``Shape -> Gather`` reads off the activations of a dynamic-batch graph; returns (Shape
    nodes rewired to the network input, Gather outputs replaced by constants).

    Why: a head or attention block that reshapes with ``x.shape`` exports ``Shape(x) -> Gather(i)`` on an
    activation, and with a symbolic batch ONNX shape inference loses track of many shapes (a ``Resize`` gives
    its output a new symbolic batch), so constant folding leaves reads of static dims in the graph too. Each
    such read is one more reader of the activation, and a reader outside the INT8 fusions keeps the
    Quantize of that tensor standalone in ``trtqat lint``'s model of TensorRT (an Ultralytics Detect reads
    the batch from the P3 neck output, which the next neck conv quantizes; YOLO11/YOLO26 attention reads
    all four dims). ``values`` holds each Gather output with the batch pinned to 2 and to 3
    (:func:`_shape_reads`): equal in both, it is a static dim and becomes a constant; equal to the batch in
    both, and read as ``Gather(index 0)`` of a ``Shape`` (no ``start``/``end``) whose every reader is such a
    batch read, that ``Shape`` reads the single network input instead, whose dim 0 is the batch.
    """
    inputs = [t for t in graph.inputs if t.shape is not None and len(t.shape) >= 1 and isinstance(t.shape[0], str)]
    source = inputs[0] if len(inputs) == 1 else None
    rewired = folded = 0
    for node in list(graph.nodes):
        if node.op != "Shape" or node.inputs[0] is source:
            continue
        readers = [r for r in node.outputs[0].outputs if r.op == "Gather" and r.inputs[0] is node.outputs[0]]
        for r in readers:
            v2, v3 = values.get(r.outputs[0].name, (None, None))
            if v2 is not None and np.array_equal(v2, v3):  # a static dim
                replace_uses(graph, r.outputs[0], gs.Constant(f"{r.outputs[0].name}_static", v2))
                r.outputs.clear()
                folded += 1
        left = [r for r in node.outputs[0].outputs if r.outputs]
        if source is not None and left and node.attrs.get("start", 0) == 0 and "end" not in node.attrs and all(
                _gathers_batch(r, node.outputs[0], values) for r in left):
            node.inputs[0] = source
            rewired += 1
    return rewired, folded


def _gathers_batch(node: gs.Node, shape: gs.Tensor, values: dict) -> bool:
    """``node`` is ``Gather(shape, 0)`` on axis 0 and writes the batch size (2 and 3 with the batch pinned)."""
    if node.op != "Gather" or node.inputs[0] is not shape or int(node.attrs.get("axis", 0)) != 0:
        return False
    index = node.inputs[1]
    v2, v3 = values.get(node.outputs[0].name, (None, None))
    return (isinstance(index, gs.Constant) and np.asarray(index.values).size == 1
            and int(np.asarray(index.values).ravel()[0]) == 0 and v2 is not None and v2.size == 1
            and int(v2.ravel()[0]) == 2 and int(v3.ravel()[0]) == 3)


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
    for _ in range(_FOLD_ROUNDS):  # a shape known only after one folding unlocks the next Shape -> Gather
        before = len(graph.nodes)
        graph.cleanup().toposort()
        graph = gs.import_onnx(onnx.shape_inference.infer_shapes(gs.export_onnx(graph, do_type_check=False),
                                                                 data_prop=True))
        graph.fold_constants(error_ok=False).cleanup()
        if len(graph.nodes) == before:
            break
    # folding leaves Identity chains on constants in rare exporter versions: rewire again after it
    report.identities_removed += remove_qdq_param_identities(graph)
    report.casts_removed = remove_same_type_casts(graph)
    reads = [r.outputs[0].name for n in graph.nodes if n.op == "Shape" for r in n.outputs[0].outputs
             if r.op == "Gather"]
    if dynamic_batch and reads:
        graph.cleanup().toposort()
        values = _shape_reads(gs.export_onnx(graph, do_type_check=False), reads)
        report.batch_shapes_rewired, report.shape_reads_folded = settle_shape_reads(graph, values)
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


def _pinned(model: onnx.ModelProto, batch: int, done=None) -> onnx.ModelProto:
    """``model`` with every symbolic batch dim (dim 0 of the inputs) pinned to ``batch``, shape-inferred and
    constant-folded in turns until nothing more folds (or ``done(folded)`` says enough)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    for inp in probe.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    _quiet_onnxruntime()
    folded = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    for _ in range(_FOLD_ROUNDS):  # a shape known only after one folding unlocks the next Shape -> Gather
        graph = gs.import_onnx(folded)
        before = len(graph.nodes)
        graph.fold_constants().cleanup()
        for t in graph.outputs:  # let inference recompute the outputs instead of trusting declared types
            if isinstance(t, gs.Variable):
                t.shape = None
        folded = onnx.shape_inference.infer_shapes(gs.export_onnx(graph, do_type_check=False), data_prop=True)
        if len(folded.graph.node) == before or (done is not None and done(folded)):
            break
    return folded


def _probe_output_shapes(model: onnx.ModelProto) -> dict[str, onnx.TensorShapeProto]:
    """Output shapes of ``model`` with every symbolic batch dim (dim 0 of the inputs) pinned to 1."""
    names = [o.name for o in model.graph.output]

    def concrete(folded: onnx.ModelProto) -> bool:
        return all(_concrete(o.type.tensor_type) for o in folded.graph.output if o.name in names)

    found = {o.name: o for o in _pinned(model, 1, concrete).graph.output}
    return {name: found[name].type.tensor_type.shape for name in names
            if name in found and found[name].type.tensor_type.HasField("shape")}


def _shape_reads(model: onnx.ModelProto, candidates: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Values of the ``candidates`` (tensors of ``model``) with its batch pinned to 2 and to 3: each made a
    graph output (so that folding keeps it) and constant-folded; only those that fold in both."""
    from onnx import numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in candidates)
    seen = []
    for batch in (2, 3):
        folded = _pinned(probe, batch)
        consts = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer if i.name in candidates}
        consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in folded.graph.node
                       if n.op_type == "Constant" and n.output[0] in candidates and n.attribute})
        seen.append(consts)
    return {name: (v, seen[1][name]) for name, v in seen[0].items() if name in seen[1]}


def _concrete(tensor_type) -> bool:
    """A tensor type with a shape whose every dim is a fixed value."""
    return tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in tensor_type.shape.dim)


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
