"""The two fixture families end to end: ``trtqat rules`` groups by module name, then ``trtqat quantize
--ptq`` and a reload in a new process (shared quantizers stay one object with one amax; the exported
ONNX carries one scale per group; TensorRT lint predicts only the network-input Quantize standalone).

Checkpoints are unpickled in this process for the CLI calls; ``sys.modules`` is restored after each test
because both fake repos provide a top-level ``models`` package.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from rules_helpers import SIZE, rules_cli


def _group_with(data, *members):
    hits = [g for g in data["groups"] if set(members) <= set(g["members"])]
    assert len(hits) == 1, (members, [g["members"] for g in data["groups"]])
    return hits[0]


def _ops(group) -> list[str]:
    return [op.rsplit("/", 1)[-1].split("_")[0] for op in group["ops"]]


def test_yolov5_groups(rules_json):
    data = rules_json("yolov5")
    assert data["family"] == "yolov5" and data["ignored"] == ["model.24.m.2"]
    assert data["ignore_policy"] == [r"model\.24\.m\..*"]
    assert all(set(g) >= {"members", "ops", "rule"} for g in data["groups"])
    sppf = _group_with(data, "model.9.m", "model.9.cv2.conv")  # the SPPF maxpool chain
    assert sorted(_ops(sppf)) == ["Concat", "MaxPool", "MaxPool", "MaxPool"] and sppf["rule"] == "TQ001"
    for members in (("model.7.conv", "model.13.cv1.conv", "model.13.cv2.conv", "model.23.cv1.conv",
                     "model.23.cv2.conv"),  # concats 12 and 22 after Upsample 11 (model.10 feeds both)
                    ("model.5.conv", "model.17.cv1.conv", "model.17.cv2.conv", "model.20.cv1.conv",
                     "model.20.cv2.conv")):  # concats 16 and 19 after Upsample 15
        g = _group_with(data, *members)
        assert sorted(g["members"]) == sorted(members) and sorted(_ops(g)) == ["Concat", "Concat", "Resize"]
    adds = [f"model.{i}.m.{j}" for i, n in ((2, 1), (4, 2), (6, 3), (8, 1)) for j in range(n)]
    for block in adds:  # Bottleneck adds: skip, conv branch and cv1 share the block input's scale
        g = _group_with(data, f"{block}.addop")
        assert g["members"] == [f"{block}.cv1.conv", f"{block}.addop"] and g["rule"] == "TQ005"
        assert f"{block}.addop._input1_quantizer" in g["quantizers"]
    for i in (2, 4, 6, 8):  # C3 inputs read by cv1 and cv2
        assert _group_with(data, f"model.{i}.cv1.conv")["members"] == [f"model.{i}.cv1.conv", f"model.{i}.cv2.conv"]
    # C3 concats: one quantizer (cv3) reads them, consistent by construction
    assert sorted(g["members"][0] for g in data["aligned"] if g["rule"] == "TQ001") == sorted(
        f"model.{i}.cv3.conv" for i in (2, 4, 6, 8, 13, 17, 20, 23))
    for conv, det in (("model.18.conv", "model.24.m.0"), ("model.21.conv", "model.24.m.1")):  # float fan-out
        g = _group_with(data, det)
        assert g["members"] == [conv, det] and g["rule"] == "TQ007" and g["converted"] == [det]
    assert data["converted"] == ["model.24.m.0", "model.24.m.1"]
    assert not any(f["standalone_q"] for f in data["fanouts"])
    assert len(data["groups"]) == 16
    assert data["ignore_policy"] == [r"model\.24\.m\..*"]


def test_yolov7_groups(ptq):
    """The groups a PTQ run applied (stored in the checkpoint, as ``trtqat rules ptq.pt`` shows them)."""
    data = json.loads(rules_cli("rules", *_ckpt_repo(ptq("yolov7")), "--size", SIZE, "--json").stdout)
    assert data["stored"] and data["ignore_policy"] == [r"model\.105\.m\..*"]
    assert not any(g["converted"] for g in data["groups"])
    for i in (10, 23, 36, 49):  # backbone ELAN concats [-1, -3, -5, -6]
        g = _group_with(data, f"model.{i + 1}.conv")
        assert g["members"] == [f"model.{i - 4}.conv", f"model.{i - 2}.conv", f"model.{i + 1}.conv"]
        assert any(f"/model.{i}/" in op for op in g["ops"])
    for i in (62, 74, 87, 100):  # head ELAN-W concats of six outputs
        g = _group_with(data, f"model.{i + 1}.conv")
        assert g["members"] == [f"model.{j}.conv" for j in (i - 4, i - 3, i - 2, i - 1, i + 1)]
    for i in (12, 25, 38, 76, 89):  # MP blocks: maxpool input/output and the sibling conv
        g = _group_with(data, f"model.{i}.m")
        assert {f"model.{i}.m", f"model.{i + 1}.conv", f"model.{i + 2}.conv"} <= set(g["members"])
        assert "MaxPool" in _ops(g)
    for i in (16, 29, 42, 55, 67, 80, 93):  # MP-block and PAN concats read by two convs
        g = next(g for g in data["groups"] if any(f"/model.{i}/Concat" in op for op in g["ops"]))
        assert len(g["members"]) >= 2
    spp = _group_with(data, "model.51.m.0")  # SPPCSPC: three maxpools on one tensor, their concat
    assert spp["members"] == ["model.51.m.0", "model.51.m.1", "model.51.m.2", "model.51.cv5.conv"]
    assert sorted(_ops(spp)) == ["Concat", "MaxPool", "MaxPool", "MaxPool"]
    for i in (55, 67):  # PAN: the concat after the nearest Upsample
        assert "Resize" in _ops(next(g for g in data["groups"] if any(f"/model.{i}/" in op for op in g["ops"])))
    assert len(data["groups"]) == 23


def test_ignore_policy_option_removes_members(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov5")
    data = json.loads(rules_cli("rules", ckpt, "--repo", repo, "--size", SIZE, "--json", "--ignore-policy",
                           r"model\.(9|2)\..*", "--ignore-policy", r"model\.24\.m\.0").stdout)
    assert "model.9.m" in data["ignored"] and "model.2.cv1.conv" in data["ignored"]
    assert not any(m.startswith(("model.9.", "model.2.")) for g in data["groups"] for m in g["members"])
    assert data["ignore_policy"] == [r"model\.24\.m\..*", r"model\.(9|2)\..*", r"model\.24\.m\.0"]
    # an explicitly ignored detect conv is never converted by the quantize-input fan-out rule
    assert data["converted"] == ["model.24.m.1"] and "model.24.m.0" in data["ignored"]
    assert [(f["float_readers"], f["standalone_q"]) for f in data["fanouts"] if f["float_readers"]] == [
        (["model.24.m.0"], True)]


def _ckpt_repo(ptq_result):
    return ptq_result[0], "--repo", ptq_result[1]


_RELOAD = textwrap.dedent("""
    import json, sys
    from trtqat.graph.policy import RULES_DIR, load_policy_file
    from trtqat.graph.qdq import load_graph, read_qparams
    from trtqat.graph.scale_groups import find_scale_sets
    from trtqat.models import load_checkpoint
    from trtqat.quant.onnx_trace import trace_onnx
    out, size = {}, int(sys.argv[1])
    for family, ptq, repo, onnx_path in zip(*[iter(sys.argv[2:])] * 4):
        loaded = load_checkpoint(ptq, repo)
        m = loaded.model
        groups = loaded.extra["groups"]
        same = [len({id(m.get_submodule(q)) for q in g["quantizers"]}) == 1 for g in groups]
        amax = [len({float(m.get_submodule(q)._amax) for q in g["quantizers"]}) for g in groups]
        det = {g["converted"][0]: (type(m.get_submodule(g["converted"][0])).__name__,
               m.get_submodule(g["converted"][0])._input_quantizer is m.get_submodule(g["quantizers"][0]))
               for g in groups if g.get("converted")}
        trace_onnx(m, onnx_path, size=size, head="raw")
        graph = load_graph(onnx_path)
        names = {n.name: n for n in graph.nodes}
        sets = find_scale_sets(graph, load_policy_file(RULES_DIR / f"{family}.yaml"), min_q=1).sets
        scales = [len({float(read_qparams(names[q]).scale.reshape(-1)[0]) for q in s.q_nodes}) for s in sets]
        try:
            from trtqat.graph.lint import lint_onnx
            lint = [s.name for s in lint_onnx(onnx_path).standalone]
        except ImportError:
            lint = None
        out[family] = {"groups": len(groups), "same": same, "amax": amax, "det": det, "sets": len(sets),
                       "scales": scales, "lint": lint}
    print(json.dumps(out))
