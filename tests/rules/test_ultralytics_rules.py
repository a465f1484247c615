"""Ultralytics YOLOv8 / YOLO11 / YOLO26 fixtures through ``trtqat rules`` and ``trtqat quantize --ptq``:
the family and version are named, ``rules/ultralytics.yaml`` applies, the last conv of every detect branch
and the DFL stay float (no quantizer at all), everything else is quantized, and the scale-sharing groups
cover the C2f/C3k2 split+concat, SPPF, the neck upsample+concat and the Bottleneck adds.

``sys.modules`` keeps no ``ultralytics`` package after a test (the fixture package is unpickled here).
"""
from __future__ import annotations

import json
import re

import pytest
from rules_helpers import SIZE, rules_cli
from upstream_modules import restore, upstream_modules

from trtqat.demo import fixtures

DETECT = {"yolov8": "model.22", "yolo11": "model.23", "yolo26": "model.23"}
VERSION = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}






def _float_names(family: str) -> list[str]:
    det = DETECT[family]
    return [f"{det}.cv{b}.{i}.2" for b in (2, 3) for i in range(3)] + ([f"{det}.dfl.conv"] if family != "yolo26" else [])






def _group_with(data, *members):
    hits = [g for g in data["groups"] if set(members) <= set(g["members"])]
    assert len(hits) == 1, (members, [g["members"] for g in data["groups"]])
    return hits[0]


def _ops(group) -> list[str]:
    return sorted(op.rsplit("/", 1)[-1].split("_")[0] for op in group["ops"])


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_rules_policy_float_layers_and_groups(rules_json, family):
    data = rules_json(family)
    det = DETECT[family]
    assert (data["family"], data["version"], data["output_layout"]) == ("ultralytics", VERSION[family], "ultralytics")
    assert [p.rsplit("/", 1)[-1] for p in data["policy"]] == ["default.yaml", "ultralytics.yaml"]
    assert data["fanout_mode"] == "report" and data["converted"] == [] and data["unmatched_ignore"] == []
    assert sorted(data["ignored"]) == sorted(_float_names(family))
    assert all(why.startswith("detect output conv (") and "ultralytics.yaml" in why for why in data["float"].values())
    # SPPF: the max-pool chain and its concat, read by cv2
    sppf = _group_with(data, "model.9.m", "model.9.cv2.conv")
    assert _ops(sppf) == ["Concat", "MaxPool", "MaxPool", "MaxPool"]
    # the neck: nearest upsample + concat with a backbone level, read by the next block's cv1 (two places each)
    p4 = "model.12.cv1.conv" if family == "yolov8" else "model.13.cv1.conv"
    assert "Resize" in _ops(_group_with(data, "model.7.conv", p4))
    assert "Resize" in _ops(_group_with(data, "model.5.conv"))
    # C2f / C3k2 of the backbone: cv1's split, the bottleneck add (skip + branch), the concat read by cv2
    g = _group_with(data, "model.2.cv2.conv", "model.2.m.0.addop")
    assert {"Split", "Concat", "Add"} <= set(_ops(g)) and "model.2.m.0.cv1.conv" in g["members"]
    # the detect branches' first convs read the neck outputs together with the next neck conv (TQ006)
    first_cls = f"{det}.cv3.0.0.conv" if family == "yolov8" else f"{det}.cv3.0.0.0.conv"
    sib = _group_with(data, f"{det}.cv2.0.0.conv", first_cls)
    assert sib["rule"] == "TQ006" and ("model.16.conv" if family == "yolov8" else "model.17.conv") in sib["members"]
    # nothing of the head's float convs is in a group
    assert not any(m in _float_names(family) for g in data["groups"] for m in g["members"])
    if family != "yolov8":  # C3k bottleneck adds inside C3k2 (c3k=True) and the C2PSA split + concat
        assert _group_with(data, "model.6.m.0.m.0.addop")["rule"] == "TQ005"
        assert "Split" in _ops(_group_with(data, "model.10.cv2.conv"))


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_ptq_keeps_head_outputs_float_and_quantizes_the_rest(ptq, family):
    from trtqat.models import load_checkpoint

    path, repo, summary = ptq(family)
    assert (summary["family"], summary["version"], summary["output_layout"]) == ("ultralytics", VERSION[family],
                                                                                 "ultralytics")
    assert sorted(summary["float"]) == sorted(_float_names(family)) and summary["unmatched_ignore"] == []
    assert summary["placement"] == "rules: scale sharing, TQ007 report" and summary["groups"] > 10
    loaded = load_checkpoint(path, repo)
    assert loaded.extra["family"] == "ultralytics" and loaded.extra["version"] == VERSION[family]
    assert loaded.extra["output_layout"] == "ultralytics"
    model = loaded.model
    floats = set(_float_names(family))
    import torch

    layers = ("Conv2d", "QuantConv2d", "MaxPool2d", "QuantMaxPool2d")
    for name, m in model.named_modules():
        if type(m).__name__ in layers:
            quantized = hasattr(m, "_input_quantizer")
            assert quantized == (name not in floats), name
            if name in floats:
                assert type(m) is torch.nn.Conv2d and not hasattr(m, "_weight_quantizer"), name
    assert summary["quantized"]["QuantConv2d"] == sum(type(m).__name__ == "QuantConv2d" for m in model.modules())


