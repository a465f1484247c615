"""The op behaviour table: classes, sources, conditions and per-version overrides."""
from __future__ import annotations

import dataclasses

import pytest

from trtqat.graph import optable
from trtqat.graph.optable import OPS, VERSIONS, behaviour, table_rows


def test_every_entry_has_a_source_and_a_known_confidence():
    for b in OPS.values():
        assert b.source, b.op
        assert b.confidence in {"doc", "obs", "maint", "heur", "medium"}, b.op
        assert set(b.versions) <= set(VERSIONS), b.op


@pytest.mark.parametrize("op,kind", [
    ("Conv", "weighted"), ("Gemm", "weighted"), ("GlobalAveragePool", "quantizable"), ("Add", "quantizable"),
    ("MaxPool", "commuting"), ("Concat", "commuting"), ("Resize", "commuting"), ("Reshape", "shape"),
    ("Flatten", "shape"), ("Relu", "pointwise"), ("Sigmoid", "pointwise"), ("Softmax", "float"),
])
def test_classes(op, kind):
    assert behaviour(op).kind == kind


def test_unknown_op_is_float_only_compute():
    b = behaviour("NonMaxSuppression")
    assert b.float_only and b.compute and b.op == "NonMaxSuppression"


def test_resize_condition_nearest_only():
    assert behaviour("Resize", attrs={"mode": b"nearest"}).commuting
    assert behaviour("Resize", attrs={}).commuting  # ONNX default mode is nearest
    assert not behaviour("Resize", attrs={"mode": "linear"}).commuting
    assert behaviour("Resize").confidence == "medium"


def test_version_override_is_applied(monkeypatch):
    patched = dict(OPS)
    patched["Resize"] = dataclasses.replace(OPS["Resize"], versions={"8.6": {"dq_forward": False,
                                                                             "q_backward": False}})
    monkeypatch.setattr(optable, "OPS", patched)
    assert not behaviour("Resize", "8.6").commuting
    assert behaviour("Resize", "10").commuting


def test_unknown_version_rejected():
    with pytest.raises(ValueError, match="8.6, 10, 11"):
        behaviour("Conv", "9")


def test_version_info_strong_typing():
    assert optable.VERSION_INFO["11"].strongly_typed and not optable.VERSION_INFO["8.6"].strongly_typed


def test_table_rows_cover_all_ops():
    rows = table_rows("11")
    assert [r["op"] for r in rows] == list(OPS)
    assert {r["op"]: r["kind"] for r in rows}["Conv"] == "weighted"
