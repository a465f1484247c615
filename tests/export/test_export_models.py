"""``trtqat export`` on the YOLOv5/YOLOv7 fixtures: outputs, dynamic batch, Q/DQ structure, verification."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from export_helpers import SIZE, run_cli
from onnx import numpy_helper

NC, NA = 80, 3
GRIDS = [SIZE // s for s in (8, 16, 32)]
N_DECODED = NA * sum(g * g for g in GRIDS)
Q, DQ = "QuantizeLinear", "DequantizeLinear"
# (family, flags): yolov5 with the decoded head, yolov7 with the raw head; both fp16 (default) and dynamic
CASES = {"yolov5": ("--dynamic", "--batch", "2"), "yolov7": ("--dynamic", "--batch", "2", "--head", "raw")}


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


class Graph:
    """Producer/consumer lookups over a ModelProto, looking through Cast nodes (FP16 exports)."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.prod = {o: n for n in model.graph.node for o in n.output}
        self.cons: dict[str, list] = {}
        for n in model.graph.node:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)

    def source(self, tensor: str):
        """The node producing ``tensor`` (Casts skipped), or None for an initializer / graph input."""
        node = self.prod.get(tensor)
        while node is not None and node.op_type == "Cast":
            node = self.prod.get(node.input[0])
        return node

    def initializer_of(self, tensor: str) -> np.ndarray | None:
        while tensor not in self.init and tensor in self.prod and self.prod[tensor].op_type == "Cast":
            tensor = self.prod[tensor].input[0]
        return self.init.get(tensor)

    def reaches_output_without_conv(self, node) -> bool:
        outputs = {o.name for o in self.model.graph.output}
        todo, seen = list(node.output), set()
        while todo:
            t = todo.pop()
            if t in outputs:
                return True
            if t in seen:
                continue
            seen.add(t)
            for c in self.cons.get(t, []):
                if c.op_type != "Conv":
                    todo.extend(c.output)
        return False


@pytest.mark.parametrize("family", list(CASES))
def test_dynamic_export_verified_at_two_batch_sizes(cli_export, family):
    summary, model = cli_export(family, *CASES[family])
    ver = summary["verification"]
    assert ver["passed"] and ver["source"] == "seeded noise"
    assert {(c["graph"], c["batch"]) for c in ver["checks"]} == {(g, b) for g in ("fp32", "fp16") for b in (1, 2)}
    assert all(c["cosine"] >= c["min_cosine"] for c in ver["checks"])
    if family == "yolov5":
        expected = {"output": ["batch", N_DECODED, 5 + NC]}
    else:
        expected = {f"s{s}": ["batch", NA, g, g, 5 + NC] for s, g in zip((8, 16, 32), GRIDS)}
    assert summary["outputs"] == expected
    assert [o.name for o in model.graph.output] == list(expected)
    assert model.graph.input[0].name == "images"
    sess = _session(model)
    for batch in (1, 3):  # the saved file runs at batch sizes other than the traced one
        outs = sess.run(None, {"images": np.random.default_rng(batch).random((batch, 3, SIZE, SIZE), np.float32)})
        assert [list(o.shape) for o in outs] == [[batch, *shape[1:]] for shape in expected.values()]
        assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in outs)


