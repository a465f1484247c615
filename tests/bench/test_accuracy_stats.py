"""The accuracy benchmark's verdicts: a difference is resolved only when it exceeds both its bootstrap interval
and its spread over kernel settings and reloads; the family's headline keys follow from the rows and runs."""
import pytest

from benchmarks import accuracy
from benchmarks.accuracy_stats import IN_MEMORY, artifact_spreads, difference, setting_env

RUNS = {IN_MEMORY: {"float": 60.00, "mse": 59.20, "qat": 59.85},
        "reload": {"float": 60.00, "mse": 59.20, "qat": 59.85},
        "avx2": {"float": 60.02, "mse": 59.14, "qat": 59.88}}


def test_spread_is_max_minus_min_per_artifact():
    assert artifact_spreads(RUNS) == {"float": 0.02, "mse": 0.06, "qat": 0.03}


@pytest.mark.parametrize("interval, resolved", [
    ({"value": 0.65, "low": 0.45, "high": 0.85}, True),  # beyond both yardsticks
    ({"value": 0.65, "low": -0.1, "high": 1.4}, False),  # within the image noise
])
def test_a_difference_must_exceed_its_interval(interval, resolved):
    d = difference("qat", "mse", interval, RUNS)
    assert d["resolved"] is resolved
    assert d["kernel_spread"] == pytest.approx(0.09)  # 0.65 in memory and reloaded, 0.74 under AVX2
    assert d["noise_floor"] == pytest.approx(max(d["half_width"], 0.09))


def test_a_difference_must_exceed_its_kernel_spread():
    runs = {IN_MEMORY: {"a": 50.0, "b": 49.9}, "avx2": {"a": 50.0, "b": 50.2}}
    d = difference("a", "b", {"value": 0.1, "low": 0.05, "high": 0.15}, runs)
    assert d["half_width"] == pytest.approx(0.05) and d["kernel_spread"] == pytest.approx(0.3)
    assert not d["resolved"] and d["noise_floor"] == pytest.approx(0.3)


def test_kernel_settings_change_the_environment_they_name():
    base = {"PATH": "/bin", "OMP_NUM_THREADS": "7"}
    assert setting_env("reload", base, 1)["OMP_NUM_THREADS"] == "1"
    assert setting_env("avx2", base, 1)["ATEN_CPU_CAPABILITY"] == "avx2"
    assert setting_env("threads", base, 1)["OMP_NUM_THREADS"] != "1" or setting_env("threads", base, 1) == {
        **base, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _child_result(best="percentile"):
    rows = {"float": {"map": 0.6000}, "mse": {"map": 0.5920}, "percentile": {"map": 0.5935},
            "entropy": {"map": 0.5800}, "max": {"map": 0.5900}, "mse_no_share": {"map": 0.5910},
            "qat": {"map": 0.5985}, "eval_qat_onnx": {"map": 0.5983}}
    iv = lambda v, hw: {"value": v, "low": v - hw, "high": v + hw}  # noqa: E731
    runs = {IN_MEMORY: {"float": 60.0, "mse": 59.2, best: 59.35, "qat": 59.85, "eval_qat_onnx": 59.83},
            "avx2": {"float": 60.0, "mse": 59.2, best: 59.33, "qat": 59.87, "eval_qat_onnx": 59.86}}
    return {"rows": rows, "best_method_by_map": best, "kernel_runs": runs,
            "intervals": {"percentile - float": iv(-0.65, 0.08), "qat - float": iv(-0.15, 0.06),
                          "qat - percentile": iv(0.5, 0.07), "qat - mse": iv(0.65, 0.1)},
            "onnx_interval": iv(-0.02, 0.03)}


def test_summary_reads_the_headline_from_the_differences():
    s = accuracy.summarize(_child_result())
    assert s["ptq_map_drop"] == pytest.approx(0.65) and s["qat_map_drop"] == pytest.approx(0.15)
    assert s["qat_gain_over_best_ptq"] == pytest.approx(0.5) and s["qat_gain_resolved"]
    # the largest floor of the three headline differences: PTQ - float's half-width 0.08
    assert s["noise_floor_map"] == pytest.approx(0.08)
    assert s["rows"]["percentile"]["kernel_spread"] == pytest.approx(0.02)
    assert s["differences"]["qat - percentile"]["kernel_spread"] == pytest.approx(0.04)  # 0.50 and 0.54
    # the ONNX is compared with the reloaded torch QAT only (the in-memory run has no reloaded row)
    assert s["differences"]["eval_qat_onnx - qat"]["kernel_spread"] == 0


def test_headline_takes_the_worse_family_in_each_direction():
    good = accuracy.summarize(_child_result())
    easy = {**good, "ptq_map_drop": 0.2, "qat_gain_over_best_ptq": 0.05, "qat_gain_resolved": False,
            "qat_map_drop": 0.4}
    h = accuracy.headline({"a": good, "b": easy})
    assert h["ptq_map_drop"] == 0.2 and h["qat_gain_over_best_ptq"] == 0.05 and h["qat_map_drop"] == 0.4
    assert not h["targets_met"]["ptq_map_drop"] and not h["targets_met"]["qat_gain_resolved"]
    assert not h["targets_met"]["qat_map_drop"] and h["targets_met"]["noise_floor_map"]
    # every target met; TQ007's cost is YOLOv5's alone: not measured here, so neither met nor missed
    assert accuracy.headline({"a": good})["targets_met"] == {**{k: True for k in h["targets_met"]},
                                                             "tq007_map_cost": None}


def test_a_family_measured_before_the_intervals_does_not_set_the_noise_floor():
    """An older carried-over row's ``noise_floor_map`` was a nudge spread, another quantity: it is left out of the
    interval-based keys, and its other keys still count."""
    good = accuracy.summarize(_child_result())
    old = {"noise_floor_map": 0.01, "qat_map_drop": 0.6, "ptq_map_drop": -0.9}
    h = accuracy.headline({"a": good, "old": old})
    assert h["noise_floor_map"] == good["noise_floor_map"] and h["qat_map_drop"] == 0.6
    assert h["ptq_map_drop"] == -0.9 and not h["targets_met"]["qat_gain_resolved"]
