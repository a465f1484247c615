"""Scale-sharing policy files (``rules/*.yaml``): load, merge (``extends:``), validate.

Why declarative: which ONNX ops make TensorRT want one scale on both sides (Concat, MaxPool, nearest
Resize, data movement, the residual Add) is TensorRT documentation, not code; which modules stay float
is a per-model decision. Both live in YAML files that users can read, diff and override with
``--rules FILE``; the code only interprets a small closed set of rule *kinds*:

- ``align``: union the data inputs and outputs of ``ops`` (ops that TensorRT moves Q/DQ across; each op
  must be a commuting op of :mod:`trtqat.graph.optable`);
- ``residual-add``: union both addends of an ``Add`` whose two inputs are quantized;
- ``siblings``: every quantizer reading one tensor shares one scale (TensorRT merges equal-scale Qs on a
  tensor; unequal ones block the Q from fusing into the producer);
- ``float-fanout``: a quantized tensor that a float layer also reads (``mode: report`` keeps the layer
  float and reports the standalone Quantize TensorRT will keep; ``quantize-input`` gives a float
  weighted layer an INT8 input with the shared scale and INT8 weights, its output stays float);
- ``group``: an explicit group of ``members`` (quantized module or quantizer names);
- ``block``: quantizers inside the forward of the module classes named in ``blocks`` (``mode``: the Split
  input of C2f-style blocks, their residual Adds, the two MatMuls of an attention block), placed by
  :mod:`trtqat.quant.blocks` when the modules are replaced; the rules above then tie their scales.

A malformed file raises :class:`~trtqat.errors.InputError` (exit 2) naming the file, the key and the
allowed values. Rules are merged by ``id`` along the ``extends:`` chain (a child entry overrides the
fields it sets); ``ignore`` lists are concatenated, parent first.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, UsageError
from .optable import OPS

#: shipped policy files: ``default.yaml`` and one per family (``trtqat/rules`` links to the repo's ``rules/``)
RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

TOP_KEYS = ("extends", "description", "ignore", "ignore_detect_outputs", "rules")
KINDS = ("align", "residual-add", "siblings", "float-fanout", "group", "block")
FANOUT_MODES = ("report", "quantize-input")
#: what a ``block`` rule quantizes inside a block -> the block classes it knows (trtqat/quant/blocks.py has
#: one forward per class: the quantizers sit inside the upstream forward, so only known classes qualify)
BLOCK_MODES = {"split-input": ("C2f", "C3k2", "C2PSA"), "residual-add": ("PSABlock", "SPPF"),
               "attention": ("Attention",)}
RESIDUAL_OPS = ("Add",)
#: rule keys allowed per kind (besides id, name, kind, why, enabled)
KIND_KEYS = {"align": ("ops",), "residual-add": ("ops",), "siblings": (), "float-fanout": ("mode",),
             "group": ("members",), "block": ("mode", "blocks")}
BASE_KEYS = ("id", "name", "kind", "why", "enabled")
ID_RE = re.compile(r"^[A-Z]{2,6}\d{3}$")
NAME_RE = re.compile(r"^[a-z0-9]+([.-][a-z0-9]+)*$")


def align_ops() -> tuple[str, ...]:
    """Op types an ``align`` rule may list: the commuting ops of the TensorRT op table."""
    return tuple(op for op, b in OPS.items() if b.commuting)


@dataclass(frozen=True)
class Rule:
    """One validated rule; ``ops``/``mode``/``members``/``blocks`` are empty unless its kind uses them."""

    id: str
    name: str
    kind: str
    why: str
    enabled: bool = True
    ops: tuple[str, ...] = ()
    mode: str = ""
    members: tuple[str, ...] = ()
    blocks: tuple[str, ...] = ()  # module class names (``block`` rules)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "kind": self.kind, "enabled": self.enabled,
                               "why": self.why}
        for key in KIND_KEYS[self.kind]:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Policy:
    """A merged, validated policy. ``ignore`` holds regexes (``re.match`` on dotted module names);
    ``ignore_detect_outputs`` adds the family's detect output convs (see :meth:`resolve`)."""

    sources: tuple[str, ...]
    description: str = ""
    ignore: tuple[str, ...] = ()
    ignore_detect_outputs: bool = True
    rules: tuple[Rule, ...] = ()
    family: str = ""
    detect_ignore: tuple[str, ...] = ()  # the patterns :meth:`resolve` added (detect output convs)

    @property
    def source(self) -> str:
        return self.sources[-1] if self.sources else ""

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    def active(self, kind: str) -> list[Rule]:
        """Enabled rules of ``kind``, in file order."""
        return [r for r in self.rules if r.kind == kind and r.enabled]

    def fanout_mode(self) -> str:
        """``report`` unless an enabled float-fanout rule says otherwise."""
        rules = self.active("float-fanout")
        return rules[0].mode if rules else "report"

    def resolve(self, detect_ignore: tuple[str, ...], family: str = "") -> Policy:
        """The policy with the detect-output patterns (``FamilyInfo.default_ignore``) folded into ``ignore``."""
        extra = tuple(p for p in detect_ignore if p not in self.ignore) if self.ignore_detect_outputs else ()
        return dataclasses.replace(self, ignore=self.ignore + extra, ignore_detect_outputs=False,
                                   family=family or self.family, detect_ignore=self.detect_ignore + extra)

    def with_overrides(self, overrides: Iterable[str]) -> Policy:
        """The policy with ``ID=SETTING`` overrides applied (``--rule TQ007=report``, ``--rule TQ004=off``).

        SETTING is ``on`` or ``off`` for any rule, or a mode of a ``float-fanout`` rule (``report``,
        ``quantize-input``; setting a mode also turns the rule on). Why on the command line: a benchmark
        or a quick experiment should not need a policy file per variant.

        Raises:
            UsageError: malformed override, unknown rule id, or a setting the rule's kind does not have.
        """
        rules = list(self.rules)
        for item in overrides:
            rule_id, sep, setting = str(item).partition("=")
            rule_id, setting = rule_id.strip(), setting.strip()
            if not sep or not rule_id or not setting:
                raise UsageError(f"--rule {item!r} is not ID=SETTING", "Write e.g. --rule TQ007=report or --rule TQ004=off")
            index = next((i for i, r in enumerate(rules) if r.id == rule_id), None)
            if index is None:
                raise UsageError(f"--rule {item!r}: no rule {rule_id!r} in {self.source or 'the policy'}",
                                 f"Known ids: {', '.join(r.id for r in rules)} (trtqat rules --list)")
            rule = rules[index]
            allowed = ("on", "off") + (FANOUT_MODES if rule.kind == "float-fanout" else ())
            if setting not in allowed:
                raise UsageError(f"--rule {item!r}: {setting!r} is not a setting of {rule_id} ({rule.kind})",
                                 f"Allowed values: {', '.join(allowed)}")
            if setting in FANOUT_MODES:
                rules[index] = dataclasses.replace(rule, mode=setting, enabled=True)
            else:
                rules[index] = dataclasses.replace(rule, enabled=setting == "on")
        fanouts = [r for r in rules if r.kind == "float-fanout" and r.enabled]
        if len(fanouts) > 1:
            raise UsageError(f"--rule enables more than one float-fanout rule ({', '.join(r.id for r in fanouts)})",
                             "Turn one of them off")
        return dataclasses.replace(self, rules=tuple(rules))

    def float_reason(self, module: str, user_ignore: Iterable[str] = (), *, family_ignore: bool = True) -> str:
        """Why ``module`` stays float: the pattern that keeps it and where the pattern comes from.

        ``user_ignore`` are the ``--ignore-policy`` patterns; ``family_ignore=False`` means the policy's own
        patterns were not used (``trtqat sensitive``).
        """
        for p in user_ignore:
            if re.match(p, module):
                return f"--ignore-policy {p}"
        name = Path(self.source).name if self.source else "the policy"
        for p in self.ignore if family_ignore else ():
            if re.match(p, module):
                if p in self.detect_ignore:
                    return f"detect output conv ({p}: ignore_detect_outputs of {name})"
                return f"ignore {p} in {name}"
        return "no ignore pattern matches"

    def convertible(self, module: str) -> bool:
        """May the quantize-input fan-out rule give float layer ``module`` an INT8 input? Only layers kept
        float by the detect-output default, never ones a policy ``ignore:`` pattern names explicitly."""
        explicit = [p for p in self.ignore if p not in self.detect_ignore]
        return (any(re.match(p, module) for p in self.detect_ignore)
                and not any(re.match(p, module) for p in explicit))

    def to_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "description": self.description, "ignore": list(self.ignore),
                "ignore_detect_outputs": self.ignore_detect_outputs, "rules": [r.to_dict() for r in self.rules]}


