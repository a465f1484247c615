"""onnxruntime's QDQ format brought to TensorRT's Q/DQ pattern (pure ONNX).

Why: onnxruntime's ``quantize_static`` (what Ultralytics' ``export(format="onnx", quantize=8)`` runs, with
every non-weighted node excluded) writes Q/DQ for onnxruntime's own CPU kernels, and five of its habits
cost TensorRT a standalone Reformat or stop its parser:

- **Q/DQ on conv outputs** (``Conv -> Q -> DQ -> Sigmoid/Mul``): TensorRT fuses the SiLU into the conv
  only when nothing sits between them; a DQ in front of a pointwise op stays a float<->INT8 conversion.
- **one Q/DQ pair per tensor, shared by every reader**: a DQ read by a conv *and* by a float Concat, Add or
  Sigmoid cannot fuse into all of them (lint LINT002).
- **int32 bias DQs** (bias scale = input scale x weight scale): TensorRT quantizes a float bias itself
  with exactly that product (developer guide, "Q/DQ Fusion"); the DQ only freezes the input scale into it.
- **asymmetric activations** (its default: non-zero zero points, int8 or uint8): TensorRT is symmetric
  only (onnx-tensorrt: "zero point must be zero").
- **uint8 zero points** of 128 (uint8 with ``ActivationSymmetric``): the same values as int8 with zero
  point 0, stored shifted.

What :func:`to_tensorrt_pattern` does (in place):

1. folds every DQ of a constant int32 tensor (a bias) into a float initializer, ``(q - zp) * scale``, and
   in the output-quantizing style (step 5) also the DQs of constants that no weighted layer reads as its
   weight (the decode constants onnxruntime quantizes when nothing is excluded);
2. shifts integer weights with a zero point to int8 with zero point 0 where that is exact, and
   re-quantizes the others per output channel (``max |w| / 127``) from their dequantized values;
3. shifts uint8 activation Q/DQ with zero point 128 to int8 with zero point 0 (exact);
4. gives each asymmetric activation Q/DQ zero point 0 and the symmetric scale of its own range
   (``max(|min|, |max|) / 127``, nothing clipped that was not before) and lists it: such a scale is only
   a placeholder, ``trtqat optimize`` derives it again from images or refuses without them;
5. in the output-quantizing style only (Q/DQ between a weighted layer and its pointwise activation, or an
   int32 bias DQ: neither occurs in TensorRT-style exports): every reader of an activation DQ that is
   not a weighted layer (Conv, ConvTranspose, Gemm, MatMul) reads the float tensor instead. What is left
   is TensorRT's pattern, Q/DQ on the inputs of weighted layers; the Q/DQ pairs read by nothing go with
   the next ``cleanup()``. A graph output written by such a DQ is written by the float tensor instead
   (quantizing the decoded boxes and scores to one int8 scale is what makes Ultralytics exclude every
   non-weighted node). ``trtqat optimize``'s rules then put back what TensorRT needs around Concat,
   Split and residual Adds, with the scales these Qs carry.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from .optable import behaviour
from .parser_checks import expected_weight_axis
from .qdq import constant_value, is_dq, is_q, q_of, read_qparams, replace_uses

#: int8 narrow-range bound (symmetric scales are amax / 127)
BOUND = 127.0
_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255)}


@dataclass
class OrtNormalization:
    """What :func:`to_tensorrt_pattern` changed."""

    output_style: bool = False  # Q/DQ on conv outputs / shared by float readers (onnxruntime QDQ)
    readers_rewired: int = 0  # non-weighted readers of an activation DQ moved to the float tensor
    bias_dq_folded: int = 0
    constants_folded: int = 0  # DQs of constants read by no weighted layer as its weight (decode constants)
    weights_shifted: int = 0  # integer weights with a zero point stored again as int8, exactly
    weights_requantized: int = 0  # asymmetric weights quantized again, symmetric per output channel
    zero_points_shifted: int = 0  # uint8 activations with zero point 128 -> int8, exactly
    asymmetric: list[str] = field(default_factory=list)  # activation Qs whose scale is a placeholder


def output_quantizing_style(graph: gs.Graph) -> bool:
    """True for onnxruntime's QDQ style: Q/DQ between a weighted layer and its activation (``Conv -> Q -> DQ
    -> Sigmoid``), or a DQ of an int32 constant (a quantized bias). TensorRT-style exporters (trtqat,
    pytorch-quantization, ModelOpt) write neither: either would cost the conv its activation fusion."""
    for dq in (n for n in graph.nodes if is_dq(n) and n.outputs):
        if _int32_constant(dq):
            return True
        q = q_of(dq)
        src = q.inputs[0] if q is not None else None
        if src is None or len(src.inputs) != 1 or not behaviour(src.inputs[0].op).weighted:
            continue
        if any(behaviour(r.op, attrs=r.attrs).pointwise for r in dq.outputs[0].outputs):
            return True
    return False


def to_tensorrt_pattern(graph: gs.Graph, taken: set[str]) -> OrtNormalization:
    """Steps 1-5 of the module doc, in place; ``taken`` holds the graph's tensor names (new ones join it)."""
    report = OrtNormalization(output_style=output_quantizing_style(graph))
    report.bias_dq_folded = _fold_int32_dqs(graph, taken)
    if report.output_style:
        report.constants_folded = _fold_constant_dqs(graph, taken)
    _weights(graph, taken, report)
    _activations(graph, taken, report)
    if report.output_style:
        report.readers_rewired = _rewire_float_readers(graph)
    return report


