"""``TRTQAT_BENCH_FAMILIES``: a per-family benchmark measures the named families and keeps the others'
committed rows, marked as carried over (what re-measuring one retrained fixture needs)."""
import json

import pytest

from benchmarks import common


def test_all_families_without_the_variable(monkeypatch):
    monkeypatch.delenv("TRTQAT_BENCH_FAMILIES", raising=False)
    assert common.chosen_families(("yolov5", "yolov7")) == ["yolov5", "yolov7"]


def test_one_family_and_an_unknown_one(monkeypatch):
    monkeypatch.setenv("TRTQAT_BENCH_FAMILIES", "yolov7")
    assert common.chosen_families(("yolov5", "yolov7")) == ["yolov7"]
    monkeypatch.setenv("TRTQAT_BENCH_FAMILIES", "yolov7,yolov8")
    with pytest.raises(ValueError, match=r"unknown families \['yolov8'\]"):
        common.chosen_families(("yolov5", "yolov7"))


def test_carried_over_rows_are_the_committed_ones_marked(monkeypatch, tmp_path):
    (tmp_path / "accuracy.json").write_text(json.dumps({"families": {"yolov5": {"float": 0.5}, "yolov7": {"float": 0.3}}}))
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    assert common.carried_over("accuracy", {"yolov5"}) == {"yolov5": {"float": 0.5, "carried_over": True}}
    assert common.carried_over("accuracy", set()) == {}
    assert common.carried_over("peers", {"yolov5"}) == {}  # nothing committed: nothing carried
