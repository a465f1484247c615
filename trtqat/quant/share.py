"""Scale-sharing rules applied to a quantized torch model (placeholder until the rules engine lands).

``load_policy`` returns the family's policy (ignore patterns); ``apply_rules`` ties quantizers together.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Policy:
    family: str
    ignore: tuple[str, ...]


def load_policy(family, rules_file: Path | None = None) -> Policy:
    return Policy(family=family.name, ignore=family.default_ignore)


def apply_rules(model, policy: Policy, *, size: int) -> list:
    return []