def test_ptq_table_names_family_and_version(yolo_checkpoint, calib_images, tmp_path):
    ckpt, repo = yolo_checkpoint("yolo26", "model")
    out = rules_cli("quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", SIZE, "--batch-size", 2,
               "--calib-batches", 1, "--calib-method", "max", "--ignore-policy", r"model\.99\..*").output
    assert "ultralytics 26 (detect: model.23)" in out and "ultralytics [B, 4+nc, N]" in out
    assert re.search(r"ignore patterns matching\s+.*model\\\.99", out)


def test_ignore_pattern_matching_nothing_warns(yolo_checkpoint, caplog):
    """A pattern that keeps nothing float is never silent (the YOLOv5 default on an Ultralytics model was)."""
    import logging

    from trtqat.models import load_checkpoint
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = yolo_checkpoint("yolov8", "model")
    loaded = load_checkpoint(ckpt, repo)
    with caplog.at_level(logging.WARNING, logger="trtqat"):
        _, replaced, _, patterns = prepare_quantized(loaded, QuantConfig(ignore=(r"model\.22\.m\..*",), use_rules=False))
    assert replaced.unmatched == [r"model\.22\.m\..*"] and r"model\.22\.m\..*" in patterns
    assert any("matches no quantizable module" in r.getMessage() and r"model\.22\.m" in r.getMessage()
               for r in caplog.records)
    assert sorted(replaced.ignored) == sorted(_float_names("yolov8"))  # the family default still applies


def test_end2end_yolo26_keeps_the_one_to_one_outputs_float(yolo_checkpoint, calib_images, tmp_path):
    ckpt, repo = yolo_checkpoint("yolo26", "ema", end2end=True)
    data = json.loads(rules_cli("rules", ckpt, "--repo", repo, "--size", SIZE, "--json").stdout)
    assert data["output_layout"] == "end2end" and data["unmatched_ignore"] == []
    assert sorted(data["ignored"]) == sorted(f"model.23.one2one_cv{b}.{i}.2" for b in (2, 3) for i in range(3))


# --- placement: what TensorRT will fuse (trtqat lint on trtqat's own export) -------------------------------------

#: quantizer modules the block rules of ultralytics.yaml create in the 't' fixtures (module -> rule id)
BLOCK_OPS = {
    "yolov8": {**{f"model.{i}.splitop": "TQ008" for i in (2, 4, 6, 8, 12, 15, 18, 21)}},
    "yolo11": {**{f"model.{i}.splitop": "TQ008" for i in (2, 4, 6, 8, 10, 13, 16, 19, 22)},
               "model.10.m.0.addop_attn": "TQ009", "model.10.m.0.addop_ffn": "TQ009",
               **{f"model.10.m.0.attn.{op}": "TQ010" for op in ("splitop", "matmul_qk", "matmul_av", "addop")}},
    "yolo26": {**{f"model.{i}.splitop": "TQ008" for i in (2, 4, 6, 8, 10, 13, 16, 19, 22)},
               "model.9.addop": "TQ009",
               **{f"{b}.{op}": "TQ009" for b in ("model.10.m.0", "model.22.m.0.1") for op in ("addop_attn", "addop_ffn")},
               **{f"{b}.attn.{op}": "TQ010" for b in ("model.10.m.0", "model.22.m.0.1")
                  for op in ("splitop", "matmul_qk", "matmul_av", "addop")}},
}
#: lower bound of the INT8 share of MACs lint predicts at 64 px (measured 0.93-0.96: only the head's last convs
#: and the DFL stay float)
MIN_INT8_MACS = 0.9


