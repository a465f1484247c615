"""Atomic writes: whole file or nothing, usual permissions, no temporary left behind."""
import os
import stat

import pytest

from trtqat._io import atomic_path, write_json


def test_success_renames_with_umask_permissions(tmp_path):
    dest = tmp_path / "sub" / "out.json"
    write_json(dest, {"a": 1})
    assert dest.read_text().strip() == '{\n  "a": 1\n}'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in dest.parent.iterdir()] == ["out.json"]


def test_failure_leaves_nothing_and_keeps_the_old_file(tmp_path):
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half written")
            raise RuntimeError("crash")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
