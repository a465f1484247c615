"""Replace float modules by pytorch-quantization modules, per instance, keeping their weights.

What gets quantized, and why (TensorRT explicit quantization):

- Conv2d, ConvTranspose2d, Linear: input per-tensor, weight per-channel — the weighted layers that run
  INT8 kernels;
- MaxPool2d: TensorRT moves Q/DQ across pooling (a commuting op), so a quantized MaxPool input lets it
  run pooling in INT8 inside SPPF/SPPCSPC/MP blocks; the reference tool never quantizes it;
- the residual Add of Bottleneck-style blocks (``QuantAdd``): lets TensorRT fuse the add into the conv
  with an INT8 output;
- AvgPool2d / AdaptiveAvgPool2d: quantizable non-weighted layers;
- inside the blocks a policy ``block`` rule names (``blocks``): the Split input of C2f-style blocks, their
  residual Adds, the MatMuls of attention (:mod:`trtqat.quant.blocks`).

Modules whose dotted name matches an ignore regex (``re.match``, anchored at the start) stay float;
the family default keeps the detect head's output convs in float. A pattern that keeps nothing float (it
matches no quantizable module) is logged as a warning and listed in ``ReplaceReport.unmatched``: a
pattern meant for another model or family must not pass silently (the YOLOv5-style pattern ``<detect>.m.*``
on an Ultralytics model left every head conv INT8).
"""
from __future__ import annotations

import logging
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import torch
from pytorch_quantization import nn as qnn

from ..errors import UsageError
from .blocks import quantize_blocks
from .quantizers import WEIGHT_AXIS, input_quantizer, weight_quantizer
from .residual import is_residual_block, quantize_residual

log = logging.getLogger(__name__)

#: float type -> (quant type, has weight)
QUANT_MAP: dict[type, tuple[type, bool]] = {
    torch.nn.Conv2d: (qnn.QuantConv2d, True),
    torch.nn.ConvTranspose2d: (qnn.QuantConvTranspose2d, True),
    torch.nn.Linear: (qnn.QuantLinear, True),
    torch.nn.MaxPool2d: (qnn.QuantMaxPool2d, False),
    torch.nn.AvgPool2d: (qnn.QuantAvgPool2d, False),
    torch.nn.AdaptiveAvgPool2d: (qnn.QuantAdaptiveAvgPool2d, False),
}


@dataclass
class ReplaceReport:
    """What :func:`replace_modules` did: counts per quantized type and the names left in float."""

    quantized: Counter = field(default_factory=Counter)
    ignored: list[str] = field(default_factory=list)
    residual_adds: list[str] = field(default_factory=list)
    block_ops: dict[str, str] = field(default_factory=dict)  # quantizer module a block rule created -> rule id
    float_why: dict[str, str] = field(default_factory=dict)  # ignored module -> why it stays float
    converted: dict[str, str] = field(default_factory=dict)  # module a rule gave an INT8 input -> how
    placement: str = ""  # the placement that produced this: rules, --no-share or the --no-rules baseline
    unmatched: list[str] = field(default_factory=list)  # ignore patterns that kept no module float

    def to_dict(self) -> dict:
        return {"quantized": dict(self.quantized), "ignored": self.ignored, "residual_adds": self.residual_adds,
                "block_ops": self.block_ops, "float_why": self.float_why, "converted": self.converted,
                "unmatched": self.unmatched}

    def recount(self, model: torch.nn.Module) -> None:
        """Count the quantized modules actually in ``model`` (after rules that convert layers)."""
        quant_types = {q.__name__ for q, _ in QUANT_MAP.values()} | {"QuantAdd", "QuantSplit", "QuantMatMul"}
        self.quantized = Counter(type(m).__name__ for m in model.modules() if type(m).__name__ in quant_types)


def compile_policy(patterns: Iterable[str]) -> list[re.Pattern]:
    """Compile ignore regexes, naming the bad one on error."""
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as exc:
            raise UsageError(f"--ignore-policy {p!r} is not a valid regular expression ({exc})",
                             r"Use a Python regex such as 'model\.105\.m\..*'") from exc
    return out


