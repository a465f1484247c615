"""The float twin of a Q/DQ model: every Quantize/Dequantize pair bypassed, weights dequantized.

Why: calibration describes the float activations (the torch path collects with its quantizers
disabled), and the optimized model is compared with the input on outputs computed from the same images.
Bypassing keeps every activation tensor name a Q reads, so histograms of the twin map one to one back to
the Q nodes of the quantized graph.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .qdq import constant_value, is_dq, q_of, read_qparams, replace_uses


def float_twin(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with Q/DQ removed: activation pairs bypassed, weights replaced by their dequantized values.

    A DequantizeLinear of a constant (weights stored as int8 initializers, as ModelOpt writes them) becomes
    the float constant ``(w - zero_point) * scale``; DQ(Q(w)) becomes ``w``.
    """
    graph = gs.import_onnx(model)
    outputs = {id(t) for t in graph.outputs}
    for dq in [n for n in graph.nodes if is_dq(n)]:
        y = dq.outputs[0]
        if id(y) in outputs:
            continue  # the output keeps its name; a DQ on a graph output stays
        replacement = float_source(dq)
        if replacement is not None:
            replace_uses(graph, y, replacement)
    graph.cleanup().toposort()
    return gs.export_onnx(graph, do_type_check=False)


def float_source(dq: gs.Node) -> gs.Tensor | None:
    """The float tensor ``dq`` stands for: the input of its Q (a constant weight becomes a
    :class:`gs.Constant`), or the dequantized value of a constant integer input (weights stored as int8
    initializers, as ModelOpt writes them: ``(w - zero_point) * scale``); ``None`` for a DQ of a run-time
    integer tensor."""
    q = q_of(dq)
    if q is not None:
        replacement = q.inputs[0]
        w = constant_value(replacement, through_identity=True)
        if w is not None and not isinstance(replacement, gs.Constant):
            replacement = gs.Constant(f"{replacement.name}_float", np.asarray(w))
        return replacement
    w = constant_value(dq.inputs[0], through_identity=True)
    return None if w is None else gs.Constant(f"{dq.outputs[0].name}_float", _dequantize(dq, w))


def _dequantize(dq: gs.Node, w: np.ndarray) -> np.ndarray:
    p = read_qparams(dq)
    scale = np.asarray(p.scale)
    dtype = np.asarray(constant_value(dq.inputs[1], through_identity=True)).dtype  # the scale's float type
    zp = np.zeros(1) if p.zero_point is None else np.asarray(p.zero_point, dtype=np.float64)
    if scale.size > 1:
        shape = [1] * w.ndim
        axis = p.axis % w.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.size > 1 else zp
    return ((np.asarray(w, np.float64) - zp) * scale).astype(dtype)
