"""Scale-sharing rules applied to a quantized torch model: discover on the ONNX graph, share in torch.

Why graph identity: the groups are found on the ONNX TensorRT will see (:mod:`trtqat.graph.scale_groups`);
each QuantizeLinear must then be mapped back to the TensorQuantizer that produced it. Names are not
reliable (exporters rename, merge and reuse nodes), so before a temporary export every activation
quantizer gets a unique *fingerprint* amax (quantizer ``k`` gets ``k + 1``, so its Q scale is
``(k + 1) / 127``); reading a Q's scale gives ``k`` back. Distinct scales also keep the exporter from
merging identical sibling Q/DQ pairs (what hides siblings from the reference tool). Float weighted
layers get a temporary *probe* quantizer the same way, so the graph can name the float readers of a
quantized tensor (the float fan-out rule). Everything is restored afterwards: calibration starts clean.

Applying a group makes every member attribute (``_input_quantizer``, ``_input0_quantizer`` ...) point
to ONE TensorQuantizer object, before calibration: calibration sees every member's tensor (and keeps
one histogram per member for the balanced amax, :mod:`trtqat.quant.member_histograms`), and the sharing
survives QAT and pickling (one amax, one scale in the exported ONNX).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..graph.policy import Policy, load_policy_file, policy_file
from ..graph.qdq import is_q, load_graph, read_qparams
from ..graph.scale_groups import Fanout, find_scale_sets
from .onnx_trace import trace_onnx
from .quantizers import (
    WEIGHT_AXIS,
    input_quantizer,
    is_weight_quantizer,
    named_quantizers,
    quant_bound,
    quantizer_aliases,
    set_amax,
    weight_amax,
)
from .replace import replace_modules

log = logging.getLogger(__name__)

__all__ = ["Group", "Policy", "RulesResult", "apply_groups", "apply_rules", "discover", "load_policy"]


@dataclass(frozen=True)
class Group:
    """Quantizers that share one scale. ``members`` are module names (a probe member is a float layer
    that the quantize-input fan-out rule converts); ``rule`` is the first rule (policy order) that tied them."""

    members: tuple[str, ...]
    quantizers: tuple[str, ...]
    ops: tuple[str, ...]
    rule: str
    rule_name: str
    rules: tuple[str, ...]
    converted: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"members": list(self.members), "ops": list(self.ops), "rule": self.rule,
                "rule_name": self.rule_name, "rules": list(self.rules), "quantizers": list(self.quantizers),
                "converted": list(self.converted)}


@dataclass
class RulesResult:
    """What :func:`discover` found (nothing applied yet)."""

    policy: Policy
    groups: list[Group] = field(default_factory=list)
    fanouts: list[Fanout] = field(default_factory=list)
    aligned: list[Group] = field(default_factory=list)  # op-tied sets read by a single quantizer
    _objects: list[list[Any]] = field(default_factory=list, repr=False)  # per group: quantizers / probe names

    def to_dict(self) -> dict[str, Any]:
        return {"groups": [g.to_dict() for g in self.groups], "aligned": [g.to_dict() for g in self.aligned],
                "fanouts": [f.to_dict() for f in self.fanouts]}


def load_policy(family, rules_file: Path | None = None) -> Policy:
    """The policy for ``family`` (a :class:`~trtqat.models.FamilyInfo`): ``rules_file`` or the shipped
    ``rules/<family>.yaml`` (``default.yaml`` for unknown families), with the detect-output ignore resolved."""
    policy = load_policy_file(policy_file(family.name, rules_file))
    return policy.resolve(family.default_ignore, family.name)


def _owner(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    parent, _, attr = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


class _Probe(torch.nn.Module):
    """Wraps a float weighted layer during discovery so its input shows up as a (probe) Q node."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self._input_quantizer = input_quantizer()

    def forward(self, x):
        return self.inner(self._input_quantizer(x))