@pytest.fixture(scope="module")
def exported(ptq, tmp_path_factory):
    """Factory ``family -> (onnx path, lint report)``: ``trtqat export --no-verify`` of the PTQ checkpoint."""
    from trtqat.graph.lint import lint_onnx

    root = tmp_path_factory.mktemp("ultralytics_onnx")
    cache = {}

    def get(family):
        if family not in cache:
            path, repo, _ = ptq(family)
            before = upstream_modules()
            out = root / f"{family}.onnx"
            rules_cli("export", path, "--repo", repo, "--size", SIZE, "--no-verify", "--save", out)
            restore(before)
            cache[family] = (out, lint_onnx(out))
        return cache[family]

    return get


def _head_onnx_names(family: str) -> set[str]:
    det = DETECT[family]
    names = {f"/model/{det}/cv{b}.{i}/cv{b}.{i}.2/Conv" for b in (2, 3) for i in range(3)}
    return names | ({f"/model/{det}/dfl/conv/Conv"} if family != "yolo26" else set())


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_ptq_quantizes_inside_the_blocks(ptq, family):
    _, _, summary = ptq(family)
    assert summary["block_ops"] == BLOCK_OPS[family]
    counts = summary["quantized"]
    assert counts["QuantSplit"] == sum(op.endswith("splitop") for op in BLOCK_OPS[family])
    assert counts.get("QuantMatMul", 0) == sum(op.endswith(("matmul_qk", "matmul_av")) for op in BLOCK_OPS[family])


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_lint_predicts_only_the_input_quantize(exported, family):
    """The placement target: TensorRT fuses every Q/DQ but the network input's (C2f/C3k2 Split inputs, PSABlock and
    SPPF adds, INT8 attention), and only the head's last convs and the DFL run float."""
    path, report = exported(family)
    s = report.summary
    assert [x.rule_id for x in report.standalone] == ["LINT001"], [(x.name, x.reason) for x in report.standalone]
    assert s["standalone_qdq"] == 1 and not s["parse_errors"]
    assert s["int8_share_macs"] >= MIN_INT8_MACS, s
    float_macs = {x.name for x in report.layers if x.precision != "INT8" and x.macs}
    assert float_macs == _head_onnx_names(family)
    if family != "yolov8":  # the attention MatMuls run INT8, the Softmax fused into the first (F4)
        bmm = [x for x in report.layers if x.op == "MatMul"]
        assert bmm and all(x.precision == "INT8" for x in bmm)
        assert all(any(f.endswith("/Softmax") for f in x.fused) for x in bmm if "matmul_qk" in x.name)
    # in the ONNX itself: the head's last convs and the DFL read float inputs and float weights
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in _head_onnx_names(family):
            assert all(producers.get(x) is None or producers[x].op_type != "DequantizeLinear" for x in node.input[:2]), \
                node.name


@pytest.mark.parametrize("family", ["yolo11", "yolo26"])
def test_attention_rule_off_keeps_attention_float(yolo_checkpoint, family):
    """--rule TQ010=off: no quantizer inside Attention; the PSABlock adds and Split inputs stay quantized."""
    from trtqat.models import load_checkpoint
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = yolo_checkpoint(family, "model")
    _, replaced, _, _ = prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig(rule_overrides=("TQ010=off",)), SIZE)
    assert replaced.block_ops == {k: v for k, v in BLOCK_OPS[family].items() if v != "TQ010"}
    _, baseline, _, _ = prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig(use_rules=False), SIZE)
    assert baseline.block_ops == {}  # --no-rules: no trtqat placement at all


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_block_forwards_compute_what_upstream_computes(yolo_checkpoint, family):
    """With every quantizer disabled, the blocks' trtqat forwards give the fused float model's output exactly,
    and the scale groups tie each Split input to its chunk readers (one scale)."""
    import copy

    import torch

    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant.modes import quant_disabled
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = yolo_checkpoint(family, "model")
    loaded = load_checkpoint(ckpt, repo)
    ref = fuse_model(copy.deepcopy(loaded.model)).float().eval()
    model, replaced, groups, _ = prepare_quantized(loaded, QuantConfig(), SIZE)
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), quant_disabled(model):
        got, want = model(x), ref(x)
    got, want = (got[0], want[0]) if isinstance(got, (tuple, list)) else (got, want)
    assert torch.equal(got, want)
    split = next(g for g in groups if "model.2.splitop" in g.members)
    assert {"model.2.cv2.conv", "model.2.m.0.cv1.conv", "model.2.m.0.addop"} <= set(split.members)
    if family != "yolov8":
        qkv = next(g for g in groups if "model.10.m.0.attn.splitop" in g.members)
        assert {"model.10.m.0.attn.pe.conv", "model.10.m.0.attn.matmul_qk", "model.10.m.0.attn.matmul_av"} <= set(qkv.members)
