"""Predict, from the ONNX alone, how TensorRT will process a network's Q/DQ nodes.

Why: an INT8 engine that is slower than FP16 is almost always a placement problem (Q/DQ that
TensorRT cannot fuse become standalone Reformat layers, and precision flips between INT8 and
float). Those are visible in the engine only after a GPU build; TensorRT's documented processing
of explicit Q/DQ networks makes them predictable before one.

The simulation (shared/reference/trt-qdq-processing.md §4.1):
  1. parse; constant-fold weight Q/DQ, BN and bias;            (:class:`~.propagate.QdqIr`)
  2. merge equal-scale Qs; propagate DQ forward / Q backward;   (:meth:`~.propagate.QdqIr.propagate`)
  3. form fusion groups and assign precisions;                   (:func:`~.fusion.form_groups`)
  4. every Q/DQ no group absorbed is a standalone Reformat, with the reason (this module).

Validated against real engines (shared/fixtures/trtexec, networks rebuilt from scratch in the tests):
QAT ResNet18, TensorRT 8.4 (10, 3 and 1 standalone Q/DQ; tests/graph/test_lint_resnet18.py);
MobileNetV2, TensorRT 8.4 and 8.2 (17 and 2) and a TensorFlow ResNet50, TensorRT 8.4 (1), with every
layer's INT8/float precision (tests/graph/test_lint_mobilenet_resnet50.py). docs/lint.md lists them.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .family_detect import detect_onnx_family
from .findings import Finding, sort_findings
from .fusion import Group, form_groups
from .optable import DEFAULT_VERSION, VERSION_INFO, check_version
from .parser_checks import REFUSING_RULES, check_model_proto, check_parser
from .propagate import IrNode, QdqIr
from .qdq import DQ_OP, Q_OP, graph_from_model, load_model

log = logging.getLogger(__name__)
_DOC = "TensorRT developer guide, Explicit Quantization: 'Processing of Q/DQ Networks'"


@dataclass(frozen=True)
class LayerPrediction:
    """One predicted engine layer."""

    name: str
    op: str
    precision: str
    output: str
    fused: tuple[str, ...]
    kind: str
    macs: int
    why_float: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "precision": self.precision, "output": self.output,
                "fused": list(self.fused), "kind": self.kind, "macs": self.macs, "why_float": self.why_float}


@dataclass(frozen=True)
class StandaloneQdq:
    """A Q/DQ node predicted to run as its own Reformat layer (``Origin: QDQ`` in layer info)."""

    name: str
    op: str
    tensor: str
    rule_id: str
    reason: str
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, "tensor": self.tensor, "rule_id": self.rule_id,
                "reason": self.reason, "aliases": list(self.aliases)}


@dataclass(frozen=True)
class LintReport:
    """What ``trtqat lint`` reports; ``to_dict`` is the ``--json`` schema.

    ``refused`` is True when a parser finding (:data:`~.parser_checks.REFUSING_RULES`) means TensorRT
    would not import the model: then ``layers`` and ``standalone`` are empty and the summary's counts
    are None (no prediction, not a prediction of zero). ``parse_errors`` (summary) lists the error-severity
    ``PARSE*`` findings, refusing or not: TensorRT's parser rejects or mis-builds such a model, so
    ``trtqat lint`` exits 1 after its report. ``float_model`` (summary) is True for a graph without any
    QuantizeLinear/DequantizeLinear: nothing to predict about Q/DQ, and "fully fused" would mislead.
    """

    summary: dict[str, Any]
    layers: tuple[LayerPrediction, ...]
    standalone: tuple[StandaloneQdq, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def refused(self) -> bool:
        return bool(self.summary.get("refused"))

    @property
    def parse_errors(self) -> list[str]:
        """Rule ids of the error-severity parser findings (sorted, each once)."""
        return list(self.summary.get("parse_errors") or [])

    @property
    def float_model(self) -> bool:
        return bool(self.summary.get("float_model"))

    def to_dict(self) -> dict[str, Any]:
        return {"summary": dict(self.summary), "layers": [x.to_dict() for x in self.layers],
                "standalone": [x.to_dict() for x in self.standalone],
                "findings": [f.to_dict() for f in self.findings]}


#: rule id -> (severity, hazard template, mitigation). The template gets ``{node}`` and ``{why}``.
RULES: dict[str, tuple[str, str, str]] = {
    "LINT001": ("info", "{node} quantizes the network input: TensorRT always keeps it as a Reformat",
                "Nothing to do (FP32 input to INT8); --inputIOFormats=int8:chw can remove it"),
    "LINT002": ("warning", "{node} stays standalone: {why}",
                "Quantize the consumer too (same scale) or remove this Q/DQ pair"),
    "LINT003": ("warning", "{node} cannot move into its producer: {why}",
                "Give every consumer of the tensor a Q/DQ with the same scale (or none at all)"),
    "LINT004": ("warning", "{node} stays standalone: {why}",
                "Quantize the residual (skip) input of the Add so the fused conv writes INT8"),
    "LINT005": ("warning", "{node} stays standalone: {why}",
                "Quantize the consumer of the residual block output (e.g. GlobalAveragePool input)"),
    "LINT006": ("warning", "{node} requantizes INT8 to another scale: {why}",
                "Share one scale between the Q/DQ on both sides (Concat inputs and output, MaxPool)"),
    "LINT007": ("warning", "{node} stays standalone: {why}",
                "Quantize the producer's inputs, or drop this Q/DQ if the op must stay float"),
    "LINT008": ("info", "{node}: {why}", "Nothing to do if intended"),
    "LINT009": ("warning", "{node} runs as its own float layer: {why}",
                "Fold constants before export (do_constant_folding=True, onnxslim) so BatchNorm's parameters "
                "are initializers"),
}


#: one line per rule for grouped output ("standalone Q/DQ by reason").
RULE_TITLES: dict[str, str] = {
    "LINT001": "network-input Quantize (always a Reformat; expected)",
    "LINT002": "DQ read by a float consumer",
    "LINT003": "Q whose tensor is also read in float (or by a Q of another scale)",
    "LINT004": "Q after a conv+Add that writes float because the residual is float",
    "LINT005": "residual DQ before a conv+Add that must write float",
    "LINT006": "requantization DQ(s1) -> Q(s2)",
    "LINT007": "Q after a layer that runs in float",
    "LINT008": "Q/DQ pair folded: the conv writes float (heuristic)",
    "LINT009": "BatchNorm kept as its own float layer",
}


def standalone_by_rule(standalone: tuple[StandaloneQdq, ...] | list[StandaloneQdq]) -> dict[str, list[str]]:
    """Rule id -> names of the standalone Q/DQ it explains (rules in id order, nodes in graph order)."""
    out: dict[str, list[str]] = {}
    for s in standalone:
        out.setdefault(s.rule_id, []).append(s.name)
    return dict(sorted(out.items()))


def _finding(rule_id: str, nodes: list[str], why: str = "") -> Finding:
    sev, hazard, mitigation = RULES[rule_id]
    return Finding(rule_id, sev, tuple(nodes), hazard.format(node=nodes[0], why=why), mitigation, _DOC)


def lint_onnx(path: str | os.PathLike, *, trt_version: str = DEFAULT_VERSION) -> LintReport:
    """Lint an ONNX file (see :func:`lint_model`).

    Raises:
        InputError: the file is missing or not a readable ONNX model.
    """
    return lint_model(load_model(path), trt_version=trt_version, label=str(path))


def lint_model(model: onnx.ModelProto, *, trt_version: str = DEFAULT_VERSION, label: str = "model"
               ) -> LintReport:
    """Predict TensorRT's processing of the Q/DQ nodes of ``model`` (shape inference is best effort)."""
    check_version(trt_version)
    checker = check_model_proto(model)
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - shapes only feed MAC counts and broadcast checks
        log.info("shape inference failed (%s); MACs count unknown dims as 1", exc)
    meta = {p.key: p.value for p in model.metadata_props}
    return lint_graph(graph_from_model(model, label), trt_version=trt_version, extra_findings=checker, metadata=meta)


