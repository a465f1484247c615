"""Shared fixtures for the trtexec driver tests: the real trtexec outputs and a fake trtexec on PATH."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from trt_fixtures import (
    CONVONLY_GRAPH,
    CONVONLY_PROFILE,
    FIXTURES,
    MNIST10_LOG,
    SCRIPT,
    FakeTrtexec,
    make_onnx,
)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    """tests/fixtures/trtexec: the recorded trtexec outputs (provenance in SOURCES.md there)."""
    assert (FIXTURES / CONVONLY_GRAPH).is_file(), f"trtexec fixtures missing from {FIXTURES}"
    return FIXTURES


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch, fixtures) -> FakeTrtexec:
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    exe = bindir / "trtexec"
    exe.write_text(f"#!{sys.executable}\n" + textwrap.dedent(SCRIPT))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    record = tmp_path / "trtexec-argv.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("TRTQAT_TRTEXEC", raising=False)
    monkeypatch.setenv("FAKE_TRTEXEC_RECORD", str(record))
    monkeypatch.setenv("FAKE_TRTEXEC_FIXTURES", str(fixtures))
    monkeypatch.setenv("FAKE_TRTEXEC_GRAPH", CONVONLY_GRAPH)
    monkeypatch.setenv("FAKE_TRTEXEC_PROFILE", CONVONLY_PROFILE)
    monkeypatch.setenv("FAKE_TRTEXEC_SUMMARY_LOG", MNIST10_LOG)
    monkeypatch.setenv("FAKE_TRTEXEC_VERSION", "10.16.1")
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "0")
    return FakeTrtexec(exe, record, monkeypatch)


@pytest.fixture
def dynamic_onnx(tmp_path) -> Path:
    return make_onnx(tmp_path / "model.onnx")


@pytest.fixture
def static_onnx(tmp_path) -> Path:
    return make_onnx(tmp_path / "static.onnx", dims=(1, 3, 32, 32))
