"""Form TensorRT fusion groups on a propagated Q/DQ graph and decide each group's precision.

Why: after propagation (:mod:`trtqat.graph.propagate`) a Q or DQ disappears only if a kernel
absorbs it. TensorRT documents which kernels can (developer guide, "Q/DQ Fusion", "Types of
Fusions"; rule names as in shared/reference/trt-qdq-processing.md §4):

  F1  weighted op (Conv/ConvTranspose/Gemm/MatMul) + BN/bias + pointwise chain (ReLU, Clip,
      LeakyReLU, SiLU = Sigmoid + Mul(x, sigmoid(x)), ...): INT8 input when its activation comes
      through a DQ; INT8 output only when the chain's single consumer is a Q, otherwise it writes
      float for free (int8-in/float-out, observed on the TREx fc layer).
  F2  + a residual Add: the fused kernel's output precision equals the residual's precision.
      When both Add inputs come straight from convs, TensorRT lets the later conv host the Add
      (observed: the downsample conv hosts it in the TREx engines).
  F3  non-weighted quantizable op: runs INT8 only as DQ -> op -> Q.

A MatMul of two activations (the batched GEMMs of attention) is a weighted op whose "weights" arrive at run
time: TensorRT expects a Q/DQ pair on every input of a quantizable layer (developer guide), so it runs INT8
only when *both* inputs come through a DQ, and absorbs both. It hosts no residual Add.

  F4  attention (BMM1 -> [scale] -> Softmax -> Q/DQ -> BMM2, every BMM input through a DQ): TensorRT's
      multi-head-attention fusion runs the chain as one kernel, so the Softmax is BMM1's epilogue and the
      Q/DQ on its output (BMM2's input) is absorbed. NVIDIA's placement for it in explicit quantization:
      "add Q/DQ ops before the two batch gemms in the MHA and also before the ResidualAdd" (NVIDIA/TensorRT
      #3243, maintainer; the fused kernels need TensorRT 8.6+/Myelin, and their shape limits are not
      modelled). Confidence: maint, not checked against an engine here. Any other Softmax stays float.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .propagate import IrNode, QdqIr

_BIAS_OPS = ("Add", "Sub", "Mul", "Div")


@dataclass(eq=False)
class Group:
    """One predicted engine layer: a root compute node plus what fuses into it."""

    root: IrNode
    nodes: list[IrNode]
    end: str                                   # tensor the group writes
    kind: str                                  # weighted / quantizable / commuting / pointwise / float / shape
    precision: str = "float"                   # compute precision: INT8 or float
    out_int8: bool = False                     # writes INT8 (a trailing Q is absorbed)
    residual: str | None = None                # residual tensor of a fused Add
    int8_inputs: set[str] = field(default_factory=set)  # input tensors read as INT8 (their DQ is absorbed)
    why_float: str = ""

    @property
    def name(self) -> str:
        return self.root.name


def _pointwise_step(ir: QdqIr, t: str) -> list[IrNode] | None:
    """The node(s) of one fusable pointwise step reading ``t`` alone, or None."""
    if t in ir.outputs:
        return None
    cons = ir.cons(t)
    if len(cons) == 2:  # SiLU: Sigmoid(t) and Mul(t, sigmoid(t))
        sig = next((c for c in cons if c.op == "Sigmoid"), None)
        mul = next((c for c in cons if c.op == "Mul"), None)
        if sig and mul and sig.outputs[0] in mul.inputs and t in mul.inputs and ir.cons(sig.outputs[0]) == [mul]:
            return [sig, mul]
        return None
    if len(cons) != 1:
        return None
    c = cons[0]
    if c.beh.pointwise and c.inputs and c.inputs[0] == t:
        return [c]
    if c.op in _BIAS_OPS and len(c.inputs) == 2 and any(ir.is_const(x) for x in c.inputs):
        return [c]
    return None


def _chain(ir: QdqIr, t: str) -> tuple[list[IrNode], str]:
    nodes: list[IrNode] = []
    while (step := _pointwise_step(ir, t)) is not None:
        nodes += step
        t = step[-1].outputs[0]
    return nodes, t


def _residual_add(ir: QdqIr, t: str) -> IrNode | None:
    """The Add that ``t`` alone feeds, if it could fuse as a residual Add (same shapes, no constant)."""
    cons = ir.cons(t)
    if t in ir.outputs or len(cons) != 1 or cons[0].op != "Add" or len(cons[0].inputs) != 2:
        return None
    add = cons[0]
    a, b = add.inputs
    if a == b or ir.is_const(a) or ir.is_const(b):
        return None
    sa, sb = ir.shapes.get(a), ir.shapes.get(b)
    if sa is not None and sb is not None and list(sa) != list(sb):
        return None  # broadcasting sums do not fuse (TensorRT 8.x "Types of Fusions")
    return add


def is_activation_matmul(ir: QdqIr, n: IrNode) -> bool:
    """A MatMul whose two inputs are activations (the batched GEMMs of attention), not constant weights."""
    return (n.op == "MatMul" and len(n.inputs) == 2 and all(x and not ir.is_const(x) for x in n.inputs))


def _activation_inputs(ir: QdqIr, n: IrNode) -> list[str]:
    """The activation inputs of a weighted op: input 0, and input 1 too for a MatMul of two activations."""
    return list(n.inputs[:2]) if is_activation_matmul(ir, n) else [n.inputs[0]]


def _feeds_only_bmm(ir: QdqIr, t: str) -> bool:
    """Does ``t`` reach only activation MatMuls, through Q/DQ and data movement (the softmax of attention)?"""
    stack, seen, found = [t], set(), False
    while stack:
        x = stack.pop()
        if x in ir.outputs or not ir.cons(x):
            return False
        for c in ir.cons(x):
            if c.is_q or c.is_dq or (c.beh.commuting and not c.beh.compute):
                if id(c) not in seen:
                    seen.add(id(c))
                    stack += c.outputs
            elif is_activation_matmul(ir, c):
                found = True
            else:
                return False
    return found


def _attention_softmax(ir: QdqIr, bmm: IrNode, t: str) -> IrNode | None:
    """F4: the Softmax that ``t`` (the end of BMM1's chain) alone feeds, when it feeds only a BMM2 and every
    input of BMM1 comes through a DQ (an INT8 attention TensorRT fuses)."""
    cons = ir.cons(t)
    if t in ir.outputs or len(cons) != 1 or cons[0].op != "Softmax":
        return None
    if not all(ir.dq_of(x) is not None for x in bmm.inputs[:2]):
        return None
    return cons[0] if _feeds_only_bmm(ir, cons[0].outputs[0]) else None


def form_groups(ir: QdqIr) -> list[Group]:
    """Partition the non-Q/DQ nodes of ``ir`` into predicted engine layers (topological order)."""
    claimed: set[int] = set()
    groups: list[Group] = []
    heads: dict[int, tuple[list[IrNode], str]] = {}
    hosts: dict[int, tuple[IrNode, IrNode]] = {}  # id(Add) -> (Add, hosting weighted op: the later one)
    for n in ir.nodes:
        if n.beh.weighted and is_activation_matmul(ir, n):
            chain, end = _chain(ir, n.outputs[0])
            softmax = _attention_softmax(ir, n, end)
            if softmax is not None:
                post, end = _chain(ir, softmax.outputs[0])
                chain += [softmax, *post]
            heads[id(n)] = (chain, end)
        elif n.beh.weighted and len(n.inputs) > 1 and ir.is_const(n.inputs[1]):
            chain, end = _chain(ir, n.outputs[0])
            heads[id(n)] = (chain, end)
            add = _residual_add(ir, end)
            if add is not None and (id(add) not in hosts or ir.index(n) > ir.index(hosts[id(add)][1])):
                hosts[id(add)] = (add, n)
    host_of = {id(w): add for add, w in hosts.values()}
    for n in ir.nodes:
        if n.is_q or n.is_dq or id(n) in claimed:
            continue
        if id(n) in heads:
            chain, end = heads[id(n)]
            g = Group(n, [n, *chain], end, "weighted")
            add = host_of.get(id(n))
            if add is not None:
                g.residual = add.inputs[1] if add.inputs[0] == end else add.inputs[0]
                post, end = _chain(ir, add.outputs[0])
                g.nodes += [add, *post]
                g.end = end
        else:
            chain, end = _chain(ir, n.outputs[0]) if n.outputs else ([], "")
            g = Group(n, [n, *chain], end or (n.outputs[0] if n.outputs else ""), n.beh.kind)
        claimed.update(id(x) for x in g.nodes)
        _assign_precision(ir, g)
        groups.append(g)
    return groups


def _single_q(ir: QdqIr, t: str) -> IrNode | None:
    cons = ir.cons(t)
    if t in ir.outputs or len(cons) != 1 or not cons[0].is_q:
        return None
    return cons[0]


def _assign_precision(ir: QdqIr, g: Group) -> None:
    root = g.root
    if g.kind == "weighted":
        acts = _activation_inputs(ir, root)
        if any(ir.dq_of(act) is None for act in acts):
            g.why_float = ("its activation input has no DequantizeLinear (not quantized)" if len(acts) == 1 else
                           "a MatMul of two activations runs INT8 only when both inputs come through a "
                           "DequantizeLinear")
            return
        g.precision = "INT8"
        g.int8_inputs.update(acts)
        res_int8 = g.residual is None or ir.dq_of(g.residual) is not None
        q = _single_q(ir, g.end)
        if q is not None and res_int8:
            g.out_int8 = True
            if g.residual is not None:
                g.int8_inputs.add(g.residual)
        elif not res_int8:
            g.why_float = "its fused residual Add reads a float residual, so it writes float"
        else:
            g.why_float = _why_not_single_q(ir, g.end)
        return
    idx = ir.data_inputs(root)
    if root.int8:  # a commuting op that Q/DQ propagation moved across
        g.precision, g.out_int8 = "INT8", True
        g.int8_inputs.update(root.inputs[i] for i in idx)
        return
    if g.kind == "quantizable":
        all_dq = bool(idx) and all(ir.dq_of(root.inputs[i]) is not None for i in idx)
        if not all_dq:
            g.why_float = "not all of its inputs come through a DequantizeLinear"
        elif _single_q(ir, g.end) is None:
            g.why_float = ("a non-weighted op with INT8 inputs needs an INT8 output, but "
                           + _why_not_single_q(ir, g.end))
        else:
            g.precision, g.out_int8 = "INT8", True
            g.int8_inputs.update(root.inputs[i] for i in idx)
        return
    if root.why_float:
        g.why_float = root.why_float
    elif g.kind in ("commuting", "shape"):
        g.why_float = "no Q/DQ could be propagated across it"
    else:
        g.why_float = f"TensorRT has no INT8 {root.op} in explicit quantization"


def float_residuals(ir: QdqIr, groups: list[Group]) -> list[tuple[str, str]]:
    """``(Add node, residual tensor)`` of every fused conv + residual Add that runs INT8 and would write INT8
    (its output read by one Quantize) but for a float residual: what lint reports as LINT004, and where one
    Q/DQ on the residual makes the group write INT8 (F2). The residual is the addend that no conv hosts."""
    out = []
    for g in groups:
        if g.kind != "weighted" or g.precision != "INT8" or g.residual is None or ir.dq_of(g.residual) is not None:
            continue
        if _single_q(ir, g.end) is None:
            continue
        add = next((n for n in g.nodes if n.op == "Add" and g.residual in n.inputs), None)
        if add is not None:
            out.append((add.name, g.residual))
    return out


def _why_not_single_q(ir: QdqIr, t: str) -> str:
    cons = ir.cons(t)
    if t in ir.outputs:
        return "its output is a network output"
    if not cons:
        return "its output is unused"
    floats = [c.name for c in cons if not c.is_q]
    if floats:
        return f"its output is also read in float by {', '.join(floats[:3])}"
    return "its output feeds Quantize nodes of different scales"
