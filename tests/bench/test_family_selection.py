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
    machine = {"processor": "AMD EPYC", "cpu_usable": 2}
    (tmp_path / "accuracy.json").write_text(json.dumps({
        "machine": machine, "command": "python -m benchmarks.run --only accuracy",
        "families": {"yolov5": {"float": 0.5}, "yolov7": {"float": 0.3, "measured_on": {"machine": {"x": 1}}}}}))
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    where = {"machine": machine, "command": "python -m benchmarks.run --only accuracy"}
    assert common.carried_over("accuracy", {"yolov5"}) == {"yolov5": {"float": 0.5, "carried_over": True,
                                                                     "measured_on": where}}
    # a row carried twice keeps the machine that measured it, not the one of the run that carried it last
    assert common.carried_over("accuracy", {"yolov7"})["yolov7"]["measured_on"] == {"machine": {"x": 1}}
    assert common.carried_over("accuracy", set()) == {}
    assert common.carried_over("peers", {"yolov5"}) == {}  # nothing committed: nothing carried


def test_command_line_names_the_family_selection_and_the_module(monkeypatch):
    monkeypatch.setenv("TRTQAT_BENCH_FAMILIES", "yolov8")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(common.sys, "argv", [str(common.RESULTS_DIR.parent / "run.py"), "--only", "accuracy"])
    assert common.command_line() == "TRTQAT_BENCH_FAMILIES=yolov8 python -m benchmarks.run --only accuracy"
