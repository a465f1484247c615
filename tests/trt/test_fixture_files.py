"""The recorded trtexec outputs in tests/fixtures/trtexec are what SOURCES.md says they are.

Every data file is named in SOURCES.md (brace forms such as ``x.{graph,profile}.json`` expanded), carries
the SHA-256 given there when one is given, and the folder carries the Apache-2.0 notice of the upstream
repositories. The fixtures live in the repository, so no test has a reason to skip for want of them.
"""
from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path

DOCS = {"SOURCES.md", "NOTICE", "LICENSE"}


def _expand(name: str) -> list[str]:
    parts = re.split(r"\{([^}]*)\}", name)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _documented(sources: str) -> set[str]:
    names = set()
    for token in re.findall(r"`([^`\s]+)`", sources):
        names.update(_expand(token))
    return names


def test_every_data_file_is_documented_with_its_checksum(trtexec_fixtures: Path):
    sources = (trtexec_fixtures / "SOURCES.md").read_text(encoding="utf-8")
    documented = _documented(sources)
    data = sorted(p for p in trtexec_fixtures.iterdir() if p.name not in DOCS)
    assert len(data) >= 20
    checked = 0
    for path in data:
        assert path.name in documented, f"{path.name} is not described in SOURCES.md"
        row = next((line for line in sources.splitlines() if line.startswith(f"| `{path.name}`")), None)
        listed = re.findall(r"`([0-9a-f]{64})`", row or "")
        if listed:  # sections A and B give one; an edited file's note gives the edited bytes' checksum
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest in listed or f"`{digest}`" in sources, f"{path.name}: sha256 {digest} not in SOURCES.md"
            checked += 1
    assert checked >= 9


def test_license_notice_travels_with_the_data(trtexec_fixtures: Path):
    notice = (trtexec_fixtures / "NOTICE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in notice and "NVIDIA Corporation" in notice
    assert "NVIDIA/TensorRT" in notice and "NVIDIA/trt-samples-for-hackathon-cn" in notice
    assert "Apache License" in (trtexec_fixtures / "LICENSE").read_text(encoding="utf-8")
