"""Keeping ``sys.modules`` clean of the fake upstream packages between tests (imported by name: ``tests/`` is
on ``sys.path``, like ``onnx_cases``).

Why: tests that unpickle a checkpoint in this process import the fake repo's top-level ``models``/``utils``
(YOLOv5, YOLOv7) or the scratch ``ultralytics`` package, and the repos share module names; a test that loads
one family must not see the other's.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

_UPSTREAM = ("models", "utils", "ultralytics")


def upstream_modules() -> dict:
    """The imported top-level ``models``/``utils``/``ultralytics`` modules (a fake upstream repo's)."""
    return {k: v for k, v in sys.modules.items() if k.split(".")[0] in _UPSTREAM}


def restore(before: dict) -> None:
    """Put the upstream modules back as they were."""
    for k in list(upstream_modules()):
        del sys.modules[k]
    sys.modules.update(before)


@contextmanager
def isolated() -> Iterator[None]:
    """Run a block that may import a fake upstream package (by unpickling a checkpoint), then put the upstream
    modules back: for session-scoped factories, which the per-test autouse restore does not cover."""
    before = upstream_modules()
    try:
        yield
    finally:
        restore(before)


@pytest.fixture(autouse=True)
def restore_upstream_modules():
    """Put the upstream modules back after each test. Autouse where it is imported: a test folder's
    ``conftest.py`` (or a test module) does ``from upstream_modules import restore_upstream_modules``."""
    before = upstream_modules()
    yield
    restore(before)
