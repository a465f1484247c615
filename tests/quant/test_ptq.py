"""PTQ end to end on the fixture families: replacement, ignore policy, calibration, checkpoint round trip."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from pytorch_quantization import nn as qnn

from trtqat.calib.amax import mse_amax
from trtqat.cli import main
from trtqat.demo import fixtures
from trtqat.quant import modes
from trtqat.quant._compat import load_quant_state_dict
from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq
from trtqat.quant.quantizers import named_quantizers
from trtqat.quant.replace import replace_modules

SIZE = 256


@pytest.fixture(scope="module")
def ptq_v5(yolo_checkpoint, calib_images, tmp_path_factory):
    ckpt, repo = yolo_checkpoint("yolov5")
    out = tmp_path_factory.mktemp("ptq") / "ptq.pt"
    # rules off: these tests pin the replacement itself (the rules have their own tests in tests/rules)
    res = run_ptq(ckpt, repo=repo, out=out, calib=CalibConfig(calib_images, size=SIZE, batch_size=4, calib_batches=2),
                  qconf=QuantConfig(use_rules=False))
    return res, out, repo


def test_replacement_counts_and_default_ignore(ptq_v5):
    res, _, _ = ptq_v5
    q = res.replaced.quantized
    # yolov5s topology: 60 convs (3 of them detect convs, kept float), 1 SPPF maxpool, 7 residual adds
    assert q["QuantConv2d"] == 57 and q["QuantMaxPool2d"] == 1 and q["QuantAdd"] == 7
    assert res.replaced.ignored == ["model.24.m.0", "model.24.m.1", "model.24.m.2"]
    detect = res.model.model[24]
    assert all(type(m) is torch.nn.Conv2d for m in detect.m)
    assert res.calib.images == 8 and res.calib.batches == 2 and not res.calib.unseen


def test_every_activation_quantizer_has_positive_amax(ptq_v5):
    res, _, _ = ptq_v5
    for name, q in named_quantizers(res.model):
        assert hasattr(q, "_amax"), name
        assert float(q._amax.min()) > 0, name
        if name.endswith("_weight_quantizer"):
            assert q._amax.dim() == 4 and q._amax.shape[1:] == (1, 1, 1)


def test_checkpoint_round_trip_in_new_process(ptq_v5, tmp_path):
    """The PTQ file reloads in a fresh process into the same model: identical amax and outputs."""
    res, out, repo = ptq_v5
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "x.npy", x.numpy())
    with modes.validation_mode(res.model):
        expected = res.model(x)[0].numpy()
    script = textwrap.dedent(f"""
        import json, numpy as np, torch
        from trtqat.models import load_checkpoint
        from trtqat.quant import modes
        from trtqat.quant.checkpoint import amax_table
        lm = load_checkpoint({str(out)!r}, {str(repo)!r})
        with modes.validation_mode(lm.model):
            y = lm.model(torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})))[0]
        np.save({str(tmp_path / 'y.npy')!r}, y.numpy())
        print(json.dumps({{"amax": amax_table(lm.model), "meta": lm.extra["kind"]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    from trtqat.quant.checkpoint import amax_table

    assert got["meta"] == "ptq"
    assert got["amax"] == amax_table(res.model)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_amax_equals_direct_mse_of_collected_histogram(yolo_checkpoint, calib_images):
    """The stored amax is the MSE optimum of exactly the histogram calibration collected."""
    from trtqat.data.images import image_stream
    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant.calibrate import collect_statistics, compute_amax

    ckpt, repo = yolo_checkpoint("yolov7")
    model = fuse_model(load_checkpoint(ckpt, repo).model)
    replace_modules(model, [r"model\.105\.m\..*"])
    collect_statistics(model, image_stream(calib_images, SIZE, 4, 1))
    hists = {n: q._calibrator.histogram() for n, q in named_quantizers(model) if n.endswith("_input_quantizer")}
    amax, unseen = compute_amax(model, "mse")
    assert not unseen
    for name in list(hists)[:5]:
        assert amax[name] == pytest.approx(mse_amax(*hists[name]))


def test_user_ignore_policy_keeps_modules_float(yolo_checkpoint, calib_images):
    ckpt, repo = yolo_checkpoint("yolov7")
    res = run_ptq(ckpt, repo=repo, calib=CalibConfig(calib_images, size=SIZE, batch_size=8, calib_batches=1),
                  qconf=QuantConfig(ignore=(r"model\.0\.", r"model\.51\.m\."), use_rules=False))
    assert type(res.model.model[0].conv) is torch.nn.Conv2d
    assert all(type(m) is torch.nn.MaxPool2d for m in res.model.model[51].m)
    assert isinstance(res.model.model[1].conv, qnn.QuantConv2d)
    assert "model.0.conv" in res.replaced.ignored and "model.105.m.0" in res.replaced.ignored


def test_modes_restore_after_error(ptq_v5):
    model = ptq_v5[0].model
    before = [(q._disabled, q._if_quant, q._if_calib) for _, q in named_quantizers(model)]
    with pytest.raises(RuntimeError):
        with modes.calibration_mode(model):
            assert all(q._if_calib or q._disabled for _, q in named_quantizers(model))
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with modes.quant_disabled(model):
            assert all(q._disabled for _, q in named_quantizers(model))
            raise RuntimeError("boom")
    assert [(q._disabled, q._if_quant, q._if_calib) for _, q in named_quantizers(model)] == before


def test_quantization_changes_outputs_and_disabling_restores_float(ptq_v5, calib_images):
    """Fake-quant changes the outputs, but stays close to float; disabling restores float exactly.

    The fixtures are thin random-weight networks (8-32 channels) so int8 costs more fidelity than on a
    trained YOLO: the bound is loose on purpose."""
    from trtqat.data.images import image_stream

    res, _, _ = ptq_v5
    x = torch.from_numpy(next(iter(image_stream(calib_images, SIZE, 4))))  # in-distribution input
    with modes.validation_mode(res.model):
        yq = res.model(x)[0]
    with modes.quant_disabled(res.model), torch.no_grad():
        yf = res.model(x)[0]
    assert not torch.equal(yq, yf)
    cos = torch.nn.functional.cosine_similarity(yq.flatten(), yf.flatten(), dim=0)
    assert cos > 0.9  # a thin random-weight fixture (8-32 channels) quantizes coarsely; see test docstring


def test_state_dict_loads_on_cpu(ptq_v5, yolo_checkpoint):
    """pytorch-quantization's own state-dict loading calls .cuda(); ours works on CPU."""
    from trtqat.models import fuse_model, load_checkpoint

    res, _, _ = ptq_v5
    ckpt, repo = yolo_checkpoint("yolov5")
    fresh = fuse_model(load_checkpoint(ckpt, repo).model)
    replace_modules(fresh, [r"model\.24\.m\..*"])
    load_quant_state_dict(fresh, res.model.state_dict())
    a = dict(named_quantizers(fresh))["model.0.conv._input_quantizer"]._amax
    b = dict(named_quantizers(res.model))["model.0.conv._input_quantizer"]._amax
    assert torch.equal(a, b)


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


@pytest.mark.parametrize("method", ["entropy", "percentile", "max"])
def test_cli_methods_and_json(yolo_checkpoint, calib_images, tmp_path, method):
    ckpt, repo = yolo_checkpoint("yolov5")
    code, out = run("quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", SIZE, "--batch-size", 4,
                    "--calib-batches", 1, "--calib-method", method, "--ptq", tmp_path / "p.pt", "--json")
    assert code == 0, out
    summary = json.loads(out[out.index("{"):])
    assert summary["calib"]["method"] == method and summary["calib"]["images"] == 4
    assert (tmp_path / "p.pt").is_file()


def test_unreadable_images_are_skipped_and_counted(yolo_checkpoint, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov5")
    folder = tmp_path / "imgs"
    fixtures.make_images(folder, n=3)
    fixtures.make_corrupt_image(folder)
    code, out = run("quantize", ckpt, "--repo", repo, "--calib", folder, "--size", SIZE, "--json")
    assert code == 0, out
    summary = json.loads(out[out.index("{"):])
    assert summary["skipped_images"] == 1 and summary["calib"]["images"] == 3


@pytest.mark.parametrize("case,args,message", [
    ("size", ["--size", 250], "not a multiple of the model stride 32"),
    ("empty", [], "no images"),
    ("corrupt", [], "none of the 1 images could be read"),
    ("cuda", ["--device", "cuda"], "CUDA is not available"),
    ("regex", ["--ignore-policy", "model\\.("], "not a valid regular expression"),
])
def test_bad_inputs_exit_2_and_write_nothing(yolo_checkpoint, tmp_path, case, args, message):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA present")
    ckpt, repo = yolo_checkpoint("yolov5")
    folder = tmp_path / "imgs"
    folder.mkdir()
    if case == "corrupt":
        fixtures.make_corrupt_image(folder)
    elif case != "empty":
        fixtures.make_images(folder, n=2)
    out_file = tmp_path / "ptq.pt"
    code, out = run("quantize", ckpt, "--repo", repo, "--calib", folder, "--ptq", out_file, *args)
    assert code == 2, out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in out
    assert list(tmp_path.glob("*.pt")) == [] and not list(tmp_path.glob(".ptq.pt*"))


@pytest.mark.parametrize("command", ["quantize", "sensitive"])
def test_trtqat_checkpoint_is_refused_not_calibrated_again(ptq_v5, calib_images, tmp_path, command):
    """Calibrating a PTQ/QAT checkpoint again silently replaced its amax values; now: one line, exit 2."""
    _, ptq_file, repo = ptq_v5
    extra = ["--ptq", tmp_path / "again.pt"] if command == "quantize" else ["--summary", tmp_path / "s.json"]
    code, out = run(command, ptq_file, "--repo", repo, "--calib", calib_images, "--size", SIZE, *extra)
    assert code == 2, out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "is a trtqat PTQ checkpoint" in errors[0] and "trtqat eval" in errors[0]
    assert "Traceback" not in out and list(tmp_path.iterdir()) == []


def _placement(yolo_checkpoint, **kw):
    from trtqat.models import load_checkpoint
    from trtqat.quant.ptq import prepare_quantized

    ckpt, repo = yolo_checkpoint("yolov5")
    model, replaced, groups, _ = prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig(**kw), 64)
    return model, replaced, groups


def _shared_objects(model) -> int:
    """How many quantizer objects are reached under more than one name."""
    from trtqat.quant.quantizers import quantizer_aliases

    return sum(len(names) > 1 for names in quantizer_aliases(model).values())


def test_placement_variants_are_separable(yolo_checkpoint):
    """Scale sharing and the YOLOv5 detect-head rule TQ007 can be turned off one at a time (benchmark needs)."""
    det = ("model.24.m.0", "model.24.m.1")
    model, rep, groups = _placement(yolo_checkpoint)  # default: sharing + TQ007 quantize-input
    head = model.model[24].m
    assert len(groups) == 16 and _shared_objects(model) > 0
    assert head[0]._input_quantizer is model.model[18].conv._input_quantizer
    assert list(rep.converted) == list(det) and list(rep.float_why) == ["model.24.m.2"]
    assert "shared with model.18.conv" in rep.converted["model.24.m.0"]

    model, rep, groups = _placement(yolo_checkpoint, share=False)  # TQ007 as default, no sharing
    head = model.model[24].m
    assert groups == [] and _shared_objects(model) == 0
    assert isinstance(head[0], qnn.QuantConv2d) and isinstance(head[1], qnn.QuantConv2d)
    assert type(head[2]) is torch.nn.Conv2d
    assert list(rep.converted) == list(det) and "own scale" in rep.converted["model.24.m.0"]
    assert rep.quantized["QuantConv2d"] == 59 and "no scale sharing" in rep.placement

    model, rep, groups = _placement(yolo_checkpoint, rule_overrides=("TQ007=report",))  # sharing, TQ007 report
    assert len(groups) == 14 and _shared_objects(model) > 0
    assert all(type(m) is torch.nn.Conv2d for m in model.model[24].m) and rep.converted == {}
    assert list(rep.float_why) == ["model.24.m.0", "model.24.m.1", "model.24.m.2"]
    assert "TQ007 report: kept float" in rep.float_why["model.24.m.0"]
    assert "TQ007" not in rep.float_why["model.24.m.2"]  # m.2 reads a tensor nothing else reads

    model, rep, groups = _placement(yolo_checkpoint, use_rules=False)  # baseline: no placement at all
    assert groups == [] and _shared_objects(model) == 0 and rep.converted == {}
    assert all(type(m) is torch.nn.Conv2d for m in model.model[24].m)
    assert rep.float_why["model.24.m.0"].startswith("detect output conv (model\\.24\\.m\\..*")
    assert rep.placement.startswith("--no-rules baseline")


def test_cli_placement_flags_and_float_reasons(yolo_checkpoint, calib_images, tmp_path):
    ckpt, repo = yolo_checkpoint("yolov5")
    base = ["quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", 64, "--batch-size", 4,
            "--calib-batches", 1, "--calib-method", "max"]
    code, out = run(*base, "--no-share", "--ignore-policy", r"model\.0\.", "--json")
    assert code == 0, out
    s = json.loads(out[out.index("{"):])
    assert s["groups"] == 0 and sorted(s["converted"]) == ["model.24.m.0", "model.24.m.1"]
    assert s["float"] == {"model.0.conv": r"--ignore-policy model\.0\.",
                          "model.24.m.2": r"detect output conv (model\.24\.m\..*: ignore_detect_outputs of yolov5.yaml)"}
    code, out = run(*base, "--rule", "TQ007=report")  # the table names every float layer and why
    assert code == 0, out
    assert "kept float (why)" in out and "model.24.m.0: detect output conv" in out and "TQ007 report" in out
    code, out = run(*base, "--rule", "TQ007=sometimes")
    assert code == 2 and "Error: --rule 'TQ007=sometimes': 'sometimes' is not a setting of TQ007" in out
