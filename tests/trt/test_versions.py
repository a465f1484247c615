"""The per-version capability table and version detection from trtexec output."""

from __future__ import annotations

import pytest
from trt_fixtures import MNIST8_FAILED_LOG, MNIST8_LOG, MNIST10_LOG

from trtqat.errors import UsageError
from trtqat.trt.versions import (
    caps_for_version,
    caps_from_help,
    parse_version,
    parse_version_option,
    version_from_code,
)


@pytest.mark.parametrize(
    "code,expected",
    [
        ("8203", (8, 2, 3)),
        ("8601", (8, 6, 1)),
        ("8401", (8, 4, 1)),
        ("101601", (10, 16, 1)),
        ("100600", (10, 6, 0)),
        ("110000", (11, 0, 0)),
    ],
)
def test_banner_codes_decode_per_major_scheme(code, expected):
    assert version_from_code(code) == expected


@pytest.mark.parametrize(
    "name,expected", [(MNIST10_LOG, (10, 16, 1)), (MNIST8_LOG, (8, 2, 3)), (MNIST8_FAILED_LOG, (8, 2, 3))]
)
def test_version_found_in_every_fixture_log(fixtures, name, expected):
    assert parse_version((fixtures / name).read_text()) == expected


def test_version_line_wins_over_banner():
    text = "&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec\n[I] TensorRT version: 8.6.2\n"
    assert parse_version(text) == (8, 6, 2)
    assert parse_version("no version here") is None


def test_caps_rows():
    old = caps_for_version((8, 2, 3))
    assert (old.workspace, old.mem_pool_size, old.int8_fp16_flags, old.export_layer_info) == (
        True,
        False,
        True,
        True,
    )
    v86 = caps_for_version((8, 6, 1))
    assert (v86.workspace, v86.mem_pool_size, v86.strongly_typed_flag) == (False, True, False)
    v10 = caps_for_version((10, 16, 1))
    assert (v10.workspace, v10.int8_fp16_flags, v10.calib, v10.strongly_typed_flag, v10.cuda_graph) == (
        False,
        True,
        True,
        True,
        True,
    )
    v11 = caps_for_version((11, 0, 0))
    assert (
        v11.int8_fp16_flags,
        v11.calib,
        v11.always_strongly_typed,
        v11.cuda_graph,
        v11.separate_profile_run,
    ) == (False, False, True, False, False)
    assert caps_for_version((8, 0, 1)).export_layer_info is False
    with pytest.raises(UsageError, match="too old"):
        caps_for_version((7, 2, 3))


def test_caps_from_help_uses_flags_only_without_version():
    assert caps_from_help(
        "&&&& RUNNING TensorRT.trtexec [TensorRT v100600] [b26] # trtexec --help"
    ).version == (10, 6, 0)
    assert caps_from_help("  --memPoolSize=spec\n  --stronglyTyped\n  --calib=<file>").version[0] == 10
    assert caps_from_help("  --memPoolSize=spec\n  --stronglyTyped\n").version[0] == 11
    assert caps_from_help("  --workspace=N\n  --calib=<file>").version == (8, 2, 0)
    assert caps_from_help("") is None


def test_trt_version_option():
    assert parse_version_option("10.16") == (10, 16, 0)
    assert parse_version_option("8.6.1") == (8, 6, 1)
    with pytest.raises(UsageError, match="--trt-version"):
        parse_version_option("ten")
