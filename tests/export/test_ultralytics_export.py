"""``trtqat export`` of Ultralytics models (YOLOv8, YOLO11, YOLO26 and YOLO26's end-to-end head), on the scratch
``ultralytics`` fixture (scale ``t``, random weights: enough for structure and exactness).

What is pinned: the decoded output traced alone (``output0``, no feature maps; also in the rules trace),
``--head raw`` refused, the metadata trtqat eval and Ultralytics' ``AutoBackend`` read, the exact Q/DQ
parameter check on single-output-channel convs and on the convs kept float, verification by the parts of
each output layout (a corrupted output fails on the part that was corrupted), the end-to-end head's
post-processing float and known to lint, and dynamic batch verified at two batch sizes.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from export_helpers import run_cli, wrap_outputs
from upstream_modules import restore, upstream_modules

from trtqat.errors import VerificationError
from trtqat.quant import verify

#: input size of these tests (stride 32): 189 anchors, so the 100 best rows are a real subset
SIZE = 96
NC = 80
#: fixture key -> (family, end2end)
MODELS = {"yolov8": ("yolov8", False), "yolo11": ("yolo11", False), "yolo26": ("yolo26", False),
          "yolo26-e2e": ("yolo26", True)}
VERSION = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}
ANCHORS = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2


@pytest.fixture(scope="session")
def ultra_ptq(yolo_checkpoint, calib_images, tmp_path_factory):
    """Factory ``(key, dfl_int8=False) -> (ptq.pt, repo)``: PTQ (max calibration on 2 images, no rules: the
    default ignore placement) of a fixture checkpoint, cached. ``dfl_int8`` quantizes the DFL conv too (its
    single output channel gets a per-channel scale of size 1)."""
    from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq

    root = tmp_path_factory.mktemp("ultra_ptq")
    cache: dict = {}

    def get(key: str, dfl_int8: bool = False):
        if (key, dfl_int8) not in cache:
            before = upstream_modules()
            family, end2end = MODELS[key]
            ckpt, repo = yolo_checkpoint(family, "model", **({"end2end": True} if end2end else {}))
            qconf = QuantConfig(use_rules=False)
            if dfl_int8:  # the head's output convs float, the DFL conv INT8
                qconf = QuantConfig(use_rules=False, family_ignore=False,
                                    ignore=(r"model\.22\.cv2\.\d+\.2", r"model\.22\.cv3\.\d+\.2"))
            out = root / f"{key}{'_dfl' if dfl_int8 else ''}_ptq.pt"
            run_ptq(ckpt, repo=repo, out=out, qconf=qconf,
                    calib=CalibConfig(calib_dir=calib_images, size=SIZE, batch_size=2, calib_batches=1, method="max"))
            restore(before)
            cache[(key, dfl_int8)] = (out, repo)
        return cache[(key, dfl_int8)]

    return get


@pytest.fixture(scope="session")
def ultra_cli_export(ultra_ptq, tmp_path_factory):
    """Factory ``key -> (summary, onnx.ModelProto)``: ``trtqat export --dynamic --batch 2 --json`` of the PTQ
    checkpoint (FP16 default, verification on), cached."""
    root = tmp_path_factory.mktemp("ultra_onnx")
    cache: dict = {}

    def get(key: str):
        if key not in cache:
            before = upstream_modules()
            ckpt, repo = ultra_ptq(key)
            save = root / f"{key}.onnx"
            res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--dynamic", "--batch", 2, "--save", save,
                          "--json")
            restore(before)
            assert res.exit_code == 0, res.output + (res.stderr or "")
            cache[key] = (json.loads(res.stdout), onnx.load(str(save)))
        return cache[key]

    return get


def _layout(key: str) -> str:
    return "end2end" if MODELS[key][1] else "ultralytics"


def _session(model: onnx.ModelProto):
    return verify.ort_session(model.SerializeToString())


# ------------------------------------------------------------------ outputs, metadata, dynamic batch


#: the CLI export of every model takes ~20 s each on 2 cores: make test exports the two layouts (yolov8: DFL;
#: yolo26-e2e: attention, no DFL, the end-to-end head); yolo11 and yolo26's one-to-many head run in test-all
#: (their verification is also covered below on the dynamic FP32 export, test_anchor_free_layout_*)
CLI_KEYS = [k if k in ("yolov8", "yolo26-e2e") else pytest.param(k, marks=pytest.mark.slow) for k in MODELS]


@pytest.mark.parametrize("key", CLI_KEYS)
def test_decoded_output_alone_dynamic_and_verified_at_two_batches(ultra_cli_export, key):
    summary, model = ultra_cli_export(key)
    layout = _layout(key)
    k = min(300, ANCHORS)
    expected = ["batch", k, 6] if layout == "end2end" else ["batch", 4 + NC, ANCHORS]
    assert summary["outputs"] == {"output0": expected}  # the decoded tensor alone: no feature maps, no raw logits
    assert [o.name for o in model.graph.output] == ["output0"] and [i.name for i in model.graph.input] == ["images"]
    assert (summary["family"], summary["version"], summary["output_layout"]) == (
        "ultralytics", VERSION[MODELS[key][0]], layout)
    ver = summary["verification"]
    assert ver["passed"]
    assert {c["batch"] for c in ver["checks"]} == {1, 2} and {c["graph"] for c in ver["checks"]} == {"fp32", "fp16"}
    assert {c["part"] for c in ver["checks"]} == set(verify.LAYOUT_PARTS[layout])
    # the head's (and attention's) x.shape reads: static dims folded, the batch read from the input, so no
    # activation has a Shape reader (one more float reader of a quantized tensor in lint's model of TensorRT)
    assert all(n.input[0] == "images" for n in model.graph.node if n.op_type == "Shape")
    assert summary["cleanup"]["batch_shapes_rewired"] >= 1 and summary["cleanup"]["shape_reads_folded"] >= 1
    sess = _session(model)  # and a third batch size runs
    out = sess.run(None, {"images": np.random.default_rng(0).random((3, 3, SIZE, SIZE), dtype=np.float32)})[0]
    assert out.shape == (3, *expected[1:])


@pytest.mark.parametrize("key", ["yolov8", "yolo26-e2e"])
def test_metadata_names_family_version_layout_for_eval_and_ultralytics(ultra_cli_export, key):
    from trtqat.eval.layouts import hint_from_metadata
    from trtqat.graph.family_detect import family_from_metadata

    summary, model = ultra_cli_export(key)
    meta = {p.key: p.value for p in model.metadata_props}
    layout = _layout(key)
    assert meta["family"] == "ultralytics" and meta["version"] == VERSION[MODELS[key][0]]
    assert meta["output_layout"] == layout and summary["metadata"] == meta
    # the keys Ultralytics' exporter writes, in the form its AutoBackend parses (ast.literal_eval)
    import ast

    names = ast.literal_eval(meta["names"])
    assert isinstance(names, dict) and len(names) == NC and names[0] == "person"
    assert int(meta["stride"]) == 32 and ast.literal_eval(meta["imgsz"]) == [SIZE, SIZE]
    assert meta["task"] == "detect" and ast.literal_eval(meta["end2end"]) is (layout == "end2end")
    assert int(meta["batch"]) == 1
    hint = hint_from_metadata(meta, "x.onnx")
    assert (hint.layout, hint.nc) == (layout, NC)
    assert family_from_metadata(meta) == "ultralytics"  # trtqat lint/optimize name it as the torch side does


@pytest.mark.parametrize("key", ["yolov8", "yolo26-e2e"])
def test_eval_reads_checkpoint_and_export_and_names_the_family(ultra_ptq, ultra_cli_export, calib_images, key,
                                                               tmp_path):
    summary, model = ultra_cli_export(key)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    ckpt, repo = ultra_ptq(key)
    res = run_cli("eval", ckpt, path, "--repo", repo, "--val", calib_images, "--size", SIZE, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["rows"]
    version = VERSION[MODELS[key][0]]
    assert [(r["format"], r["family"], r["version"], r["layout"], r["layout_from"]) for r in rows] == [
        ("checkpoint", "ultralytics", version, _layout(key), "model"),
        ("onnx", "ultralytics", version, _layout(key), "metadata")]
    table = run_cli("eval", path, "--val", calib_images, "--size", SIZE)
    assert table.exit_code == 0 and f"ultralytics {version}" in table.stdout


def test_head_raw_is_refused_in_one_line(ultra_ptq, tmp_path):
    ckpt, repo = ultra_ptq("yolov8")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--head", "raw", "--save", tmp_path / "r.onnx")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in res.output
    assert "--head raw is not available" in lines[0] and "ultralytics v8" in lines[0] and "--head decoded" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_rules_trace_has_the_decoded_output_only(yolo_checkpoint, tmp_path):
    """The rules trace asks for the raw head; an Ultralytics Detect's raw output is a dict holding the feature
    maps it read, which used to become graph outputs (float readers of every neck output: '<graph output>')."""
    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant.onnx_trace import trace_onnx

    ckpt, repo = yolo_checkpoint("yolo11", "model")
    model = fuse_model(load_checkpoint(ckpt, repo).model)
    names = trace_onnx(model, tmp_path / "r.onnx", size=64, head="raw", quantized=False)
    graph = onnx.load(str(tmp_path / "r.onnx")).graph
    assert names == ["output"] and [o.name for o in graph.output] == ["output"]
    res = run_cli("rules", ckpt, "--repo", repo, "--size", 64, "--json")
    assert res.exit_code == 0, res.output
    assert "<graph output>" not in res.stdout


@pytest.mark.parametrize("float_dtype", ["fp32", "fp16"])
def test_dynamic_hw_export_decodes_at_another_size(yolo_checkpoint, tmp_path, float_dtype):
    """With --dynamic-hw the anchor points are computed in the graph (the head's own ``dynamic`` flag), not
    frozen at the traced size; in FP16 the grid's Range/ConstantOfShape stay float32 (Range has no float16)."""
    import torch

    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant.export import ExportConfig, export_model

    ckpt, repo = yolo_checkpoint("yolov8", "model")
    save = tmp_path / "hw.onnx"
    export_model(ckpt, repo, ExportConfig(size=64, save=save, dynamic=True, dynamic_hw=True, no_quant=True,
                                          float_dtype=float_dtype, verify=False))
    model = fuse_model(load_checkpoint(ckpt, repo).model).eval()
    assert not model.model[-1].__dict__.get("dynamic", False)  # restored after the trace
    sess = verify.ort_session(save.read_bytes())
    x = np.random.default_rng(0).random((2, 3, 128, 96), dtype=np.float32)
    got = sess.run(None, {"images": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0].numpy()
    assert got.shape == ref.shape == (2, 4 + NC, 16 * 12 + 8 * 6 + 4 * 3)
    if float_dtype == "fp32":
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * float(np.abs(ref).max()))
    else:
        parts = verify.measure_output(ref, got, decoded=True, layout="ultralytics")
        assert parts["boxes"][0] > 0.9999 and parts["confidence"][0] > 0.99  # FP16 rounding of a random model


# ------------------------------------------------------------------ exact Q/DQ parameters


def _weight_qdq(model: onnx.ModelProto, conv_name: str) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The weight Q and DQ feeding the conv named ``conv_name``."""
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.name == conv_name)
    dq = producer[conv.input[1]]
    return producer[dq.input[0]], dq


DFL_CONV = "/model/model.22/dfl/conv/Conv"


def test_exact_check_reads_a_single_output_channel_weight_scale(ultra_ptq, tmp_path):
    """The DFL conv has one output channel: its per-channel weight scale has one value. It was taken for an
    activation scale ('4 Q/DQ parameter mismatch(es) ... dfl/conv'); the node kind decides now."""
    from onnx import numpy_helper

    from trtqat.models import load_checkpoint
    from trtqat.quant.export import ExportConfig, export_model

    ckpt, repo = ultra_ptq("yolov8", dfl_int8=True)
    save = tmp_path / "dfl.onnx"
    res = export_model(ckpt, repo, ExportConfig(size=SIZE, save=save, float_dtype="fp32"))
    assert res.verification.passed
    onnx_model = onnx.load(str(save))
    q, dq = _weight_qdq(onnx_model, DFL_CONV)
    inits = {i.name: i for i in onnx_model.graph.initializer}
    assert numpy_helper.to_array(inits[dq.input[1]]).size == 1
    model = load_checkpoint(ckpt, repo).model.float().eval()
    assert verify.qdq_param_problems(model, onnx_model) == []
    scale = numpy_helper.to_array(inits[dq.input[1]])  # a wrong DFL weight scale is caught, naming the module
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array((scale * 2).astype(scale.dtype), dq.input[1]))
    problems = verify.qdq_param_problems(model, onnx_model)
    assert problems and all("model.22.dfl.conv._weight_quantizer" in p for p in problems)


def test_exact_check_knows_the_convs_kept_float(ultra_ptq, tmp_path):
    """Default placement: the head's output convs and the DFL have float weights in the ONNX. Float weights
    where the model quantizes, or Q/DQ where the model is float, are both reported."""
    from onnx import helper, numpy_helper

    from trtqat.models import load_checkpoint
    from trtqat.quant.export import ExportConfig, export_model

    ckpt, repo = ultra_ptq("yolov8")
    save = tmp_path / "float_head.onnx"
    export_model(ckpt, repo, ExportConfig(size=SIZE, save=save, float_dtype="fp32", verify=False))
    onnx_model = onnx.load(str(save))
    model = load_checkpoint(ckpt, repo).model.float().eval()
    assert verify.qdq_param_problems(model, onnx_model) == []
    producer = {o: n for n in onnx_model.graph.node for o in n.output}
    float_convs = [n for n in onnx_model.graph.node if n.op_type == "Conv" and n.input[1] not in producer]
    assert sorted(n.name for n in float_convs) == sorted(
        [f"/model/model.22/cv{b}.{i}/cv{b}.{i}.2/Conv" for b in (2, 3) for i in range(3)] + [DFL_CONV])
    # Q/DQ on the weights of the DFL conv, which the model keeps float
    dfl = next(n for n in float_convs if n.name == DFL_CONV)
    w = dfl.input[1]
    scale = numpy_helper.from_array(np.array([15 / 127], np.float32), "dfl_w_scale")
    zero = numpy_helper.from_array(np.zeros(1, np.int8), "dfl_w_zero")
    onnx_model.graph.initializer.extend([scale, zero])
    onnx_model.graph.node.extend([
        helper.make_node("QuantizeLinear", [w, "dfl_w_scale", "dfl_w_zero"], ["dfl_w_q"], name="dfl_wq", axis=0),
        helper.make_node("DequantizeLinear", ["dfl_w_q", "dfl_w_scale", "dfl_w_zero"], ["dfl_w_dq"], name="dfl_wdq",
                         axis=0)])
    dfl.input[1] = "dfl_w_dq"
    assert any("Q/DQ on the weights of model.22.dfl.conv, which is float in the model" in p
               for p in verify.qdq_param_problems(model, onnx_model))
    # float weights into a conv whose weight quantizer is enabled
    onnx_model = onnx.load(str(save))
    conv = next(n for n in onnx_model.graph.node if n.name == "/model/model.22/cv2.0/cv2.0.0/conv/Conv")
    q, dq = _weight_qdq(onnx_model, conv.name)
    conv.input[1] = q.input[0]
    problems = verify.qdq_param_problems(model, onnx_model)
    assert any("weights reach it without Q/DQ but model.22.cv2.0.0.conv has an enabled weight quantizer" in p
               for p in problems)


# ------------------------------------------------------------------ verification by the parts of each layout


@pytest.fixture(scope="session")
def ultra_exported(ultra_ptq, yolo_checkpoint, tmp_path_factory):
    """Factory ``(key, quantized) -> (model, fp32 ONNX bytes)``: a dynamic-batch FP32 export without verification
    (the tests run it), cached. ``quantized=False``: the float model (``--no-quant``)."""
    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant.export import ExportConfig, export_model

    root = tmp_path_factory.mktemp("ultra_verify")
    cache: dict = {}

    def get(key: str, quantized: bool = True):
        if (key, quantized) not in cache:
            before = upstream_modules()
            if quantized:
                ckpt, repo = ultra_ptq(key)
            else:
                family, end2end = MODELS[key]
                ckpt, repo = yolo_checkpoint(family, "model", **({"end2end": True} if end2end else {}))
            save = root / f"{key}_{quantized}.onnx"
            export_model(ckpt, repo, ExportConfig(size=SIZE, save=save, float_dtype="fp32", verify=False,
                                                  dynamic=True, no_quant=not quantized))
            model = load_checkpoint(ckpt, repo).model
            model = (model if quantized else fuse_model(model)).float().eval()
            restore(before)
            cache[(key, quantized)] = (model, save.read_bytes())
        return cache[(key, quantized)]

    return get


def corrupting(session_factory, kind: str):
    """Wrap ``verify.ort_session`` so onnxruntime's output is corrupted like a broken export, in its layout:

    ``[B, 4 + nc, N]``: ``reverse`` reverses the class scores of every anchor, ``shuffle`` moves every anchor's
    scores to another anchor, ``half`` sets every score to 0.5, ``boxes`` moves every anchor's box to another
    anchor. ``[B, K, 6]``: ``reverse`` maps class c to nc - 1 - c, ``shuffle`` permutes the score column,
    ``half`` sets every score to 0.5, ``boxes`` permutes the boxes (per image).
    """
    def corrupt(out: np.ndarray) -> np.ndarray:
        o, rng = out.copy(), np.random.default_rng(0)
        if o.shape[-1] == 6:
            for b in range(len(o)):
                if kind == "reverse":
                    o[b, :, 5] = NC - 1 - o[b, :, 5]
                elif kind == "shuffle":
                    o[b, :, 4] = rng.permutation(o[b, :, 4])
                elif kind == "half":
                    o[b, :, 4] = 0.5
                elif kind == "boxes":
                    o[b, :, :4] = o[b, rng.permutation(o.shape[1]), :4]
            return o
        perm = rng.permutation(o.shape[2])
        if kind == "reverse":
            o[:, 4:] = o[:, 4:][:, ::-1]
        elif kind == "shuffle":
            o[:, 4:] = o[:, 4:][:, :, perm]
        elif kind == "half":
            o[:, 4:] = 0.5
        elif kind == "boxes":
            o[:, :4] = o[:, :4][:, :, perm]
        return o

    return wrap_outputs(session_factory, corrupt)


def _check(ultra_exported, key, *, quantized=True, monkeypatch=None, corruption=None, calib_dir=None):
    model, data = ultra_exported(key, quantized)
    if corruption is not None:
        monkeypatch.setattr(verify, "ort_session", corrupting(verify.ort_session, corruption))
    return verify.check_graphs(model, {"fp32": data}, size=SIZE, head="decoded", quantized=quantized,
                               batches=[1, 2], calib_dir=calib_dir)


def _failed(report: verify.VerifyReport) -> set[str]:
    return {c.part for c in report.checks if not c.passed}


ANCHOR_FREE = ["yolov8", "yolo11", "yolo26"]


@pytest.mark.parametrize("key", ANCHOR_FREE)
def test_anchor_free_layout_correct_passes(ultra_exported, key):
    report = _check(ultra_exported, key)
    assert report.passed, [(c.batch, c.part, c.cosine, c.min_cosine) for c in report.checks if not c.passed]
    assert [c.part for c in report.checks if c.batch == 1] == list(verify.LAYOUT_PARTS["ultralytics"])
    assert {c.measure for c in report.checks if c.part == "top detections"} == {"agreement"}


# every corruption on one random-weight model with attention and no DFL; the trained YOLOv8-shaped detector
# gets the same corruptions below (test_trained_yolov8_corrupted_output_fails_on_that_part)
@pytest.mark.parametrize("key", ["yolo26"])
@pytest.mark.parametrize("corruption, broken, intact", [
    ("reverse", {"classes"}, {"boxes", "confidence"}),  # the best score per anchor is unchanged
    ("shuffle", {"confidence"}, {"boxes"}),
    ("half", {"confidence", "classes"}, {"boxes"}),
    ("boxes", {"boxes"}, {"confidence", "classes"}),
])
def test_anchor_free_layout_fails_on_the_corrupted_part(ultra_exported, key, corruption, broken, intact, monkeypatch):
    report = _check(ultra_exported, key, monkeypatch=monkeypatch, corruption=corruption)
    failed = _failed(report)
    assert broken <= failed and not intact & failed, (corruption, failed)
    for part in broken:  # every batch, and well below its minimum
        assert all(not c.passed and c.cosine < c.min_cosine - 0.05 for c in report.checks if c.part == part)


@pytest.fixture(scope="session")
def trained_yolov8(trained_ptq, tmp_path_factory):
    """(model, fp32 dynamic ONNX bytes, calib_dir) of the committed trained YOLOv8-shaped detector's PTQ
    (``trained_ptq``: default rules, MSE on 16 held-out shapes images at 320), exported without verification."""
    from trtqat.models import load_checkpoint
    from trtqat.quant.export import ExportConfig, export_model

    before = upstream_modules()
    ckpt, repo, calib = trained_ptq("yolov8")
    save = tmp_path_factory.mktemp("trained_yolov8") / "ptq.onnx"
    export_model(ckpt, repo, ExportConfig(size=320, save=save, float_dtype="fp32", dynamic=True, verify=False))
    model = load_checkpoint(ckpt, repo).model.float().eval()
    restore(before)
    return model, save.read_bytes(), calib


def _check_trained(trained_yolov8, monkeypatch=None, corruption=None):
    model, data, calib = trained_yolov8
    if corruption is not None:
        monkeypatch.setattr(verify, "ort_session", corrupting(verify.ort_session, corruption))
    return verify.check_graphs(model, {"fp32": data}, size=320, head="decoded", quantized=True, batches=[1, 4],
                               calib_dir=calib)


def test_trained_yolov8_export_passes_every_part_tightly(trained_yolov8):
    """On a trained model the noise floor is ~1: the fixed minimums apply (0.999, shares 0.9). Measured:
    boxes 1.0000, confidence and classes >= 0.9997, top class and top detections >= 0.98."""
    report = _check_trained(trained_yolov8)
    assert report.passed, [(c.batch, c.part, c.cosine, c.min_cosine) for c in report.checks if not c.passed]
    for c in report.checks:
        assert c.min_cosine >= (0.9 if c.measure == "agreement" else 0.999), (c.part, c.min_cosine)


@pytest.mark.parametrize("corruption, broken, intact", [
    ("reverse", {"classes", "top class"}, {"boxes", "confidence", "top detections"}),
    ("shuffle", {"confidence", "top detections"}, {"boxes"}),
    ("half", {"confidence", "classes", "top class", "top detections"}, {"boxes"}),
    ("boxes", {"boxes"}, {"confidence", "classes", "top class", "top detections"}),
])
def test_trained_yolov8_corrupted_output_fails_on_that_part(trained_yolov8, corruption, broken, intact, monkeypatch):
    report = _check_trained(trained_yolov8, monkeypatch, corruption)
    failed = _failed(report)
    assert broken <= failed and not intact & failed, (corruption, failed)
    for part in broken:
        assert all(c.cosine < 0.8 for c in report.checks if c.part == part), part


def test_anchor_free_half_scores_also_lose_the_top_detections(ultra_exported, monkeypatch):
    report = _check(ultra_exported, "yolov8", monkeypatch=monkeypatch, corruption="half")
    assert all(not c.passed for c in report.checks if c.part == "top detections")


def test_end2end_float_export_passes_every_part(ultra_exported, calib_images):
    """The float model on images: its scores are not saturated and its selection has no rounding noise."""
    report = _check(ultra_exported, "yolo26-e2e", quantized=False, calib_dir=calib_images)
    assert report.passed, [(c.batch, c.part, c.cosine, c.min_cosine) for c in report.checks if not c.passed]
    assert [c.part for c in report.checks if c.batch == 1] == list(verify.LAYOUT_PARTS["end2end"])
    assert all(c.cosine > 0.999 for c in report.checks)


@pytest.mark.parametrize("corruption, worst, intact", [
    # a reversed class id can be another row's class of the same box: that pair's score differs too
    ("reverse", "classes", {"detections", "boxes"}),
    ("shuffle", "scores", {"detections", "boxes", "classes"}),
    ("half", "scores", {"detections", "boxes", "classes"}),
    # every box carried by another row: the box is found, with that row's class and score
    ("boxes", "classes", {"detections", "boxes"}),
])
def test_end2end_fails_on_the_corrupted_part(ultra_exported, calib_images, corruption, worst, intact, monkeypatch):
    report = _check(ultra_exported, "yolo26-e2e", quantized=False, monkeypatch=monkeypatch, corruption=corruption,
                    calib_dir=calib_images)
    failed = _failed(report)
    assert worst in failed and not intact & failed, (corruption, failed)
    with pytest.raises(VerificationError, match=rf"output 'output0' \({worst}\)"):  # the part the error names
        verify.require_passed(report)


def test_end2end_quantized_export_passes_and_reversed_classes_fail(ultra_exported, monkeypatch):
    """The int8 random-weight model swaps many near-tied candidates under rounding alone (its own noise floor
    is loose); the matched pairs still pass, and a wholesale class error still fails."""
    assert _check(ultra_exported, "yolo26-e2e").passed
    report = _check(ultra_exported, "yolo26-e2e", monkeypatch=monkeypatch, corruption="reverse")
    assert "classes" in _failed(report)
    assert all(c.cosine < 0.1 for c in report.checks if c.part == "classes")


def test_end2end_pairs_tolerate_a_swap_at_the_cutoff():
    """Two candidates with near-equal scores at the end of the selection: either side may keep either one."""
    rows = np.array([[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 2], [40, 40, 50, 50, 0.3000, 3]], np.float64)
    other = rows.copy()
    other[2] = [60, 60, 70, 70, 0.3005, 4]  # a different candidate entered at the cutoff
    parts = verify.end2end_parts(rows[None], other[None])
    assert parts["detections"][0] == 1.0 and parts["classes"][0] == 1.0 and parts["boxes"][0] == 1.0
    other[2, 4] = 0.6  # ... but not one far above it
    assert verify.end2end_parts(rows[None], other[None])["detections"][0] < 1.0


def test_end2end_exactly_tied_scores_pass_in_any_order():
    """An untrained head scores every candidate the same (Ultralytics' bias init): torch and onnxruntime then
    break the top-k tie differently and select other anchors. Every row is a tie of the cutoff: passes. The
    same boxes with distinct scores are real differences: fail."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (20, 2))
    rows = np.concatenate([xy, xy + 10, np.full((20, 1), 2e-4), rng.integers(0, NC, (20, 1))], 1)
    other = rows.copy()
    other[:, :4] += 40  # other anchors
    parts = verify.end2end_parts(rows[None], other[None])
    assert all(sim == 1.0 for sim, *_ in parts.values())
    rows[:, 4] = np.linspace(0.9, 0.3, 20)
    other[:, 4] = rows[:, 4]
    assert verify.end2end_parts(rows[None], other[None])["detections"][0] < 0.5


def test_corrupted_ultralytics_export_exits_1_naming_the_part(ultra_ptq, tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "ort_session", corrupting(verify.ort_session, "reverse"))
    ckpt, repo = ultra_ptq("yolov8")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--float-dtype", "fp32", "--save", tmp_path / "v.onnx")
    assert res.exit_code == 1
    assert "disagree on output 'output0' (classes)" in res.stderr and "correlation" in res.stderr
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ the end-to-end head's post-processing


def test_end2end_post_processing_stays_float_and_lint_knows_its_ops(ultra_cli_export, tmp_path):
    from trtqat.graph.optable import OPS

    _, model = ultra_cli_export("yolo26-e2e")
    ops = {n.op_type for n in model.graph.node}
    post = {"TopK", "GatherElements"} & ops
    assert post == {"TopK", "GatherElements"}
    assert {"TopK", "GatherElements", "ReduceMax", "Mod", "Expand", "Equal", "Where"} & ops <= set(OPS)
    producer = {o: n for n in model.graph.node for o in n.output}
    readers = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    for n in model.graph.node:
        if n.op_type in ("TopK", "GatherElements", "ReduceMax"):
            assert not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)
            assert not any(r.op_type == "QuantizeLinear" for o in n.output for r in readers.get(o, []))
    assert not any(n.op_type == "Cast" and n.input[0] in producer and producer[n.input[0]].op_type in ("Div", "Mod")
                   and n.attribute[0].i == onnx.TensorProto.INT64 for n in model.graph.node)  # no int64 -> int64 Cast
    path = tmp_path / "e2e.onnx"
    onnx.save(model, str(path))
    res = run_cli("lint", path, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert not [f for f in report["findings"] if f["rule_id"].startswith("PARSE")]
    assert report["summary"]["family"] == "ultralytics" and report["summary"]["family_from"] == "metadata"
    assert report["summary"]["version"] == "26"
    layers = {la["name"]: la for la in report["layers"]}
    for n in model.graph.node:
        if n.op_type in ("TopK", "GatherElements") and n.name in layers:
            assert layers[n.name]["precision"] == "float"