def _is_constant(t: gs.Tensor | None) -> bool:
    return t is not None and constant_value(t, through_identity=True) is not None


def _int32_constant(dq: gs.Node) -> bool:
    value = constant_value(dq.inputs[0], through_identity=True) if dq.inputs else None
    return value is not None and np.asarray(value).dtype == np.int32


def _scale_dtype(node: gs.Node) -> np.dtype:
    return np.asarray(constant_value(node.inputs[1], through_identity=True)).dtype


def _new(name: str, value: np.ndarray, taken: set[str]) -> gs.Constant:
    from .normalize_qdq import unique_name  # (normalize_qdq imports this module)

    return gs.Constant(unique_name(name, taken), np.asarray(value))


def _broadcast(param: np.ndarray, values: np.ndarray, axis: int) -> np.ndarray:
    """A per-channel ``param`` shaped to broadcast against ``values`` along ``axis``."""
    param = np.asarray(param, np.float64)
    if param.size <= 1 or values.ndim == 0:
        return param.reshape(())
    shape = [1] * values.ndim
    shape[axis % values.ndim] = -1
    return param.reshape(shape)


def _dequantized(dq: gs.Node) -> np.ndarray:
    q = np.asarray(constant_value(dq.inputs[0], through_identity=True))
    p = read_qparams(dq)
    zp = np.zeros(1) if p.zero_point is None else p.zero_point
    return ((q - _broadcast(zp, q, p.axis)) * _broadcast(p.scale, q, p.axis)).astype(_scale_dtype(dq))


def _fold(graph: gs.Graph, dq: gs.Node, taken: set[str]) -> None:
    replace_uses(graph, dq.outputs[0], _new(f"{dq.outputs[0].name}_float", _dequantized(dq), taken))
    dq.outputs.clear()


def _fold_int32_dqs(graph: gs.Graph, taken: set[str]) -> int:
    dqs = [n for n in graph.nodes if is_dq(n) and _int32_constant(n) and n.outputs and not _is_output(graph, n)]
    for dq in dqs:
        _fold(graph, dq, taken)
    return len(dqs)


def _is_output(graph: gs.Graph, node: gs.Node) -> bool:
    return any(t is node.outputs[0] for t in graph.outputs)


def _feeds_a_weight(dq: gs.Node) -> bool:
    return any(expected_weight_axis(c, i) is not None for t in dq.outputs for c in t.outputs
               for i, x in enumerate(c.inputs) if x is t)


def _fold_constant_dqs(graph: gs.Graph, taken: set[str]) -> int:
    """DQs of integer constants that no weighted layer reads as its weight (onnxruntime quantizes the
    constants of a quantized Mul/Add too, e.g. the strides of the box decoding): float constants."""
    dqs = [n for n in graph.nodes if is_dq(n) and n.outputs and not _is_output(graph, n)
           and q_of(n) is None and _is_constant(n.inputs[0]) and not _feeds_a_weight(n)]
    for dq in dqs:
        _fold(graph, dq, taken)
    return len(dqs)


def _weight_axis(dq: gs.Node) -> int:
    """The output-channel axis TensorRT expects for the weight ``dq`` feeds (0 when no reader says)."""
    for t in dq.outputs:
        for c in t.outputs:
            for i, x in enumerate(c.inputs):
                axis = expected_weight_axis(c, i) if x is t else None
                if axis is not None:
                    return axis
    return 0


def _weights(graph: gs.Graph, taken: set[str], report: OrtNormalization) -> None:
    """Integer weights (DQ of a constant) and weight Q/DQ (Q of a constant) with a zero point: zero point 0."""
    for node in [n for n in graph.nodes if (is_dq(n) or is_q(n)) and n.outputs and _is_constant(n.inputs[0])]:
        if is_dq(node) and _int32_constant(node):
            continue
        p = read_qparams(node)
        zp = p.zero_point
        if zp is None or p.scale is None or (zp.dtype == np.int8 and not np.any(zp)):
            continue
        values = np.asarray(constant_value(node.inputs[0], through_identity=True))
        if is_dq(node):
            shifted = values.astype(np.int64) - _broadcast(zp, values, p.axis).astype(np.int64)
            if shifted.min() >= -128 and shifted.max() <= 127:
                node.inputs[0] = _new(f"{node.inputs[0].name}_int8", shifted.astype(np.int8), taken)
                node.inputs[2] = _new(f"{node.name}_zp_int8", np.zeros(zp.shape, np.int8), taken)
                report.weights_shifted += 1
                continue
            w = shifted * _broadcast(p.scale, values, p.axis)
        else:
            w = values.astype(np.float64)
        _requantize_weight(node, w, taken)
        report.weights_requantized += 1


