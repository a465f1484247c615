"""Q/DQ constructs the TensorRT ONNX parser rejects or mishandles, found before any build.

Why: these fail (or silently build the wrong thing) only on the machine that has TensorRT, often
with an opaque "Assertion failed" from the parser. Each check cites its source:
  - symmetric quantization only: zero points absent or all zero, int8 typed (onnx-tensorrt
    operators.md: "x_zero_point must be zero"; IQuantizeLayer API docs);
  - scales are build-time constants, strictly positive (IQuantizeLayer API docs);
  - per-channel only for weights, on the output-channel axis: Conv axis 0, ConvTranspose axis 1,
    Gemm axis 0 with transB=1 else 1, MatMul axis 1 (developer guide, Q/DQ placement);
  - the ``axis`` attribute (so per-channel) exists from opset 13 (ONNX operator changelog);
  - an Identity between a constant and a Q/DQ scale/zero-point input is not a constant to the
    TensorRT 8.x parser (seen in exports without constant folding);
  - QOperator ops (QLinearConv, ...) are not supported (onnx-tensorrt operators.md);
  - a QuantizeLinear's input and its scale share one float type, and a DequantizeLinear's output has
    the scale's type (ONNX operator spec, type constraint T1/T2; an FP32 input with an FP16 scale is
    an invalid model that the parser rejects);
  - anything ``onnx.checker.check_model(full_check=True)`` rejects (the parser runs on a valid
    model only);
  - a Cast to the dtype its input already has: onnx-tensorrt imports it as a layer anyway
    (IIdentityLayer with an output type in 8.x, ICastLayer in 10.x, builtin_op_importers.cpp).

:data:`REFUSING_RULES` are the findings after which a Q/DQ prediction means nothing (the parser
would stop): ``trtqat lint`` reports them and exits 1 instead of predicting.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .findings import Finding
from .qdq import constant_value, is_weight_qdq, opset_of, qdq_nodes, read_qparams

_HELP_QDQ = "onnx-tensorrt docs/operators.md (QuantizeLinear/DequantizeLinear); IQuantizeLayer API docs"
#: findings that make TensorRT's parser refuse the model: no prediction is made after them.
REFUSING_RULES = frozenset({"PARSE010", "PARSE011"})
_HELP_ONNX = "ONNX operator spec (QuantizeLinear/DequantizeLinear type constraints); onnx.checker full check"
_HELP_CAST = ("onnx-tensorrt builtin_op_importers.cpp (Cast -> IIdentityLayer/ICastLayer); no TensorRT source "
              "says whether a same-type cast is removed before Q/DQ propagation")
_QOPERATOR = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul")


def _f(rule: str, node: str, hazard: str, mitigation: str, severity: str = "error",
       help_: str = _HELP_QDQ) -> Finding:
    return Finding(rule, severity, (node,), hazard, mitigation, help_)


def expected_weight_axis(consumer: gs.Node, input_index: int) -> int | None:
    """The output-channel axis TensorRT expects for a per-channel weight feeding ``consumer``."""
    if input_index != 1:
        return None
    if consumer.op == "Conv":
        return 0
    if consumer.op == "ConvTranspose":
        return 1
    if consumer.op == "Gemm":
        return 0 if consumer.attrs.get("transB", 0) else 1
    if consumer.op == "MatMul":
        return 1
    return None


def _weight_consumers(dq: gs.Node) -> list[tuple[gs.Node, int]]:
    out = []
    for t in dq.outputs:
        for c in t.outputs:
            out += [(c, i) for i, x in enumerate(c.inputs) if x is t]
    return out


def _weight_shape(dq: gs.Node) -> tuple[int, ...] | None:
    t = dq.inputs[0]
    if len(t.inputs) == 1 and t.inputs[0].op == "QuantizeLinear":
        t = t.inputs[0].inputs[0]
    value = constant_value(t, through_identity=True)
    return None if value is None else tuple(value.shape)


def check_parser(graph: gs.Graph) -> list[Finding]:
    """All parser findings for ``graph`` (empty when TensorRT will import its Q/DQ as intended)."""
    findings: list[Finding] = []
    opset = opset_of(graph)
    for n in graph.nodes:
        if n.op in _QOPERATOR:
            findings.append(_f("PARSE008", n.name, f"{n.op} (QOperator format) is rejected by the TensorRT parser",
                               "Export Q/DQ (QuantizeLinear/DequantizeLinear) format instead"))
    for n in qdq_nodes(graph):
        findings += _check_node(n, opset)
        findings += _check_types(n)
    findings += [_noop_cast_finding(n) for n in graph.nodes if is_noop_cast(n)]
    return findings


def check_model_proto(model: onnx.ModelProto) -> list[Finding]:
    """PARSE011 when ``onnx.checker``'s full check (with strict shape inference) rejects ``model``."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if first.startswith("No Op registered for"):
            # TensorRT's parser falls back to a plugin of that name (e.g. EfficientNMS_TRT exported into the
            # default domain), so this alone is no reason to refuse; the checker stopped there, though.
            return [_f("PARSE013", "model", f"onnx.checker: {first}; TensorRT needs a plugin of that name, and the "
                       "checker's remaining checks did not run", "Put custom ops in their own domain "
                       "(e.g. 'TRT') so the ONNX checker can validate the rest", severity="warning",
                       help_=_HELP_ONNX)]
        return [_f("PARSE011", "model", f"onnx.checker rejects the model: {first}",
                   "Fix the export (the TensorRT parser needs a valid ONNX model); run onnx.checker.check_model("
                   "model, full_check=True) to see every problem", help_=_HELP_ONNX)]
    except ValueError as exc:  # e.g. a model over 2 GB given as a proto: the full check needs the file
        return [_f("PARSE011", "model", f"onnx.checker could not check the model: {exc}",
                   "Check the saved file with onnx.checker.check_model(path, full_check=True)",
                   severity="warning", help_=_HELP_ONNX)]
    return []


