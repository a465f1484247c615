"""Keeping ``sys.modules`` clean of the fake upstream packages between tests (imported by name: ``tests/`` is
on ``sys.path``, like ``onnx_cases``).

Why: tests that unpickle a checkpoint in this process import the fake repo's top-level ``models``/``utils``,
and the two families' repos both provide them; a test that loads one family must not see the other's.
"""
from __future__ import annotations

import sys

_UPSTREAM = ("models", "utils")


def upstream_modules() -> dict:
    """The imported top-level ``models``/``utils`` modules (a fake upstream repo's)."""
    return {k: v for k, v in sys.modules.items() if k.split(".")[0] in _UPSTREAM}


def restore(before: dict) -> None:
    """Put the upstream modules back as they were."""
    for k in list(upstream_modules()):
        del sys.modules[k]
    sys.modules.update(before)