@contextlib.contextmanager
def _fingerprinted(model: torch.nn.Module, probe: bool) -> Iterator[tuple[list, dict[int, str]]]:
    """Give every activation quantizer (and probe) amax ``k + 1``; restore amax buffers and modules on exit.

    Yields (activation quantizers in index order, probe index -> float module name).
    """
    probes: dict[int, str] = {}
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    saved: list[tuple[Any, torch.Tensor | None]] = []
    try:
        if probe:
            for name, module in list(model.named_modules()):
                if type(module) in WEIGHT_AXIS:
                    parent, attr = _owner(model, name)
                    setattr(parent, attr, _Probe(module))
                    swapped.append((parent, attr, module))
        acts = []
        modules = dict(model.named_modules())
        for name, q in named_quantizers(model):
            saved.append((q, q._amax.detach().clone() if hasattr(q, "_amax") else None))
            if is_weight_quantizer(name):
                axis = q.axis[0] if isinstance(q.axis, (tuple, list)) else q.axis
                set_amax(q, weight_amax(modules[name.rsplit(".", 1)[0]].weight, axis))
                continue
            set_amax(q, float(len(acts) + 1))
            if isinstance(modules[name.rsplit(".", 1)[0]], _Probe):
                probes[len(acts)] = name.rsplit(".", 1)[0]
            acts.append(q)
        yield acts, probes
    finally:
        for q, value in saved:
            if value is None:
                q._buffers.pop("_amax", None)
            else:
                set_amax(q, value)
        for parent, attr, module in swapped:
            setattr(parent, attr, module)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def _lean_quantizers(model: torch.nn.Module, acts: list) -> Iterator[None]:
    """For the temporary trace only: each activation quantizer becomes ONE fake-quant op with its
    (fingerprint) scale, and weights stay float.

    Why: the graph analysis reads activation Q/DQ pairs only, and the full TensorQuantizer path (Python
    checks, scale arithmetic, per-channel weight fake quant) costs about twice the rest of the trace
    (YOLOv7 fixture at 64 px: 1.2 s against 0.4 s). The Q/DQ each quantizer emits is the same as in
    ``onnx_export_mode``: per-tensor, zero point 0, scale ``amax / bound``. Instance attributes, removed on exit.
    """
    act_ids = {id(q) for q in acts}
    patched: list[torch.nn.Module] = []
    try:
        for _, q in named_quantizers(model):
            if "forward" in q.__dict__:
                continue  # a shared quantizer, seen under another name
            if id(q) in act_ids:
                bound = quant_bound(q)
                scale, low = float(q._amax) / bound, 0 if q.unsigned else -bound - 1
                q.forward = (lambda s, lo, hi: lambda x: torch.fake_quantize_per_tensor_affine(x, s, 0, lo, hi))(
                    scale, low, bound)
            else:
                q.forward = _identity
            patched.append(q)
        yield
    finally:
        for q in patched:
            q.__dict__.pop("forward", None)


def _fingerprint_table(acts: list) -> dict[float, int]:
    """float32 Q scale -> quantizer index. Quantizer ``k`` has amax ``k + 1`` and the exporter writes
    scale ``amax / bound`` (bound 127 for signed 8-bit; computed per quantizer for other widths)."""
    table: dict[float, int] = {}
    for k, q in enumerate(acts):
        table.setdefault(float(np.float32((k + 1) / quant_bound(q))), k)
    return table


def _q_index(node, table: dict[float, int]) -> int | None:
    scale = read_qparams(node).scale
    if scale is None or scale.size != 1:
        return None
    return table.get(float(np.float32(scale.reshape(-1)[0])))


def discover(model: torch.nn.Module, policy: Policy, *, size: int = 640) -> RulesResult:
    """Find the scale groups of ``model`` under ``policy`` (the model is left exactly as it was)."""
    probe = bool(policy.active("float-fanout"))
    with _fingerprinted(model, probe) as (acts, probes), tempfile.TemporaryDirectory(prefix="trtqat-rules-") as tmp:
        path = Path(tmp) / "rules.onnx"
        with _lean_quantizers(model, acts):
            trace_onnx(model, path, size=size, head="raw", quantized=False)
        graph = load_graph(path)
    table = _fingerprint_table(acts)
    node_q: dict[str, int] = {}
    for node in graph.nodes:
        if is_q(node) and (k := _q_index(node, table)) is not None:
            node_q[node.name] = k
    probe_nodes = {n: probes[k] for n, k in node_q.items() if k in probes}
    convertible = {n for n, m in probe_nodes.items() if policy.convertible(m)}
    found = find_scale_sets(graph, policy, probes=probe_nodes, convertible=convertible, min_q=1)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return _to_groups(model, policy, acts, probes, node_q, found, order)