def _dtype(t: gs.Tensor | None) -> np.dtype | None:
    if t is None:
        return None
    if isinstance(t, gs.Constant):
        return np.asarray(t.values).dtype
    value = constant_value(t, through_identity=True)
    if value is not None:
        return value.dtype
    try:
        return np.dtype(t.dtype) if t.dtype is not None else None
    except TypeError:
        return None


def _check_types(n: gs.Node) -> list[Finding]:
    """PARSE010: Q input (DQ output) type differs from the scale type."""
    scale = _dtype(n.inputs[1]) if len(n.inputs) > 1 else None
    data = n.inputs[0] if n.op == "QuantizeLinear" else (n.outputs[0] if n.outputs else None)
    other = _dtype(data)
    if scale is None or other is None or scale.kind != "f" or other.kind != "f" or scale == other:
        return []
    what = "input" if n.op == "QuantizeLinear" else "output"
    return [_f("PARSE010", n.name, f"{n.name} has a {other} {what} but a {scale} scale: ONNX requires one type, "
               "and the TensorRT parser rejects the model",
               f"Give the scale the {what}'s type ({other}), or cast the {what} (opset 19+ for float16 Q/DQ)",
               help_=_HELP_ONNX)]


def is_noop_cast(n: gs.Node) -> bool:
    """A Cast whose ``to`` is the dtype its input already has (known from shape inference)."""
    if n.op != "Cast" or not n.inputs or "to" not in n.attrs:
        return False
    src = _dtype(n.inputs[0])
    try:
        dst = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(n.attrs["to"])))
    except (KeyError, TypeError, ValueError):
        return False
    return src is not None and src == dst


def _noop_cast_finding(n: gs.Node) -> Finding:
    return _f("PARSE012", n.name, f"{n.name} casts {_dtype(n.inputs[0])} to the same type: TensorRT still imports "
              "it as a layer, and lint treats it as a float layer that blocks Q/DQ propagation (conservative: no "
              "source says TensorRT removes it first)",
              "Remove no-op Casts (onnx-graphsurgeon cleanup, onnxslim)", severity="warning", help_=_HELP_CAST)


def _check_node(n: gs.Node, opset: int) -> list[Finding]:
    out: list[Finding] = []
    scale_t = n.inputs[1] if len(n.inputs) > 1 else None
    zp_t = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] is not None and n.inputs[2].name else None
    for label, t in (("scale", scale_t), ("zero point", zp_t)):
        if t is not None and constant_value(t) is None and constant_value(t, through_identity=True) is not None:
            out.append(_f("PARSE007", n.name, f"the {label} of {n.name} comes through an Identity node; "
                          "TensorRT 8.x does not see it as a constant",
                          "Fold constants before export (torch.onnx.export(do_constant_folding=True) or onnxslim)"))
    p = read_qparams(n)
    if p.scale is None:
        out.append(_f("PARSE002", n.name, f"the scale of {n.name} is not a build-time constant",
                      "Export scales as initializers (calibrated amax, constant folding on)"))
    elif np.any(~(p.scale > 0)) or not np.all(np.isfinite(p.scale)):
        out.append(_f("PARSE003", n.name, f"{n.name} has a zero, negative or non-finite scale",
                      "Recalibrate: an amax of 0 (dead channel) gives scale 0; clamp amax to a small positive value"))
    if p.zero_point is not None:
        if np.any(p.zero_point != 0):
            out.append(_f("PARSE001", n.name, f"{n.name} has a non-zero zero point (TensorRT is symmetric only)",
                          "Use symmetric quantization (pytorch-quantization's default)"))
        elif p.zero_point.dtype not in (np.int8,) and p.zero_point.dtype.kind in "iu":
            out.append(_f("PARSE009", n.name, f"{n.name} has a {p.zero_point.dtype} zero point; TensorRT "
                          "expects int8", "Export int8 zero points (narrow range, symmetric)", "warning"))
    if p.per_channel:
        out += _check_per_channel(n, p.axis, p.scale.size, opset)
    return out


def _check_per_channel(n: gs.Node, axis: int, size: int, opset: int) -> list[Finding]:
    out: list[Finding] = []
    if opset and opset < 13:
        out.append(_f("PARSE006", n.name, f"{n.name} is per-channel but the model is opset {opset}; the axis "
                      "attribute needs opset 13", "Export with opset_version=13 or later"))
    if not is_weight_qdq(n):
        out.append(_f("PARSE004", n.name, f"{n.name} quantizes an activation per channel; TensorRT supports "
                      "per-tensor activation scales only", "Use a per-tensor quantizer for activations"))
        return out
    if n.op != "DequantizeLinear":
        return out
    for consumer, idx in _weight_consumers(n):
        want = expected_weight_axis(consumer, idx)
        if want is None:
            continue
        shape = _weight_shape(n)
        ax = axis + len(shape) if axis < 0 and shape else axis
        if ax != want:
            out.append(_f("PARSE005", n.name, f"{n.name} quantizes the weight of {consumer.op} {consumer.name} "
                          f"on axis {axis}; TensorRT expects the output-channel axis {want}",
                          f"Quantize {consumer.op} weights per output channel (axis={want})"))
        elif shape and len(shape) > want and isinstance(shape[want], int) and shape[want] != size:
            out.append(_f("PARSE005", n.name, f"{n.name} has {size} scales but the weight has {shape[want]} "
                          "output channels", "Re-export: the scale length must equal the channel count"))
    return out