def ignored(name: str, policy: list[re.Pattern], hits: set[str] | None = None) -> bool:
    """Does a pattern of ``policy`` match ``name``? Adds the matching patterns to ``hits`` when given."""
    found = [p.pattern for p in policy if p.match(name)]
    if hits is not None:
        hits.update(found)
    return bool(found)


def _swap(module: torch.nn.Module, quant_cls: type, has_weight: bool, num_bits: int) -> torch.nn.Module:
    """A ``quant_cls`` instance that shares ``module``'s parameters and buffers (no copy of weights)."""
    q = quant_cls.__new__(quant_cls)
    q.__dict__.update(module.__dict__)
    for attr in ("_parameters", "_buffers", "_modules"):
        q.__dict__[attr] = OrderedDict(module.__dict__[attr])
    q._fake_quant = True
    q._input_quantizer = input_quantizer(num_bits)
    if has_weight:
        q._weight_quantizer = weight_quantizer(WEIGHT_AXIS[type(module)], num_bits)
    return q


def replace_modules(model: torch.nn.Module, ignore: Iterable[str] = (), *, num_bits: int = 8,
                    quantize_maxpool: bool = True, quantize_residual_add: bool = True,
                    blocks: Iterable = ()) -> ReplaceReport:
    """Swap supported modules in ``model`` (in place) for quantized ones; return what happened.

    ``blocks`` are the policy's enabled ``block`` rules (:class:`~trtqat.graph.policy.Rule`): quantizers inside
    the forward of the blocks they name; a quantizer module an ignore pattern names stays out (listed in
    ``ignored``).
    """
    policy = compile_policy(ignore)
    report = ReplaceReport()
    hits: set[str] = set()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            entry = QUANT_MAP.get(type(child))
            if entry is None or (entry[0] is qnn.QuantMaxPool2d and not quantize_maxpool):
                continue
            if ignored(name, policy, hits):
                report.ignored.append(name)
                continue
            setattr(parent, child_name, _swap(child, entry[0], entry[1], num_bits))
            report.quantized[entry[0].__name__] += 1
    if quantize_residual_add:
        for name, module in list(model.named_modules()):
            if is_residual_block(module) and not isinstance(getattr(module, "addop", None), torch.nn.Module):
                add_name = f"{name}.addop"
                if ignored(add_name, policy, hits):
                    report.ignored.append(add_name)
                    continue
                quantize_residual(module, num_bits)
                report.residual_adds.append(add_name)
                report.quantized["QuantAdd"] += 1
    blocks = list(blocks)
    if blocks:
        def skip(op_name: str) -> bool:
            if ignored(op_name, policy, hits):
                report.ignored.append(op_name)
                return True
            return False

        for op_name, rule_id in quantize_blocks(model, blocks, skip, num_bits=num_bits):
            report.block_ops[op_name] = rule_id
            report.quantized[type(model.get_submodule(op_name)).__name__] += 1
    report.unmatched = list(dict.fromkeys(p.pattern for p in policy if p.pattern not in hits))
    for pattern in report.unmatched:
        log.warning("ignore pattern '%s' matches no quantizable module of this %s: it keeps nothing float",
                    pattern, type(model).__name__)
    return report


def quantize_modules(model: torch.nn.Module, names: Iterable[str], *, num_bits: int = 8) -> list[str]:
    """Quantize the named float modules in place, each with its own quantizers; returns the names.

    What a placement rule's conversion (TQ007 ``quantize-input``) does when scale sharing is off
    (``--no-share``): the layer becomes INT8 like any other, its input quantizer is not tied to a sibling's.
    """
    done = []
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        child = getattr(parent, attr)
        entry = QUANT_MAP.get(type(child))
        if entry is None:
            raise ValueError(f"{name} is a {type(child).__name__}, which trtqat does not quantize")
        setattr(parent, attr, _swap(child, entry[0], entry[1], num_bits))
        done.append(name)
    return done