def policy_file(family: str, rules_file: str | Path | None = None) -> Path:
    """``rules_file`` if given, else ``rules/<family>.yaml`` when shipped, else ``rules/default.yaml``."""
    if rules_file is not None:
        return Path(rules_file)
    path = RULES_DIR / f"{family}.yaml"
    return path if path.is_file() else RULES_DIR / "default.yaml"


def load_policy_file(path: str | Path) -> Policy:
    """Load ``path`` and its ``extends:`` chain into a validated :class:`Policy`."""
    raw, sources = _load_chain(Path(path), ())
    label = str(path)
    rules = tuple(_rule(entry, label, i) for i, entry in enumerate(raw["rules"]))
    _check_unique(rules, label)
    ignore = tuple(raw["ignore"])
    for i, pattern in enumerate(ignore):
        _check_regex(pattern, label, f"ignore[{i}]")
    detect = raw.get("ignore_detect_outputs", True)
    if not isinstance(detect, bool):
        _fail(label, "ignore_detect_outputs", f"must be true or false, got {detect!r}", "Allowed values: true, false")
    return Policy(sources=sources, description=str(raw.get("description", "")), ignore=ignore,
                  ignore_detect_outputs=detect, rules=rules)


def _fail(label: str, key: str, problem: str, hint: str) -> None:
    raise InputError(f"rules file {label}: key '{key}' {problem}", hint)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"rules file {path} does not exist", f"Pass a YAML policy file, e.g. {RULES_DIR / 'default.yaml'}")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"rules file {path} is not valid YAML ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                         "Fix the YAML syntax") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"rules file {path} must hold a mapping at the top level",
                         f"Allowed keys: {', '.join(TOP_KEYS)}")
    for key in data:
        if key not in TOP_KEYS:
            _fail(str(path), str(key), "is unknown", f"Allowed keys: {', '.join(TOP_KEYS)}")
    for key in ("ignore", "rules"):
        if not isinstance(data.get(key) or [], list):
            _fail(str(path), key, f"must be a list, got {type(data[key]).__name__}", "Write it as a YAML list")
    return data


