"""``--float-dtype fp16``: run the non-quantized parts of a Q/DQ ONNX in FP16 under strong typing.

Why: TensorRT 10 with ``--stronglyTyped`` and TensorRT 11 (always strongly typed) run every layer outside
the Q/DQ-fused INT8 kernels in the dtype the ONNX declares (TensorRT developer guide, "Strongly Typed
Networks"; shared/reference/trt-qdq-processing.md §1.3). An FP32 export therefore runs the float detect
convs, the SiLU/Sigmoid activations, the box decoding and the output of every INT8 conv in FP32. The
``--fp16`` builder flag that used to fix this is ignored with ``--stronglyTyped`` and removed in TensorRT 11,
so the dtype has to be in the ONNX.

Choices (documented in docs/export.md):

- **Network I/O stays float32.** ``images`` is read as float32 and cast once to FP16 inside the graph; every
  output is cast back to float32 under its own name. Deployment code (and ``trtexec`` input files, the
  verification here) keeps feeding/reading float32; the two casts cost nothing measurable.
- **Q/DQ dtype follows the opset.** ONNX allows a float16 ``QuantizeLinear`` input and a float16
  ``DequantizeLinear`` output (its type is the scale's type) only from opset 19 (QuantizeLinear-19 T1 /
  DequantizeLinear-19 T2 add tensor(float16); QuantizeLinear-13 accepts float32/int32 only). So:

  * opset >= 19: scales become float16 and Q/DQ work on FP16 tensors directly (no extra nodes). This is
    what NVIDIA's Model Optimizer emits with ``trt_high_precision_dtype="Half"``, which its users report
    removes the FP32 casts around Q/DQ (NVIDIA developer forum, "Quantized GeMM using fp32 for Q/DQ
    layers", 2026). Recommended for TensorRT >= 10.
  * opset 13..18: Q/DQ must stay float32, and casting around every Q/DQ (one Cast pair per quantizer,
    175 on YOLOv5s) would put a Cast between each DQ and the conv it feeds — the exact pattern TensorRT
    fuses into an INT8 kernel — so whether TensorRT still fuses is unknown (trt-qdq-processing.md §8).
    Instead the quantized region is left exactly as in the FP32 export, and only the **float tail** is
    converted: nodes from which no QuantizeLinear is reachable and that do not read a DequantizeLinear
    output directly (the float detect convs after their producers, the box decoding). One Cast per
    boundary tensor; the Q/DQ structure, and so ``trtqat lint``'s prediction, is unchanged. The layers
    between Q/DQ (SiLU, Concat, MaxPool) run fused into INT8 kernels anyway.
- Scales that would underflow to 0 in FP16 are clamped to the smallest positive FP16 value (TensorRT
  rejects a zero scale).
- ``Resize`` scales/roi stay float32 (the ONNX type constraint for ``scales`` is float32 only); ``Range``
  (no float16 type) and ``ConstantOfShape`` (its ``value`` attribute's dtype) stay float32 and are cast
  where an FP16 layer reads them: the grids a detect head builds from the input shape (``--dynamic-hw``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from ..errors import BuildError
from .qdq import DQ_OP, Q_OP, graph_from_model

#: first opset whose QuantizeLinear/DequantizeLinear accept float16 activations and scales
FP16_QDQ_OPSET = 19
#: inputs that must stay float32 whatever the compute dtype: op -> input indices
KEEP_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
#: ops left as they are, float32 outputs included (their consumers get a Cast): ``Range`` has no float16 type,
#: ``ConstantOfShape`` writes the dtype of its ``value`` attribute. Both build grids from the input shape
#: (the detect head's anchor points with ``--dynamic-hw``)
KEEP_FP32_OPS = frozenset({"Range", "ConstantOfShape"})
_F32, _F16 = np.dtype(np.float32), np.dtype(np.float16)
_FP16_TINY = np.float16(np.finfo(np.float16).smallest_subnormal)


@dataclass
class Fp16Report:
    """What :func:`convert_to_fp16` changed."""

    opset: int = 0
    qdq_dtype: str = "float32"
    casts_added: int = 0
    initializers_converted: int = 0
    scales_clamped: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _is_f32(t: gs.Tensor) -> bool:
    return t is not None and t.dtype is not None and np.dtype(t.dtype) == _F32


class _Converter:
    def __init__(self, graph: gs.Graph, opset: int):
        self.graph = graph
        self.fp16_qdq = opset >= FP16_QDQ_OPSET
        self.report = Fp16Report(opset=opset, qdq_dtype="float16" if self.fp16_qdq else "float32")
        self._casts: dict[tuple[str, str], gs.Variable] = {}
        self.fp16_nodes = None if self.fp16_qdq else self._float_tail()

    def _float_tail(self) -> set[int]:
        """Below opset 19: ids of the nodes that run in FP16 (see module docstring)."""
        producer = {id(out): n for n in self.graph.nodes for out in n.outputs}
        reaches_q: set[int] = set()
        stack = [n for n in self.graph.nodes if n.op == Q_OP]
        while stack:
            node = stack.pop()
            if id(node) in reaches_q:
                continue
            reaches_q.add(id(node))
            stack.extend(producer[id(t)] for t in node.inputs if id(t) in producer)
        return {id(n) for n in self.graph.nodes
                if id(n) not in reaches_q and n.op not in (Q_OP, DQ_OP)
                and not any(getattr(producer.get(id(t)), "op", None) == DQ_OP for t in n.inputs)}

    def in_fp16(self, node: gs.Node) -> bool:
        return self.fp16_nodes is None or id(node) in self.fp16_nodes

    def wanted(self, node: gs.Node, index: int) -> np.dtype | None:
        """The float dtype ``node`` must read at input ``index`` (None: leave as it is)."""
        if node.op in (Q_OP, DQ_OP):
            if node.op == DQ_OP and index == 0:
                return None
            return _F16 if self.fp16_qdq else _F32
        if index in KEEP_FP32_INPUTS.get(node.op, ()):
            return _F32
        if node.op in ("Shape", "Size", "Cast") or node.op in KEEP_FP32_OPS:
            return None
        return _F16 if self.in_fp16(node) else _F32

    def cast(self, tensor: gs.Tensor, dtype: np.dtype) -> gs.Tensor:
        """``tensor`` as ``dtype``: a converted constant, or the output of a (shared) Cast node."""
        if isinstance(tensor, gs.Constant):
            return gs.Constant(f"{tensor.name}_{dtype.name}", np.asarray(tensor.values).astype(dtype))
        key = (tensor.name, dtype.name)
        if key not in self._casts:
            out = gs.Variable(f"{tensor.name}_{dtype.name}", dtype=dtype, shape=tensor.shape)
            to = onnx.TensorProto.FLOAT16 if dtype == _F16 else onnx.TensorProto.FLOAT
            self.graph.nodes.append(gs.Node("Cast", name=f"{tensor.name}_cast_{dtype.name}",
                                            attrs={"to": to}, inputs=[tensor], outputs=[out]))
            self._casts[key] = out
            self.report.casts_added += 1
        return self._casts[key]

    def run(self) -> Fp16Report:
        graph = self.graph
        keep_f32 = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
        nodes = list(graph.nodes)
        # 1. the dtype each node produces: float32 stays only for graph I/O and Q/DQ below opset 19
        for node in nodes:
            if not self.in_fp16(node) or (node.op == DQ_OP and not self.fp16_qdq) or node.op in KEEP_FP32_OPS:
                continue
            if node.op == "Cast" and node.outputs and node.outputs[0].outputs and all(
                    c.op in KEEP_FP32_OPS for c in node.outputs[0].outputs):
                continue  # a shape cast to float32 for Range: stays float32
            if node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.FLOAT:
                node.attrs["to"] = onnx.TensorProto.FLOAT16
            for out in node.outputs:
                if _is_f32(out):
                    out.dtype = _F16
        # 2. every float input gets the dtype its consumer wants (converted constants, or casts)
        converted: dict[str, gs.Constant] = {}
        for node in nodes:
            for i, t in enumerate(node.inputs):
                if t is None or t.dtype is None or np.dtype(t.dtype).kind != "f":
                    continue
                want = self.wanted(node, i)
                if want is None or np.dtype(t.dtype) == want:
                    continue
                if isinstance(t, gs.Constant):
                    key = f"{t.name}:{want.name}"
                    if key not in converted:
                        converted[key] = self._constant(t, want, is_scale=node.op in (Q_OP, DQ_OP) and i == 1)
                    node.inputs[i] = converted[key]
                else:
                    node.inputs[i] = self.cast(t, want)
        # 3. graph outputs keep their float32 name and dtype: the FP16 tensor is renamed, a Cast restores it
        for out in list(graph.outputs):
            if out.name in keep_f32 and out.dtype is not None and np.dtype(out.dtype) == _F16:
                internal = gs.Variable(f"{out.name}_fp16", dtype=_F16, shape=out.shape)
                producer = out.inputs[0]
                producer.outputs[producer.outputs.index(out)] = internal
                for consumer in list(out.outputs):
                    for j, t in enumerate(consumer.inputs):
                        if t is out:
                            consumer.inputs[j] = internal
                out.dtype = _F32
                graph.nodes.append(gs.Node("Cast", name=f"{out.name}_cast_float32",
                                           attrs={"to": onnx.TensorProto.FLOAT}, inputs=[internal], outputs=[out]))
                self.report.casts_added += 1
        return self.report

    def _constant(self, t: gs.Constant, dtype: np.dtype, *, is_scale: bool) -> gs.Constant:
        values = np.asarray(t.values).astype(dtype)
        if is_scale and dtype == _F16:
            bad = (values <= 0) & (np.asarray(t.values) > 0)
            if bad.any():
                self.report.scales_clamped += int(bad.sum())
                values = np.where(bad, _FP16_TINY, values).astype(dtype)
        self.report.initializers_converted += 1
        return gs.Constant(f"{t.name}_{dtype.name}", values)


def convert_to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return a copy of ``model`` whose float computation is FP16 (see module docstring for the rules).

    ``model`` should be cleaned first (:func:`trtqat.graph.cleanup.cleanup_model`); the result is not yet
    shape-checked: run :func:`~trtqat.graph.cleanup.infer_and_check` on it.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    typed = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = graph_from_model(typed, "exported model")
    untyped = [t.name for t in graph.tensors().values() if isinstance(t, gs.Variable) and t.dtype is None]
    if untyped:
        raise BuildError(f"--float-dtype fp16: shape inference left {len(untyped)} tensors without a dtype "
                         f"(e.g. {untyped[0]})", "Export with --float-dtype fp32")
    report = _Converter(graph, opset).run()
    graph.cleanup().toposort()
    for t in graph.tensors().values():  # shapes are re-inferred by the caller
        if isinstance(t, gs.Variable) and t not in graph.inputs and t not in graph.outputs:
            t.shape = None
    return gs.export_onnx(graph, do_type_check=True), report