def lint_graph(graph: gs.Graph, *, trt_version: str = DEFAULT_VERSION,
               extra_findings: list[Finding] | tuple[Finding, ...] = (),
               metadata: Mapping[str, str] | None = None) -> LintReport:
    """Predict TensorRT's processing of the Q/DQ nodes of ``graph`` (not modified).

    ``extra_findings`` (e.g. :func:`~.parser_checks.check_model_proto` on the ModelProto) join the
    parser findings; a refusing one stops the prediction (see :attr:`LintReport.refused`). ``metadata``
    (the ONNX ``metadata_props``) lets the family be read from an exporter's keys
    (:func:`~.family_detect.detect_onnx_family`; else from the structure).
    """
    check_version(trt_version)
    findings = [*extra_findings, *check_parser(graph)]
    family = detect_onnx_family(graph, metadata)
    facts = {"float_model": not any(n.op in (Q_OP, DQ_OP) for n in graph.nodes), "parse_errors": _parse_errors(findings),
             "family": family.name, "family_from": family.source or None, "version": family.version or None}
    refusing = [f for f in findings if f.rule_id in REFUSING_RULES]
    if refusing:
        return _refused(findings, refusing, trt_version, facts)
    ir = QdqIr(graph, trt_version)
    ir.propagate()
    groups = form_groups(ir)
    _fold_float_pairs(ir, groups, findings)
    standalone = _standalone(ir, groups, findings)
    layers = tuple(_layer(ir, g) for g in groups if g.root.beh.compute)
    findings += [_finding("LINT009", [n.name], n.why_float) for n in ir.nodes if n.op == "BatchNormalization"
                 and n.why_float]
    summary = {**_summary(ir, groups, layers, standalone, trt_version), **facts}
    return LintReport(summary, layers, tuple(standalone), tuple(sort_findings(findings)))