def _extends_path(value: Any, path: Path) -> Path:
    if not isinstance(value, str) or not value:
        _fail(str(path), "extends", f"must be a file name, got {value!r}",
              "Allowed values: a shipped policy (default, yolov5, yolov7) or a path relative to this file")
    if "/" not in value and not value.endswith((".yaml", ".yml")):
        return RULES_DIR / f"{value}.yaml"
    p = Path(value)
    return p if p.is_absolute() else path.parent / p


def _load_chain(path: Path, stack: tuple[Path, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Merge ``path`` over its parents: rules by id (child fields win), ignore lists concatenated."""
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(str(p) for p in (*stack, real))
        _fail(str(path), "extends", f"forms a loop ({chain})", "Remove one 'extends:' of the cycle")
    data = _read(path)
    if "extends" in data:
        parent_path = _extends_path(data["extends"], path)
        if not parent_path.is_file():
            _fail(str(path), "extends", f"names {data['extends']!r}, which does not exist ({parent_path})",
                  "Allowed values: a shipped policy (default, yolov5, yolov7) or a path relative to this file")
        merged, sources = _load_chain(parent_path, (*stack, real))
    else:
        merged, sources = {"ignore": [], "rules": []}, ()
    out = {**merged, **{k: v for k, v in data.items() if k not in ("extends", "ignore", "rules")}}
    out["ignore"] = list(merged["ignore"]) + list(data.get("ignore") or [])
    out["rules"] = _merge_rules(list(merged["rules"]), data.get("rules") or [], str(path))
    return out, (*sources, str(path))


def _merge_rules(parent: list[dict], child: list, label: str) -> list[dict]:
    index = {r.get("id"): i for i, r in enumerate(parent) if isinstance(r, dict)}
    out = [dict(r) if isinstance(r, dict) else r for r in parent]
    own: set[str] = set()
    for i, entry in enumerate(child):
        if not isinstance(entry, dict):
            _fail(label, f"rules[{i}]", f"must be a mapping, got {entry!r}",
                  f"Allowed keys: {', '.join(BASE_KEYS + ('ops', 'mode', 'members', 'blocks'))}")
        rid = entry.get("id")
        if rid in own:
            _fail(label, f"rules[{i}].id", f"repeats {rid!r}", "Give every rule of a file its own id")
        if isinstance(rid, str):
            own.add(rid)
        if rid in index:
            out[index[rid]] = {**out[index[rid]], **entry, "_file": label, "_pos": i}
        else:
            index[rid] = len(out)
            out.append({**entry, "_file": label, "_pos": i})
    return out


def _rule(entry: dict, label: str, i: int) -> Rule:
    label, i = entry.pop("_file", label), entry.pop("_pos", i)
    where = f"rules[{i}]" + (f" ({entry['id']})" if isinstance(entry.get("id"), str) else "")
    kind = entry.get("kind")
    if kind not in KINDS:
        _fail(label, f"{where}.kind", f"is {kind!r}", f"Allowed values: {', '.join(KINDS)}")
    allowed = BASE_KEYS + KIND_KEYS[kind]
    for key in entry:
        if key not in allowed:
            _fail(label, f"{where}.{key}", f"is unknown for kind '{kind}'", f"Allowed keys: {', '.join(allowed)}")
    for key in ("id", "name", "why"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            _fail(label, f"{where}.{key}", "is missing or not a string", "Every rule needs id, name, kind and why")
    if not ID_RE.match(entry["id"]):
        _fail(label, f"{where}.id", f"is {entry['id']!r}", "Allowed values: 2-6 capitals and 3 digits, e.g. TQ001")
    if not NAME_RE.match(entry["name"]):
        _fail(label, f"{where}.name", f"is {entry['name']!r}",
              "Allowed values: lower-case words joined by '.' or '-', e.g. qdq.concat-shared-scale")
    enabled = entry.get("enabled", True)
    if not isinstance(enabled, bool):
        _fail(label, f"{where}.enabled", f"is {enabled!r}", "Allowed values: true, false")
    rule = Rule(id=entry["id"], name=entry["name"], kind=kind, why=" ".join(entry["why"].split()), enabled=enabled)
    if kind in ("align", "residual-add"):
        allowed_ops = align_ops() if kind == "align" else RESIDUAL_OPS
        ops = _str_list(entry.get("ops"), label, f"{where}.ops", ", ".join(allowed_ops))
        for op in ops:
            if op not in allowed_ops:
                why = "is not an op TensorRT moves Q/DQ across" if op in OPS or kind == "residual-add" else \
                    "is not an ONNX op of the TensorRT op table"
                _fail(label, f"{where}.ops", f"lists {op!r}, which {why}", f"Allowed values: {', '.join(allowed_ops)}")
        rule = dataclasses.replace(rule, ops=tuple(ops))
    elif kind == "float-fanout":
        mode = entry.get("mode", "report")
        if mode not in FANOUT_MODES:
            _fail(label, f"{where}.mode", f"is {mode!r}", f"Allowed values: {', '.join(FANOUT_MODES)}")
        rule = dataclasses.replace(rule, mode=mode)
    elif kind == "group":
        members = _str_list(entry.get("members"), label, f"{where}.members",
                            "quantized module names such as model.6.conv, or quantizer names")
        if len(members) < 2:
            _fail(label, f"{where}.members", "needs at least two members", "List two or more module names")
        rule = dataclasses.replace(rule, members=tuple(members))
    elif kind == "block":
        mode = entry.get("mode")
        if not isinstance(mode, str) or mode not in BLOCK_MODES:
            _fail(label, f"{where}.mode", f"is {mode!r}", f"Allowed values: {', '.join(BLOCK_MODES)}")
        blocks = _str_list(entry.get("blocks"), label, f"{where}.blocks", "module class names such as C2f")
        for b in blocks:
            if b not in BLOCK_MODES[mode]:
                _fail(label, f"{where}.blocks", f"lists {b!r}, which mode '{mode}' cannot quantize",
                      f"Allowed values: {', '.join(BLOCK_MODES[mode])}")
        rule = dataclasses.replace(rule, mode=mode, blocks=tuple(blocks))
    return rule


def _str_list(value: Any, label: str, key: str, allowed: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        _fail(label, key, f"must be a non-empty list of strings, got {value!r}", f"Allowed values: {allowed}")
    return list(value)


def _check_unique(rules: tuple[Rule, ...], label: str) -> None:
    seen: dict[str, str] = {}
    for r in rules:
        if r.name in seen:
            _fail(label, "rules", f"names {r.name!r} twice ({seen[r.name]} and {r.id})", "Give every rule its own name")
        seen[r.name] = r.id
    if len([r for r in rules if r.kind == "float-fanout" and r.enabled]) > 1:
        _fail(label, "rules", "enables more than one float-fanout rule", "Keep one float-fanout rule enabled")


def _check_regex(pattern: Any, label: str, key: str) -> None:
    if not isinstance(pattern, str):
        _fail(label, key, f"must be a regex string, got {pattern!r}", r"Allowed values: Python regexes, e.g. 'model\.24\.m\..*'")
    try:
        re.compile(pattern)
    except re.error as exc:
        _fail(label, key, f"is not a valid regular expression ({pattern!r}: {exc})",
              r"Allowed values: Python regexes, e.g. 'model\.24\.m\..*'")