def _to_groups(model, policy: Policy, acts: list, probes: dict[int, str], node_q: dict[str, int], found,
               node_order: dict[str, int]) -> RulesResult:
    """Merge graph sets that share a quantizer (union-find over quantizer indices), add ``group`` rules."""
    parent = list(range(len(acts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    info: dict[int, tuple[set[str], set[str]]] = {}
    for s in found.sets:
        ks = [node_q[n] for n in s.q_nodes if n in node_q]
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
        if ks:
            ops, rules = info.setdefault(ks[0], (set(), set()))
            ops.update(s.ops)
            rules.update(s.rules)
    aliases = quantizer_aliases(model)
    names = {i: aliases.get(id(q), []) for i, q in enumerate(acts)}
    by_name = {n: i for i, ns in names.items() for n in ns}
    for rule in policy.active("group"):
        ks = [_member_index(m, by_name, rule.id, policy.source) for m in rule.members]
        for k in ks[1:]:
            parent[find(k)] = find(ks[0])
        info.setdefault(ks[0], (set(), set()))[1].add(rule.id)
    members: dict[int, list[int]] = {}
    for k in range(len(acts)):
        members.setdefault(find(k), []).append(k)
    for k, (ops, rules) in list(info.items()):
        if find(k) != k:
            o, r = info.setdefault(find(k), (set(), set()))
            o.update(ops)
            r.update(rules)
    # policy order, the siblings rule last: it is the weakest explanation of a group
    order = sorted(policy.rules, key=lambda r: r.kind == "siblings")
    result = RulesResult(policy=policy, fanouts=list(found.fanouts))
    for root, ks in sorted(members.items(), key=lambda kv: min(kv[1])):
        ops, rules = info.get(root, (set(), set()))
        rule_ids = [r.id for r in order if r.id in rules]
        if not rule_ids or (len(ks) < 2 and not ops):
            continue
        rule = policy.rule(rule_ids[0])
        qnames = [n for k in ks if k not in probes for n in names[k]]
        converted = [probes[k] for k in ks if k in probes]
        mods = list(dict.fromkeys([n.rsplit(".", 1)[0] for n in qnames] + converted))
        group = Group(members=tuple(mods), quantizers=tuple(qnames),
                      ops=tuple(sorted(ops, key=lambda n: node_order.get(n, 0))), rule=rule.id,
                      rule_name=rule.name, rules=tuple(rule_ids), converted=tuple(converted))
        if len(ks) < 2:
            result.aligned.append(group)  # tied by an op but read by one quantizer: consistent already
            continue
        result.groups.append(group)
        result._objects.append([probes[k] if k in probes else acts[k] for k in ks])
    return result


def _member_index(member: str, by_name: dict[str, int], rule_id: str, source: str) -> int:
    """Quantizer index of a ``group`` rule member: a quantizer name, or a module with ``_input_quantizer``."""
    name = member if member.endswith("_quantizer") else f"{member}._input_quantizer"
    if name in by_name:
        return by_name[name]
    raise InputError(f"rules file {source}: key 'rules ({rule_id}).members' names {member!r}, which is not a "
                     "quantized module of this model",
                     "Allowed values: quantized module names as printed by 'trtqat rules CKPT' (e.g. model.6.conv)")


def apply_groups(model: torch.nn.Module, result: RulesResult) -> list[Group]:
    """Make each group's quantizers one object (the first member's); convert quantize-input probes."""
    aliases = quantizer_aliases(model)
    for group, objects in zip(result.groups, result._objects):
        shared = next(o for o in objects if not isinstance(o, str))
        for obj in objects:
            if isinstance(obj, str):  # a float layer: quantize it, input from the shared quantizer
                parent, attr = _owner(model, obj)
                holder = torch.nn.Sequential(getattr(parent, attr))
                replace_modules(holder, quantize_maxpool=False, quantize_residual_add=False)
                holder[0]._input_quantizer = shared
                setattr(parent, attr, holder[0])
                continue
            for name in aliases.get(id(obj), []):
                owner, attr = _owner(model, name)
                setattr(owner, attr, shared)
        log.info("shared scale (%s %s): %s", group.rule, group.rule_name, ", ".join(group.members))
    return result.groups


def apply_rules(model: torch.nn.Module, policy: Policy, *, size: int = 640) -> list[Group]:
    """Discover the groups of ``model`` and share their quantizers (in place); returns the groups."""
    return apply_groups(model, discover(model, policy, size=size))


def converted_modules(groups: list[Group]) -> list[str]:
    """Float layers that a quantize-input fan-out rule gave an INT8 input (no longer ignored)."""
    return [m for g in groups for m in g.converted]