def _parse_errors(findings: list[Finding]) -> list[str]:
    """Error-severity ``PARSE*`` rule ids: constructs TensorRT's ONNX parser rejects or mis-builds."""
    return sorted({f.rule_id for f in findings if f.rule_id.startswith("PARSE") and f.severity == "error"})


_COUNT_KEYS = ("standalone_qdq", "standalone_q", "standalone_dq", "compute_layers", "int8_layers", "int8_share",
               "int8_share_macs", "macs", "precision_boundaries", "standalone_by_rule")


def _refused(findings: list[Finding], refusing: list[Finding], version: str, facts: dict[str, Any]) -> LintReport:
    """No prediction: TensorRT's parser would reject the model (the counts are None, not 0)."""
    summary: dict[str, Any] = {"trt_version": version, "float_precision": VERSION_INFO[version].float_precision,
                               **dict.fromkeys(_COUNT_KEYS), "refused": True,
                               "refused_by": sorted({f.rule_id for f in refusing}), **facts}
    return LintReport(summary, (), (), tuple(sort_findings(findings)))


def _group_of(groups: list[Group]) -> dict[str, Group]:
    return {g.end: g for g in groups if g.end}


def _reads_int8(owner: dict[int, Group], consumer: IrNode, tensor: str) -> bool:
    g = owner.get(id(consumer))
    return g is not None and tensor in g.int8_inputs


def _fold_float_pairs(ir: QdqIr, groups: list[Group], findings: list[Finding]) -> None:
    """An INT8 weighted op whose output Q/DQ pair feeds only float consumers writes float instead.

    Why: the INT8-in/float-out conv is free (F1) and "non-weighted layers with INT8 inputs require
    INT8 outputs" (F3) leaves the float consumer unable to take INT8; the reference predictor lets
    the weighted producer emit float directly (shared reference §4 F3, DOC+HEUR, medium confidence).
    """
    owner = {id(n): g for g in groups for n in g.nodes}
    for g in groups:
        if g.kind != "weighted" or not g.out_int8:
            continue
        q = ir.cons(g.end)[0]
        dqs = ir.cons(q.outputs[0])
        if q.outputs[0] in ir.outputs or not dqs or not all(d.is_dq for d in dqs):
            continue
        if any(d.outputs[0] in ir.outputs or any(c.is_q or _reads_int8(owner, c, d.outputs[0])
                                                   for c in ir.cons(d.outputs[0])) for d in dqs):
            continue
        g.out_int8 = False
        g.nodes += [q, *dqs]
        readers = sorted({c.name for d in dqs for c in ir.cons(d.outputs[0])})
        findings.append(_finding("LINT008", [q.name, *[d.name for d in dqs]],
                                 f"Q/DQ pair folded into {g.name}, which writes float for "
                                 f"{', '.join(readers[:3])} (heuristic, medium confidence)"))