def _requantize_weight(node: gs.Node, w: np.ndarray, taken: set[str]) -> None:
    """Symmetric int8 per output channel: a DQ of an int8 initializer (or, for a Q/DQ pair, its Q and DQ)."""
    dtype = _scale_dtype(node)
    dq = node if is_dq(node) else next(r for r in node.outputs[0].outputs if is_dq(r))
    axis = _weight_axis(dq)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) if w.ndim else w.reshape(1, 1)
    amax = np.abs(moved).max(axis=1)
    scale = np.maximum(amax / BOUND, float(np.finfo(dtype).tiny)).astype(dtype)
    s = _new(f"{node.name}_sym_scale", scale, taken)
    z = _new(f"{node.name}_sym_zp", np.zeros(scale.shape, np.int8), taken)
    readers = [dq] if is_dq(node) else [node, *[r for r in node.outputs[0].outputs if is_dq(r)]]
    if is_dq(node):
        ints = np.clip(np.round(w / _broadcast(scale, w, axis)), -BOUND, BOUND).astype(np.int8)
        node.inputs[0] = _new(f"{node.inputs[0].name}_int8", ints, taken)
    else:
        node.outputs[0].dtype = np.int8
    for n in readers:
        n.inputs[1], n.inputs[2] = s, z
        n.attrs["axis"] = axis


def _activations(graph: gs.Graph, taken: set[str], report: OrtNormalization) -> None:
    """Activation Q/DQ with a zero point: uint8 128 shifted exactly, other zero points given a placeholder
    symmetric scale and listed."""
    for q in [n for n in graph.nodes if is_q(n) and n.outputs and n.inputs and not _is_constant(n.inputs[0])]:
        p = read_qparams(q)
        zp = p.zero_point
        if zp is None or p.scale is None or p.per_channel or (zp.dtype == np.int8 and not np.any(zp)):
            continue
        if zp.dtype.kind not in "iu" or np.dtype(zp.dtype) not in _RANGE:
            continue  # int16 and wider: not an INT8 network (the parser check reports it)
        dtype = _scale_dtype(q)
        symmetric = zp.dtype == np.uint8 and np.all(zp == 128)
        if symmetric:
            scale = np.asarray(p.scale.reshape(()), dtype)
            report.zero_points_shifted += 1
        else:
            lo, hi = _RANGE[np.dtype(zp.dtype)]
            z = float(zp.reshape(-1)[0])
            amax = max(abs(lo - z), abs(hi - z)) * float(p.scale.reshape(-1)[0])
            scale = np.asarray(max(amax / BOUND, float(np.finfo(dtype).tiny)), dtype)
            report.asymmetric.append(q.name)
        s = _new(f"{q.name}_sym_scale", scale, taken)
        z0 = _new(f"{q.name}_sym_zp", np.zeros(zp.shape, np.int8), taken)
        q.inputs[1], q.inputs[2] = s, z0
        q.outputs[0].dtype = np.int8
        for dq in [r for r in q.outputs[0].outputs if is_dq(r)]:
            dq.inputs[1] = s
            if len(dq.inputs) > 2:
                dq.inputs[2] = z0
            else:
                dq.inputs.append(z0)


def _rewire_float_readers(graph: gs.Graph) -> int:
    """Every reader of an activation DQ that is not a weighted layer reads the Q's float input instead; a
    graph output written by such a DQ is written by that float tensor (renamed to the output's name)."""
    inputs = {id(t) for t in graph.inputs}
    rewired = 0
    for dq in [n for n in graph.nodes if is_dq(n) and n.outputs]:
        q = q_of(dq)
        if q is None or _is_constant(q.inputs[0]):
            continue
        y, x = dq.outputs[0], q.inputs[0]
        if any(t is y for t in graph.outputs):
            if id(x) in inputs or any(t is x for t in graph.outputs):
                continue  # renaming x would rename a graph input or another output
            graph.outputs[[i for i, t in enumerate(graph.outputs) if t is y][0]] = x
            name, y.name = y.name, f"{y.name}_trtqat_dq"
            x.name = name
            x.dtype, x.shape = x.dtype or y.dtype, x.shape or y.shape
            rewired += 1
        for reader in list(y.outputs):
            if behaviour(reader.op, attrs=reader.attrs).weighted:
                continue
            for i, t in enumerate(reader.inputs):
                if t is y:
                    reader.inputs[i] = x
            rewired += 1
    return rewired
