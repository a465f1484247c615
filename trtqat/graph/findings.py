"""One finding schema for every analysis: ONNX lint, parser checks, scale rules and engine reports.

Why one type: a user reads the same columns (what, where, why it costs, how to fix) whether the
problem was predicted from the ONNX or observed in a built engine (the TREx linter idea), and
``--json`` consumers get one stable shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: allowed severities, most severe first.
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """A problem (or a notable fact) about a model.

    Args:
        rule_id: stable code, e.g. ``LINT003`` or ``PARSE001``.
        severity: ``error`` (TensorRT rejects or mis-builds it), ``warning`` (costs speed or
            accuracy), ``info`` (expected, nothing to do).
        nodes: the ONNX node names concerned (first one is the main site).
        hazard: what goes wrong, in one sentence.
        mitigation: what the user can change.
        help: where the behaviour is documented (a TensorRT doc section or issue).
    """

    rule_id: str
    severity: str
    nodes: tuple[str, ...]
    hazard: str
    mitigation: str = ""
    help: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} not in {SEVERITIES}")
        object.__setattr__(self, "nodes", tuple(self.nodes))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (keys in schema order; ``extra`` only when non-empty)."""
        out: dict[str, Any] = {
            "rule_id": self.rule_id,
            "severity": self.severity,
            "nodes": list(self.nodes),
            "hazard": self.hazard,
            "mitigation": self.mitigation,
            "help": self.help,
        }
        if self.extra:
            out["extra"] = dict(self.extra)
        return out


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then by rule id and first node (stable, for reproducible reports)."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.rule_id, f.nodes[:1]))