def _standalone(ir: QdqIr, groups: list[Group], findings: list[Finding]) -> list[StandaloneQdq]:
    by_end = _group_of(groups)
    owner = {id(n): g for g in groups for n in g.nodes}
    out: dict[tuple[str, str], StandaloneQdq] = {}
    for n in ir.nodes:
        if not (n.is_q or n.is_dq) or id(n) in owner:
            continue
        rule, why = _q_reason(ir, n, by_end) if n.is_q else _dq_reason(ir, n, owner)
        if rule is None:
            continue
        key = (n.name, n.inputs[0] if n.is_dq else n.outputs[0])
        if key in out:
            continue
        out[key] = StandaloneQdq(n.name, n.op, n.inputs[0], rule, why, tuple(n.merged))
        findings.append(_finding(rule, [n.name, *n.merged], why))
    return list(out.values())


def _q_reason(ir: QdqIr, q: IrNode, by_end: dict[str, Group]) -> tuple[str | None, str]:
    x = q.inputs[0]
    if q.requant_of:
        return "LINT006", f"it reads {q.requant_of}, a DequantizeLinear of another scale"
    prod = ir.prod(x)
    if prod is None or _from_network_input(ir, prod):
        return "LINT001", "the network input is FP32"
    g = by_end.get(x)
    if g is not None and g.out_int8:
        return None, ""
    others = [c for c in ir.cons(x) if c is not q]
    if others or x in ir.outputs:
        floats = [c.name for c in others if not c.is_q]
        if floats or x in ir.outputs:
            readers = ", ".join(floats[:3]) or "the network output"
            return "LINT003", f"its input {x} is also read in float by {readers}"
        return "LINT003", f"its input {x} also feeds Quantize nodes of another scale ({others[0].name})"
    if g is None:
        return "LINT007", f"its producer {prod.name} runs in float"
    if g.kind == "weighted" and g.residual is not None and g.precision == "INT8":
        return "LINT004", f"{g.name} + its residual Add writes float because the residual {g.residual} is float"
    return "LINT007", f"its producer {g.name} ({g.root.op}) runs in float: {g.why_float}"


def _from_network_input(ir: QdqIr, node: IrNode, depth: int = 8) -> bool:
    """Data movement (Pad, Transpose, ...) or a type Cast reading only network inputs, possibly through a
    chain of such ops: its output is still "the input". A Q there costs the same Reformat as a Q on the
    input itself (ModelOpt's FP16 ONNX PTQ casts the FP32 input to FP16 before the first Quantize), so lint
    reports it as the expected network-input Quantize, not as a float producer."""
    idx = ir.data_inputs(node)
    if node.beh.compute or not (node.beh.commuting or node.op == "Cast") or not idx or depth == 0:
        return False
    for i in idx:
        x = node.inputs[i]
        if x in ir.inputs:
            continue
        prod = ir.prod(x)
        if prod is None or not _from_network_input(ir, prod, depth - 1):
            return False
    return True


def _dq_reason(ir: QdqIr, d: IrNode, owner: dict[int, Group]) -> tuple[str | None, str]:
    y = d.outputs[0]
    if y in ir.outputs:
        return "LINT002", "its output is a network output (float)"
    floats = [c for c in ir.cons(y) if not c.is_q and not _reads_int8(owner, c, y)]
    if not floats:
        return None, ""  # absorbed, or counted at the requantizing Q it feeds
    c = floats[0]
    g = owner.get(id(c))
    if g is not None and g.residual == y:
        return "LINT005", (f"the residual Add fused into {g.name} must read float because that layer "
                           f"writes float ({g.why_float})")
    if g is not None and g.root is c and g.kind == "quantizable":
        return "LINT002", f"{c.name} ({c.op}) runs in float: {g.why_float}"
    return "LINT002", f"{c.name} ({c.op}) reads it in float"