""")


def test_ptq_sharing_survives_reload_in_new_process(ptq, tmp_path):
    argv = [str(SIZE)]
    for family in ("yolov5", "yolov7"):
        path, repo, _ = ptq(family)
        argv += [family, path, repo, tmp_path / f"{family}.onnx"]
    proc = subprocess.run([sys.executable, "-c", _RELOAD, *map(str, argv)], check=False, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for family, n_groups in (("yolov5", 16), ("yolov7", 23)):
        r = res[family]
        assert r["groups"] == n_groups
        assert all(r["same"]) and set(r["amax"]) == {1}
        assert r["sets"] > 0 and set(r["scales"]) == {1}  # one scale per tied set in the exported ONNX
        if r["lint"] is not None:
            assert r["lint"] == ["/model/model.0/conv/_input_quantizer/QuantizeLinear"]
    assert res["yolov5"]["det"] == {"model.24.m.0": ["QuantConv2d", True], "model.24.m.1": ["QuantConv2d", True]}
    assert res["yolov7"]["det"] == {}


@pytest.mark.parametrize("family", ["yolov5", "yolov7"])
def test_lean_trace_finds_the_same_groups_as_the_full_export(yolo_checkpoint, family, monkeypatch):
    """Discovery traces each quantizer as one fake-quant op and weights as float (3x faster); the groups,
    aligned sets and fan-outs must equal those found on the full Q/DQ export (and at 2x the trace size)."""
    import contextlib

    from trtqat.models import load_checkpoint
    from trtqat.quant import share
    from trtqat.quant.ptq import QuantConfig, prepare_quantized
    from trtqat.quant.quantizers import named_quantizers

    ckpt, repo = yolo_checkpoint(family)
    loaded = load_checkpoint(ckpt, repo)
    model, _, _, _ = prepare_quantized(loaded, QuantConfig(use_rules=False))
    policy = share.load_policy(loaded.family, None)
    lean = share.discover(model, policy, size=SIZE).to_dict()
    assert all("forward" not in vars(q) for _, q in named_quantizers(model))  # instance patches removed
    trace = share.trace_onnx
    monkeypatch.setattr(share, "_lean_quantizers", lambda model, acts: contextlib.nullcontext())
    monkeypatch.setattr(share, "trace_onnx", lambda *a, **kw: trace(*a, **{**kw, "quantized": True}))
    full = share.discover(model, policy, size=2 * SIZE).to_dict()
    assert lean["groups"] and lean == full


def test_rule_override_report_keeps_yolov5_detect_convs_float(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov5")
    data = json.loads(rules_cli("rules", ckpt, "--repo", repo, "--size", SIZE, "--json", "--rule", "TQ007=report").stdout)
    assert data["fanout_mode"] == "report" and data["converted"] == []
    assert len(data["groups"]) == 14  # the two TQ007 groups are gone, every other group stays
    assert sorted(m for f in data["fanouts"] if f["standalone_q"] for m in f["float_readers"]) == [
        "model.24.m.0", "model.24.m.1"]
    assert data["ignored"] == ["model.24.m.0", "model.24.m.1", "model.24.m.2"]
    assert "report mode: its input is also read in INT8" in data["float"]["model.24.m.0"]
    assert data["float"]["model.24.m.2"].startswith("detect output conv")


def test_stored_placement_of_a_ptq_checkpoint(ptq):
    data = json.loads(rules_cli("rules", *_ckpt_repo(ptq("yolov5")), "--size", SIZE, "--json").stdout)
    assert data["stored"] and data["placement"] == "rules: scale sharing, TQ007 quantize-input"
    assert data["converted"] == ["model.24.m.0", "model.24.m.1"] and list(data["float"]) == ["model.24.m.2"]
    out = rules_cli("rules", *_ckpt_repo(ptq("yolov5")), "--size", SIZE).output
    assert "kept float: model.24.m.2 (detect output conv" in out
