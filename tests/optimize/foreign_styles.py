"""Q/DQ placements of other tools, reproduced from scratch on a float ONNX (no torch, no ModelOpt).

Each function takes a float FP32 model and the calibrated amax of its activation tensors (max |x| seen
through onnxruntime) and returns a Q/DQ model placed the way that tool places it:

- :func:`modelopt_onnx`: NVIDIA Model Optimizer's ONNX PTQ (``modelopt.onnx.quantization``): one Q/DQ pair
  per quantized tensor shared by its readers; every Conv input and weight (per channel) and both inputs of
  a MatMul of two activations (attention); Q/DQ on Concat inputs, tied one Concat at a time (not back
  through a Resize); Resize and MaxPool inputs with their own scale (MaxPool input and output not tied);
  the residual Add's skip input only (an Add whose addends are read once each, attention's
  ``attn @ v + pe(v)``, gets none); ``fp16=True`` gives the FP16 graph with FP16 scales at opset 19+ that
  ``--high_precision_dtype fp16`` writes.
- :func:`modelopt_torch`: ``torch.onnx.export`` of a ModelOpt torch model: one Q/DQ pair per conv and per
  activation input of a MatMul of two activations (siblings reading one tensor each get their own), a
  no-op ``Cast(to=FLOAT)`` after each DQ, scales from ``Constant`` nodes and zero points behind
  ``Identity``; no Q/DQ on residual Adds, MaxPool, Concat or Resize.

``keep_float`` names Conv nodes left float (Ultralytics keeps the head's output convs and the DFL conv).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from trtqat.graph.qdq import constant_value


def tensor_amax(model: onnx.ModelProto, batches: list[np.ndarray]) -> dict[str, float]:
    """max |x| of every float activation tensor of ``model`` over ``batches`` (onnxruntime)."""
    from trtqat.calib.ort_collect import collect_histograms

    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    names = [t.name for n in graph.nodes for t in n.outputs
             if t.dtype is not None and np.dtype(t.dtype).kind == "f"]
    names += [t.name for t in graph.inputs]
    hists = collect_histograms(model, {t: [t] for t in names}, batches)
    return {t: h.max_seen for t, h in hists.items()}


def _scale(amax: float, dtype=np.float32) -> np.ndarray:
    return np.asarray(max(amax, 1e-6) / 127.0, dtype=dtype)


class _Placer:
    def __init__(self, model: onnx.ModelProto, amax: Mapping[str, float]):
        self.graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
        self.amax = amax
        self.k = 0

    def pair(self, x: gs.Tensor, amax: float, *, cast: bool = False, constant_nodes: bool = False) -> gs.Variable:
        """Q -> DQ on ``x`` (-> Cast to float if ``cast``), returns the DQ (or Cast) output."""
        self.k += 1
        name = f"qdq{self.k}"
        s_val, z_val = _scale(amax), np.zeros((), np.int8)
        if constant_nodes:  # scale from a Constant node, zero point behind an Identity (torch export style)
            s_t = gs.Variable(f"{name}_scale", dtype=np.float32, shape=[])
            z0 = gs.Variable(f"{name}_zp0", dtype=np.int8, shape=[])
            z_t = gs.Variable(f"{name}_zp", dtype=np.int8, shape=[])
            self.graph.nodes += [
                gs.Node("Constant", f"{name}_sc", attrs={"value": gs.Constant(f"{name}_sv", s_val)}, outputs=[s_t]),
                gs.Node("Constant", f"{name}_zc", attrs={"value": gs.Constant(f"{name}_zv", z_val)}, outputs=[z0]),
                gs.Node("Identity", f"{name}_zid", inputs=[z0], outputs=[z_t])]
        else:
            s_t, z_t = gs.Constant(f"{name}_scale", s_val), gs.Constant(f"{name}_zp", z_val)
        q_out = gs.Variable(f"{name}_q_out", dtype=np.int8)
        dq_out = gs.Variable(f"{name}_dq_out", dtype=np.float32)
        self.graph.nodes += [gs.Node("QuantizeLinear", f"{name}_q", inputs=[x, s_t, z_t], outputs=[q_out]),
                             gs.Node("DequantizeLinear", f"{name}_dq", inputs=[q_out, s_t, z_t], outputs=[dq_out])]
        if not cast:
            return dq_out
        c_out = gs.Variable(f"{name}_cast_out", dtype=np.float32)
        self.graph.nodes.append(gs.Node("Cast", f"{name}_cast", attrs={"to": onnx.TensorProto.FLOAT},
                                        inputs=[dq_out], outputs=[c_out]))
        return c_out

    def weight(self, conv: gs.Node, *, cast: bool = False) -> None:
        w = np.asarray(constant_value(conv.inputs[1]))
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        self.k += 1
        name = f"w{self.k}"
        s = gs.Constant(f"{name}_scale", np.maximum(amax, 1e-8).astype(np.float32) / np.float32(127))
        z = gs.Constant(f"{name}_zp", np.zeros(w.shape[0], np.int8))
        q_out, dq_out = gs.Variable(f"{name}_q_out", dtype=np.int8), gs.Variable(f"{name}_dq_out", dtype=np.float32)
        self.graph.nodes += [
            gs.Node("QuantizeLinear", f"{name}_q", attrs={"axis": 0}, inputs=[conv.inputs[1], s, z], outputs=[q_out]),
            gs.Node("DequantizeLinear", f"{name}_dq", attrs={"axis": 0}, inputs=[q_out, s, z], outputs=[dq_out])]
        conv.inputs[1] = dq_out if not cast else self._cast(dq_out, name)

    def _cast(self, t: gs.Variable, name: str) -> gs.Variable:
        out = gs.Variable(f"{name}_cast_out", dtype=np.float32)
        self.graph.nodes.append(gs.Node("Cast", f"{name}_cast", attrs={"to": onnx.TensorProto.FLOAT},
                                        inputs=[t], outputs=[out]))
        return out

    def model(self, opset: int) -> onnx.ModelProto:
        self.graph.cleanup().toposort()
        self.graph.opset = opset
        m = gs.export_onnx(self.graph, do_type_check=False)
        m.opset_import[0].version = opset
        del m.graph.value_info[:]
        onnx.checker.check_model(m)
        return m


def _convs(graph: gs.Graph, keep_float: Collection[str]) -> list[gs.Node]:
    return [n for n in graph.nodes if n.op == "Conv" and n.name not in keep_float
            and constant_value(n.inputs[1]) is not None]


def _matmuls(graph: gs.Graph) -> list[gs.Node]:
    """MatMuls of two activations (attention's batched GEMMs)."""
    return [n for n in graph.nodes if n.op == "MatMul" and all(constant_value(t) is None for t in n.inputs)]


def modelopt_onnx(model: onnx.ModelProto, amax: Mapping[str, float], *, keep_float: Collection[str] = (),
                  opset: int = 13, fp16: bool = False) -> onnx.ModelProto:
    p = _Placer(model, amax)
    g = p.graph
    # the tensors to quantize and their scale: conv inputs, concat inputs, resize/maxpool inputs, skip inputs
    want: dict[str, float] = {}
    convs = _convs(g, keep_float)
    for c in convs:
        want[c.inputs[0].name] = amax[c.inputs[0].name]
    for m in _matmuls(g):
        for t in m.inputs:
            want[t.name] = amax[t.name]
    for n in g.nodes:
        if n.op in ("Resize", "MaxPool"):
            want[n.inputs[0].name] = amax[n.inputs[0].name]
    cons: dict[str, int] = {}
    for n in g.nodes:
        for t in n.inputs:
            cons[t.name] = cons.get(t.name, 0) + 1
    for n in g.nodes:
        if n.op == "Add" and all(constant_value(t) is None for t in n.inputs):
            skip = max(n.inputs, key=lambda t: cons.get(t.name, 0))
            if cons.get(skip.name, 0) > 1 and skip.name in want:
                want.setdefault(skip.name, amax[skip.name])
    for n in g.nodes:  # one Concat at a time: its inputs take the largest input amax
        if n.op == "Concat" and all(t.name in amax for t in n.inputs) and any(t.name in want for t in n.inputs):
            top = max(amax[t.name] for t in n.inputs)
            for t in n.inputs:
                want[t.name] = top
    tensors = {t.name: t for t in g.tensors().values()}
    pairs = {name: p.pair(tensors[name], a) for name, a in want.items()}
    for n in list(g.nodes):
        if n.op in ("QuantizeLinear",):
            continue
        for i, t in enumerate(n.inputs):
            if t.name in pairs and n.op != "QuantizeLinear" and not (n.op == "Add" and _is_branch(n, t, cons)):
                n.inputs[i] = pairs[t.name]
    for c in convs:
        p.weight(c)
    m = p.model(max(opset, 19) if fp16 else opset)
    if fp16:
        from trtqat.graph.fp16 import convert_to_fp16

        m, _ = convert_to_fp16(m)
    return m


def _is_branch(add: gs.Node, t: gs.Tensor, cons: Mapping[str, int]) -> bool:
    """The conv-branch input of a residual Add (ModelOpt leaves it unquantized): the one read once."""
    skip = max(add.inputs, key=lambda x: cons.get(x.name, 0))
    return t is not skip


def modelopt_torch(model: onnx.ModelProto, amax: Mapping[str, float], *, keep_float: Collection[str] = ()
                   ) -> onnx.ModelProto:
    p = _Placer(model, amax)
    for c in _convs(p.graph, keep_float):
        x = c.inputs[0]
        c.inputs[0] = p.pair(x, amax[x.name], cast=True, constant_nodes=True)
        p.weight(c, cast=True)
    for m in _matmuls(p.graph):
        for i, x in enumerate(list(m.inputs)):
            m.inputs[i] = p.pair(x, amax[x.name], cast=True, constant_nodes=True)
    return p.model(13)
