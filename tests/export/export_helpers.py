"""Helpers shared by the export tests (imported by path: test folders are not packages)."""
from __future__ import annotations

import sys

from click.testing import CliRunner

#: input size of the export tests (stride 32; small to keep the area fast)
SIZE = 160
_UPSTREAM = ("models", "utils")


def upstream_modules() -> dict:
    """The imported top-level ``models``/``utils`` modules (a fake upstream repo's)."""
    return {k: v for k, v in sys.modules.items() if k.split(".")[0] in _UPSTREAM}


def restore(before: dict) -> None:
    """Put the upstream modules back as they were (the two fake repos both provide ``models``)."""
    for k in list(upstream_modules()):
        del sys.modules[k]
    sys.modules.update(before)


def run_cli(*args):
    """Invoke ``trtqat`` in-process (torch is already imported); returns the click Result."""
    from trtqat.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