def _layer(ir: QdqIr, g: Group) -> LayerPrediction:
    fused = [n.name for n in g.nodes[1:] if not (n.is_q or n.is_dq)]
    if g.kind == "weighted":
        fused = [*ir.constants.get(g.root.inputs[1], []), *fused]
    return LayerPrediction(g.name, g.root.op, g.precision, "INT8" if g.out_int8 else "float",
                           tuple(fused), g.kind, _macs(ir, g.root), g.why_float if g.precision != "INT8" else "")


def _dims(shape: Any) -> list[int]:
    return [d if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in (shape or [])]


def _macs(ir: QdqIr, node: IrNode) -> int:
    """Multiply-accumulates of a weighted op (unknown dims count as 1; others 0)."""
    if not node.beh.weighted or len(node.inputs) < 2:
        return 0
    w = ir.const_values.get(node.inputs[1])
    wshape = list(w.shape) if w is not None else _dims(ir.shapes.get(node.inputs[1]))
    if not wshape:
        return 0
    out = _dims(ir.shapes.get(node.outputs[0]))
    if node.op == "Conv":
        return int(np.prod(out or [1])) * int(np.prod(wshape[1:]))
    if node.op == "ConvTranspose":
        return int(np.prod(_dims(ir.shapes.get(node.inputs[0])) or [1])) * int(np.prod(wshape[1:]))
    k = wshape[-1] if node.op == "Gemm" and node.attrs.get("transB", 0) else wshape[0]
    if node.op == "MatMul":
        k = wshape[-2] if len(wshape) >= 2 else wshape[0]
    return int(np.prod(out or [1])) * int(k)


def _summary(ir: QdqIr, groups: list[Group], layers: tuple[LayerPrediction, ...],
             standalone: list[StandaloneQdq], version: str) -> dict[str, Any]:
    n_int8 = sum(1 for x in layers if x.precision == "INT8")
    macs = sum(x.macs for x in layers)
    macs_int8 = sum(x.macs for x in layers if x.precision == "INT8")
    n_q = sum(1 for s in standalone if s.op.startswith("Quantize"))
    return {
        "trt_version": version,
        "float_precision": VERSION_INFO[version].float_precision,
        "standalone_qdq": len(standalone),
        "standalone_q": n_q,
        "standalone_dq": len(standalone) - n_q,
        "compute_layers": len(layers),
        "int8_layers": n_int8,
        "int8_share": round(n_int8 / len(layers), 4) if layers else 0.0,
        "int8_share_macs": round(macs_int8 / macs, 4) if macs else 0.0,
        "macs": macs,
        "precision_boundaries": _boundaries(ir, groups),
        "standalone_by_rule": {k: len(v) for k, v in standalone_by_rule(standalone).items()},
        "refused": False,
    }


def _boundaries(ir: QdqIr, groups: list[Group]) -> int:
    """Producer->consumer edges between compute layers that run in different precisions.

    Q/DQ nodes and shape ops are looked through. An INT8 conv feeding a float layer counts even
    though its int8-in/float-out is free: it still marks where the INT8 region ends.
    """
    compute = {id(n): g for g in groups if g.root.beh.compute for n in g.nodes}
    owner = {id(n): g for g in groups for n in g.nodes}
    edges: set[tuple[int, int]] = set()
    for g in groups:
        if not g.root.beh.compute:
            continue
        for t in {t for n in g.nodes for t in n.inputs if t and not ir.is_const(t)}:
            p = _compute_producer(ir, t, compute, owner)
            if p is not None and p is not g and p.precision != g.precision:
                edges.add((id(p), id(g)))
    return len(edges)


def _compute_producer(ir: QdqIr, t: str, compute: dict[int, Group], owner: dict[int, Group]
                      ) -> Group | None:
    seen = 0
    while seen < 10_000:
        seen += 1
        p = ir.prod(t)
        if p is None:
            return None
        if id(p) in compute:
            return compute[id(p)]
        g = owner.get(id(p))
        ins = [x for x in p.inputs if x and not ir.is_const(x)]
        if not ins or (g is not None and g.root.beh.compute):
            return g
        t = ins[0]
    return None
