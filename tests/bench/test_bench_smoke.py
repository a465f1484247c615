"""Smoke test of ``make bench``: every benchmark at tiny sizes; result files, schema, finite ratios.

Nothing here asserts a speed: timings on a shared test machine are noise. Speed targets are what
``make bench`` reports (benchmarks/README.md).
"""
import json
import math

import pytest

from benchmarks import placement
from benchmarks import run as bench_run
from benchmarks.common import Config, Workspace

pytestmark = pytest.mark.slow  # 140 s on 2 quiet cores, 540 s on busy ones: PTQ child processes, 15 placement exports

MACHINE_KEYS = {"cpu_count", "torch", "device"}


@pytest.fixture(scope="module")
def smoke(yolo_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_results")
    ws = Workspace(tmp_path_factory.mktemp("bench_ws"),
                   checkpoints={f: yolo_checkpoint(f) for f in ("yolov5", "yolov7")})
    readme = out / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n\n<!-- bench:start -->\nold\n<!-- bench:end -->\n\ntail\n")
    summary = bench_run.run_all(Config.smoke_config(), out, ws=ws, readme=readme)
    return summary, out, readme


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_every_result_file_carries_machine_info(smoke):
    summary, out, _ = smoke
    assert summary["errors"] == {}
    names = {p.stem for p in out.glob("*.json")}
    assert names == set(bench_run.BENCHMARKS) | {"summary"}
    for name in names:
        doc = json.loads((out / f"{name}.json").read_text())
        assert MACHINE_KEYS <= set(doc["machine"]), name
        assert doc["benchmark"] == name


def test_headline_ratios_are_finite_and_positive(smoke):
    summary, out, _ = smoke
    doc = json.loads((out / "summary.json").read_text())
    for key in bench_run.HEADLINE:
        assert _positive(doc[key]), (key, doc[key])


def test_amax_and_ptq_agree_with_the_reference(smoke):
    _, out, _ = smoke
    amax = json.loads((out / "amax_search.json").read_text())
    assert all(m["within_one_bin"] for m in amax["methods"].values())
    ptq = json.loads((out / "ptq.json").read_text())
    agreement = ptq["amax_agreement"]
    assert agreement["same_names"] and agreement["within_one_bin"]
    assert set(ptq["peak_rss_mib"]) == {"floor", "floor_tuned", "trtqat", "reference"}
    assert _positive(ptq["ptq_over_tuned_floor"])
    assert all(_positive(v) for v in ptq["peak_rss_mib"].values())


def test_qat_levers_and_placement_schema(smoke):
    _, out, _ = smoke
    qat = json.loads((out / "qat_step.json").read_text())
    assert set(qat["seconds_per_step"]) == {"reference", "trtqat", "fixed_amax", "+inference_mode",
                                            "+fused_fake_quant", "-channels_last", "all"}
    assert all(_positive(v) for v in qat["seconds_per_step"].values())
    place = json.loads((out / "placement.json").read_text())
    assert list(place["families"]) == list(placement.FAMILIES)  # the Ultralytics fixtures included
    assert place["detected_as"]["yolov8"] == "ultralytics v8" and place["detected_as"]["yolo26"] == "ultralytics 26"
    for family in placement.FAMILIES:
        fam = place["families"][family]
        assert set(fam) == {"no_rules", "reference_rules", "trtqat_rules"}
        # trtqat's rules leave only the network-input Quantize standalone
        assert fam["trtqat_rules"]["standalone_other_than_input"] == []
        assert fam["trtqat_rules"]["groups"] > fam["reference_rules"]["groups"] >= 0
    export = json.loads((out / "export.json").read_text())
    assert all(export["families"][f]["passed"] for f in ("yolov5", "yolov7"))


def test_readme_table_replaced_between_markers(smoke):
    _, _, readme = smoke
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and text.endswith("\n\ntail\n")
    inner = text.split("<!-- bench:start -->")[1].split("<!-- bench:end -->")[0]
    assert "old" not in inner and "| measure | result | target |" in inner
