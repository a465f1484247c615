"""The placement benchmark covers every fixture family (the Ultralytics ones included) and the README table gets
one pair of rows per family found in the result, with the INT8 MAC share."""
from benchmarks import placement
from benchmarks import run as bench_run
from trtqat.demo.fixtures import ALL_FAMILIES


def test_every_fixture_family_is_measured():
    assert placement.FAMILIES == ALL_FAMILIES
    assert {"yolov8", "yolo11", "yolo26"} <= set(placement.FAMILIES)


def _variant(standalone: int, groups: int, share: float, macs: float | None) -> dict:
    out = {"standalone_qdq": standalone, "groups": groups, "int8_share": share}
    return out if macs is None else {**out, "int8_share_macs": macs}


def test_rows_per_family_in_the_result_with_the_mac_share():
    p = {"yolov5": {v: _variant(11, 0, 0.86, None) for v in placement.VARIANTS},  # a result from before the MAC share
         "yolo26": {"no_rules": _variant(47, 0, 0.863, 0.9326), "reference_rules": _variant(43, 15, 0.863, 0.9326),
                    "trtqat_rules": _variant(1, 33, 0.9125, 0.9341)}}
    rows = bench_run.placement_rows(p)
    assert [r[0] for r in rows] == [
        "standalone Q/DQ yolov5: no rules / reference rules / trtqat rules",
        "scale groups, INT8 share of layers, of MACs yolov5: no rules / reference / trtqat",
        "standalone Q/DQ yolo26: no rules / reference rules / trtqat rules",
        "scale groups, INT8 share of layers, of MACs yolo26: no rules / reference / trtqat"]
    assert rows[1][1] == "0, 0.860, n/a / 0, 0.860, n/a / 0, 0.860, n/a"
    assert rows[2][1:] == ("47 / 43 / 1", "1 (input)")
    assert rows[3][1] == "0, 0.863, 0.933 / 15, 0.863, 0.933 / 33, 0.912, 0.934"