@pytest.mark.parametrize("family", list(CASES))
def test_qdq_structure(cli_export, family):
    summary, model = cli_export(family, *CASES[family])
    g = Graph(model)
    qs = [n for n in model.graph.node if n.op_type == Q]
    dqs = [n for n in model.graph.node if n.op_type == DQ]
    assert len(qs) == len(dqs) == summary["qdq"]["quantize"] > 0
    for n in qs + dqs:
        for name in n.input[1:]:
            assert name in g.init, f"{n.name}: scale/zero point {name} is not an initializer"
            assert g.prod.get(name) is None  # in particular no Identity in front of it
        zp = g.init[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
        assert (g.init[n.input[1]] > 0).all()
    weights = activations = 0
    for q in qs:
        scale, w = g.init[q.input[1]], g.initializer_of(q.input[0])
        if w is not None:  # weight: per-channel on the output-channel axis
            axis = next((a.i for a in q.attribute if a.name == "axis"), 1)
            assert axis == 0 and scale.shape == (w.shape[0],)
            weights += 1
        else:  # activation: per-tensor
            assert scale.shape == ()
            activations += 1
    assert (weights, activations) == (summary["qdq"]["weight"], summary["qdq"]["activation"])
    assert not any(n.op_type == "Identity" for n in model.graph.node)


@pytest.mark.parametrize("family", list(CASES))
def test_detect_convs_stay_float_and_others_are_quantized(cli_export, family):
    _, model = cli_export(family, *CASES[family])
    g = Graph(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    head = [n for n in convs if g.reaches_output_without_conv(n)]
    assert len(head) == 3
    for n in head:  # found by position; confirmed by the weight shape: na * (5 + nc) output channels
        assert g.initializer_of(n.input[1]) is not None, (n.name, list(n.input))
        assert g.initializer_of(n.input[1]).shape[0] == NA * (5 + NC)
        assert g.source(n.input[1]) is None  # plain initializer, no DQ
        assert getattr(g.source(n.input[0]), "op_type", None) != DQ
    for n in convs:
        if n not in head:
            assert g.source(n.input[0]).op_type == DQ and g.source(n.input[1]).op_type == DQ


@pytest.mark.parametrize("family", list(CASES))
def test_fp16_default_graph_is_valid_and_typed(cli_export, family):
    summary, model = cli_export(family, *CASES[family])
    onnx.checker.check_model(model, full_check=True)
    assert summary["float_dtype"] == "fp16" and summary["opset"] == 13
    assert summary["fp16"]["qdq_dtype"] == "float32"  # opset 13 cannot hold FP16 Q/DQ
    F32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == F32
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {F32}
    g = Graph(model)
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    # below opset 19 only the float tail is FP16: a few boundary casts, never one per Q/DQ
    n_qdq = sum(n.op_type in (Q, DQ) for n in model.graph.node)
    assert 2 <= len(casts) <= 12 < n_qdq
    assert not any(g.prod.get(n.input[0]) is not None and g.prod[n.input[0]].op_type == DQ for n in casts)
    for n in model.graph.node:
        if n.op_type == "Conv" and g.prod.get(n.input[0]) is not None and g.prod[n.input[0]].op_type != DQ:
            # float convs (the detect head under the default policy) compute in FP16
            w = n.input[1]
            assert (g.init[w].dtype if w in g.init else np.float16) == np.float16


@pytest.mark.slow
def test_opset19_fp16_qdq_without_casts(ptq_checkpoint, tmp_path):
    from trtqat.quant.export import ExportConfig, export_model

    ckpt, repo = ptq_checkpoint("yolov5")
    res = export_model(ckpt, repo, ExportConfig(size=SIZE, opset=19, dynamic=True, batch=2, save=tmp_path / "m.onnx"))
    assert res.verification.passed
    assert res.fp16.qdq_dtype == "float16" and res.fp16.casts_added == 2  # images in, output out
    model = onnx.load(str(tmp_path / "m.onnx"))
    g = Graph(model)
    scales = {g.init[n.input[1]].dtype for n in model.graph.node if n.op_type in (Q, DQ)}
    assert scales == {np.dtype(np.float16)}
    assert sum(n.op_type == "Cast" for n in model.graph.node) == 2


def test_no_quant_float_checkpoint_has_no_qdq_and_matches_tightly(yolo_checkpoint, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov5")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--no-quant", "--float-dtype", "fp32",
                  "--save", tmp_path / "float.onnx")
    assert res.exit_code == 0, res.output
    model = onnx.load(str(tmp_path / "float.onnx"))
    assert not any(n.op_type in (Q, DQ) for n in model.graph.node)
    assert "Q/DQ nodes" in res.stdout and "0 Q / 0 DQ" in res.stdout


def test_no_quant_trtqat_checkpoint_disables_quantizers(ptq_checkpoint, tmp_path):
    from trtqat.quant.export import ExportConfig, export_model

    ckpt, repo = ptq_checkpoint("yolov7")
    res = export_model(ckpt, repo, ExportConfig(size=SIZE, no_quant=True, float_dtype="fp32", save=tmp_path / "f.onnx"))
    assert res.kind == "float" and res.qdq["quantize"] == 0
    checks = res.verification.checks
    assert [c.part for c in checks] == ["boxes", "objectness", "classes", "top class"]
    for check in checks:  # float FP32: tight on every part, no noise-floor relaxation needed
        assert check.limit_max_abs is not None and check.max_abs <= check.limit_max_abs and check.cosine > 0.9999


def test_shared_quantizers_export_identical_scales(ptq_checkpoint, tmp_path):
    """Two convs reading different tensors share one input quantizer -> both Qs carry the same scale."""
    from trtqat.models import load_checkpoint
    from trtqat.quant.export import ExportConfig, export_module

    ckpt, repo = ptq_checkpoint("yolov5")
    model = load_checkpoint(ckpt, repo).model
    q0, q1 = model.model[0].conv._input_quantizer, model.model[1].conv._input_quantizer
    assert float(q0.amax) != float(q1.amax)  # calibrated apart: images vs model.0's output
    model.model[1].conv._input_quantizer = q0
    export_module(model, tmp_path / "shared.onnx", ExportConfig(size=SIZE, float_dtype="fp32", verify=False))
    m = onnx.load(str(tmp_path / "shared.onnx"))
    g = Graph(m)
    convs = [n for n in m.graph.node if n.op_type == "Conv"][:2]  # model.0 reads images, model.1 model.0's output
    scales = [g.init[g.prod[g.prod[c.input[0]].input[0]].input[1]] for c in convs]
    assert g.prod[convs[0].input[0]].input[0] != g.prod[convs[1].input[0]].input[0]  # two different Qs
    assert scales[0] == scales[1] == np.float32(float(q0.amax) / 127)


@pytest.mark.parametrize("args, message", [
    (("--opset", "12"), "--opset 12 is not supported"),
    (("--opset", "20"), "--opset 20 is not supported"),
    (("--size", "100"), "--size 100 is not a multiple of the model stride 32"),
])
def test_bad_flags_exit_2_with_one_line(ptq_checkpoint, args, message):
    ckpt, repo = ptq_checkpoint("yolov5")
    res = run_cli("export", ckpt, "--repo", repo, *args)
    assert res.exit_code == 2
    assert res.stderr.startswith("Error: ") and message in res.stderr and res.stderr.count("\n") == 1


def test_float_checkpoint_without_no_quant_exit_2(yolo_checkpoint, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov7")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--save", tmp_path / "x.onnx")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "not a trtqat PTQ/QAT one" in res.stderr and "trtqat quantize" in res.stderr and "--no-quant" in res.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_missing_checkpoint_exit_2(tmp_path):
    res = run_cli("export", tmp_path / "nope.pt")
    assert res.exit_code == 2 and res.stderr.startswith("Error: checkpoint not found")


def test_failed_verification_exit_1_and_writes_nothing(ptq_checkpoint, tmp_path, monkeypatch):
    from trtqat.quant import verify

    impossible = verify.Tolerance(min_cosine=1.5)
    monkeypatch.setattr(verify, "TOLERANCES", {k: impossible for k in verify.TOLERANCES})
    monkeypatch.setattr(verify, "FLOOR_FACTOR", 0.0)  # no noise-floor allowance either
    ckpt, repo = ptq_checkpoint("yolov5")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--float-dtype", "fp32", "--save", tmp_path / "v.onnx")
    assert res.exit_code == 1
    assert "ONNX (fp32) and PyTorch disagree on output 'output' (" in res.stderr and "at batch 1" in res.stderr
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_wrong_qdq_scale_is_caught_exactly(ptq_checkpoint, tmp_path, monkeypatch):
    """One activation scale x4 is below the rounding-noise floor of the random fixture end to end, so the
    exact scale check must catch it (exit 1, nothing written)."""
    from onnx import numpy_helper

    from trtqat.quant import export as export_mod

    real_cleanup = export_mod.cleanup_model

    def tampered(model, **kw):
        clean, report = real_cleanup(model, **kw)
        inits = {i.name: i for i in clean.graph.initializer}
        q = next(n for n in clean.graph.node if n.op_type == Q and n.input[1] in inits
                 and numpy_helper.to_array(inits[n.input[1]]).ndim == 0)
        value = numpy_helper.to_array(inits[q.input[1]]) * 4
        inits[q.input[1]].CopyFrom(numpy_helper.from_array(value.astype(np.float32), q.input[1]))
        return clean, report

    monkeypatch.setattr(export_mod, "cleanup_model", tampered)
    ckpt, repo = ptq_checkpoint("yolov5")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--float-dtype", "fp32", "--save", tmp_path / "v.onnx")
    assert res.exit_code == 1, res.stderr
    assert "Q/DQ parameter mismatch" in res.stderr and "matches no activation quantizer" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_dynamic_hw_fp16_export_builds_its_grid_in_float32(yolo_checkpoint, tmp_path):
    """--dynamic-hw traces the detect head with its own ``dynamic`` flag (grid from the input shape); the FP16
    conversion keeps that grid's Range (no float16 type) in float32, and the file decodes at another size."""
    import torch

    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant import verify
    from trtqat.quant.export import ExportConfig, export_model

    ckpt, repo = yolo_checkpoint("yolov5")
    save = tmp_path / "hw.onnx"
    export_model(ckpt, repo, ExportConfig(size=64, save=save, dynamic=True, dynamic_hw=True, no_quant=True,
                                          verify=False))
    model = fuse_model(load_checkpoint(ckpt, repo).model).eval()
    x = np.random.default_rng(0).random((1, 3, 96, 128), dtype=np.float32)
    got = verify.ort_session(save.read_bytes()).run(None, {"images": x})[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0].numpy()
    assert got.shape == ref.shape == (1, 3 * (12 * 16 + 6 * 8 + 3 * 4), 85)
    assert verify.measure_output(ref, got, decoded=True)["boxes"][0] > 0.9999
