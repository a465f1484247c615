"""Ultralytics checkpoints (YOLOv8 / YOLO11 / YOLO26): family and version from the module tree, the default
ignore patterns, the checkpoint layouts the fixtures write, loading errors in one line, unknown heads refused.

The fixtures pickle the scratch ``ultralytics`` package of ``trtqat/demo/repos/ultralytics`` (copied to a
folder passed as ``--repo``). Tests that unpickle in this process restore the ``ultralytics`` modules after
each test, so no other test sees the fixture package.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner
from upstream_modules import restore_upstream_modules  # noqa: F401 (autouse)

from trtqat.cli import main
from trtqat.demo import fixtures
from trtqat.errors import InputError
from trtqat.models import FamilyInfo, fuse_model, load_checkpoint
from trtqat.models.family import check_supported, detect_family

DETECT = {"yolov8": "model.22", "yolo11": "model.23", "yolo26": "model.23"}
VERSION = {"yolov8": "v8", "yolo11": "11", "yolo26": "26"}



def one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_family_version_layout_and_ignore_patterns(yolo_checkpoint, family):
    ckpt, repo = yolo_checkpoint(family, "model")
    loaded = load_checkpoint(ckpt, repo)
    fam = loaded.family
    det = DETECT[family]
    esc = re.escape(det)
    assert (fam.name, fam.version, fam.output_layout, fam.detect_name) == ("ultralytics", VERSION[family], "ultralytics", det)
    assert fam.num_layers == int(det.split(".")[1]) + 1
    expected = [rf"{esc}\.cv2\.\d+\.2", rf"{esc}\.cv3\.\d+\.2"] + ([rf"{esc}\.dfl\..*"] if family != "yolo26" else [])
    assert list(fam.default_ignore) == expected
    assert fam.to_dict()["version"] == VERSION[family] and fam.label == f"ultralytics {VERSION[family]}"
    assert loaded.source_key == "model"  # YOLO.save(): 'ema' is None
    assert not loaded.model.training and all(p.dtype == torch.float32 for p in loaded.model.parameters())
    # the patterns name exactly the last conv of each branch (and the DFL conv), nothing else
    names = [n for n, m in loaded.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    hits = sorted(n for n in names if any(re.match(p, n) for p in fam.default_ignore))
    assert hits == sorted([f"{det}.cv{b}.{i}.2" for b in (2, 3) for i in range(3)]
                          + ([f"{det}.dfl.conv"] if family != "yolo26" else []))


def test_yolo26_end2end_head_and_fused_family(yolo_checkpoint):
    """With its one-to-one head selected, YOLO26 keeps that branch's last convs float, outputs [B, k, 6],
    and is still recognised after fuse() dropped the one-to-many branch."""
    ckpt, repo = yolo_checkpoint("yolo26", "ema", end2end=True)
    loaded = load_checkpoint(ckpt, repo)
    assert loaded.source_key == "ema" and loaded.family.output_layout == "end2end"
    assert list(loaded.family.default_ignore) == [r"model\.23\.one2one_cv2\.\d+\.2", r"model\.23\.one2one_cv3\.\d+\.2"]
    fused = fuse_model(loaded.model)
    head = fused.model[-1]
    assert head.cv2 is None and head.one2one_cv2 is not None
    again = detect_family(fused)
    assert (again.version, again.output_layout, again.default_ignore) == ("26", "end2end", loaded.family.default_ignore)
    with torch.no_grad():
        y, _ = fused(torch.rand(2, 3, 64, 64))
    assert tuple(y.shape) == (2, 64 + 16 + 4, 6)  # k = min(max_det, anchors) rows of x1 y1 x2 y2 score class


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_fuse_keeps_outputs_and_uses_split_forward(yolo_checkpoint, family):
    ckpt, repo = yolo_checkpoint(family, "model")
    model = load_checkpoint(ckpt, repo).model
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)[0]
        fused = fuse_model(model)
        after = fused(x)[0]
    assert tuple(before.shape) == (1, 4 + 80, 64 + 16 + 4)  # [B, 4 + nc, N]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    c2f = [m for m in fused.modules() if type(m).__name__ in ("C2f", "C3k2")]
    assert c2f and all(m.forward == m.forward_split for m in c2f)
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3 * float(before.abs().max()))
    if family == "yolo26":  # the unselected one-to-one head is dropped
        assert fused.model[-1].one2one_cv2 is None and fused.model[-1].cv2 is not None


_PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[2])
    import torch
    obj = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
    m = obj["model"] if obj.get("model") is not None else obj["ema"]
    print(json.dumps({"keys": list(obj), "entries": {k: type(v).__name__ for k, v in obj.items()},
                      "cls": type(m).__module__ + "." + type(m).__name__, "dtype": str(next(m.parameters()).dtype),
                      "training": m.training, "grad": next(m.parameters()).requires_grad,
                      "file": sys.modules["ultralytics"].__file__, "names": type(m.names).__name__,
                      "task": m.task, "stride": m.stride.tolist(), "yaml_file": m.yaml["yaml_file"]}))
""")


@pytest.mark.parametrize("form", ["model", "ema"])
def test_checkpoint_layouts_match_upstream(yolo_checkpoint, form):
    """``model``: what YOLO(...).save() writes (8.4.190); ``ema``: the trainer's last.pt (probed in a child)."""
    import json

    ckpt, repo = yolo_checkpoint("yolo11", form)
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(ckpt), str(repo)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["cls"] == "ultralytics.nn.tasks.DetectionModel" and facts["dtype"] == "torch.float16"
    assert facts["file"].startswith(str(repo)) and facts["names"] == "dict" and facts["task"] == "detect"
    assert facts["stride"] == [8.0, 16.0, 32.0] and facts["yaml_file"] == "yolo11t.yaml"
    if form == "model":
        assert facts["keys"] == ["ema", "model", "modelopt", "date", "version", "license", "docs"]
        assert facts["entries"]["ema"] == "NoneType" and facts["training"] and facts["grad"]
    else:
        assert {"epoch", "best_fitness", "ema", "updates", "optimizer", "train_args", "date", "version"} <= set(facts["keys"])
        assert facts["entries"]["model"] == "NoneType" and not facts["training"] and not facts["grad"]


def _cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def test_repo_pointing_at_the_ultralytics_package_says_no_repo_is_needed(yolo_checkpoint, calib_images):
    ckpt, repo = yolo_checkpoint("yolov8", "model")
    code, out = _cli("rules", ckpt, "--repo", repo / "ultralytics", "--size", 64)
    line = one_error_line(out)
    assert code == 2 and "need no --repo" in line and "not look like a YOLOv5/YOLOv7 clone" not in line


def test_repo_folder_holding_the_package_is_accepted(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov8", "model")
    assert load_checkpoint(ckpt, repo).repo == repo.resolve()


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None,
                    reason="an ultralytics package is installed here; the message is for machines without it")
def test_missing_ultralytics_package_names_pip_install(yolo_checkpoint, calib_images, tmp_path):
    ckpt, _ = yolo_checkpoint("yolo11", "model")
    env = {k: v for k, v in os.environ.items() if k != "TRTQAT_REPO"}
    proc = subprocess.run([sys.executable, "-m", "trtqat", "quantize", str(ckpt), "--calib", str(calib_images)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "pip install ultralytics" in line and "requirements.txt" not in line


# A Detect whose attributes are not those of any known head, a model with no detect head at all, and an
# Ultralytics Detect without its class branches: saved in a child with the fixture package (or a scratch
# module) importable. (An Ultralytics head of another task is checked in process, below.)
_ODD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from torch import nn
    case, out = sys.argv[2], sys.argv[3]
    if case == "ultra-no-cv3":
        model = torch.load(sys.argv[4], weights_only=False)["model"]
        del model.model[-1].cv3
    else:
        from oddheads import NoHead, OddDetect
        model = NoHead() if case == "no-head" else OddDetect()
    torch.save({"model": model, "ema": None}, out)
""")

_ODD_MODULE = textwrap.dedent("""
    from torch import nn

    class Detect(nn.Module):  # named like a YOLO head, but no per-level output convs 'm' and no anchors
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            return self.conv(x)

    class OddDetect(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(3, 8, 3), Detect())

    class NoHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3))
""")


@pytest.mark.parametrize("case,expected", [
    ("odd-detect", "has no m/anchors/nl attribute"),
    ("no-head", "no detect head found"),
    ("ultra-no-cv3", "has no cv3 attribute"),
])
def test_unknown_detect_heads_are_refused_in_one_line(yolo_checkpoint, calib_images, tmp_path, case, expected):
    ckpt, repo = yolo_checkpoint("yolov8", "model")
    (tmp_path / "oddheads.py").write_text(_ODD_MODULE)
    path = repo if case.startswith("ultra") else tmp_path
    out = tmp_path / f"{case}.pt"
    proc = subprocess.run([sys.executable, "-c", _ODD, str(path), case, str(out), str(ckpt)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-m", "trtqat", "quantize", str(out), "--calib", str(calib_images), "--size", "64"]
    if case.startswith("ultra"):
        args += ["--repo", str(repo)]
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    line = one_error_line(run.stderr)
    assert run.returncode == 2 and expected in line and "trtqat supports" in line


def test_head_checks_in_process(yolo_checkpoint):
    """``detect_family`` never raises; ``check_supported`` refuses what it flagged."""
    ckpt, repo = yolo_checkpoint("yolov8", "model")
    model = load_checkpoint(ckpt, repo).model
    head = model.model[-1]
    Segment = type("Segment", (type(head),), {"__module__": type(head).__module__})
    head.__class__ = Segment
    fam = detect_family(model)
    assert fam.name == "ultralytics" and "Ultralytics Segment head at model.22 is not supported" in fam.problem
    with pytest.raises(InputError, match="not supported"):
        check_supported(fam, "x.pt")
    ok = FamilyInfo("yolov5", 24, "model.24", 25, output_layout="yolov5")
    check_supported(ok)
    assert ok.default_ignore == (r"model\.24\.m\..*",) and ok.version == "" and ok.label == "yolov5"


@pytest.mark.parametrize("family", fixtures.ULTRALYTICS_FAMILIES)
def test_fixture_decode_equals_the_reference_decode(yolo_checkpoint, family):
    """The fixture Detect carries its own decode (it must not import trtqat); it equals the reference of
    :mod:`trtqat.demo.anchor_free_loss` (the convention the anchor-free training loss trains)."""
    from trtqat.demo.anchor_free_loss import decode

    ckpt, repo = yolo_checkpoint(family, "model")
    model = load_checkpoint(ckpt, repo).model
    head = model.model[-1]
    with torch.no_grad():
        y, preds = model(torch.rand(2, 3, 96, 64, generator=torch.Generator().manual_seed(3)))
    branch = preds["one2many"] if "one2many" in preds else preds
    ref = decode(branch, reg_max=head.reg_max, strides=head.stride.tolist())
    assert y.shape == ref.shape == (2, 4 + 80, 12 * 8 + 6 * 4 + 3 * 2)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-3)


def test_modelopt_qat_state_is_named_not_dropped_silently(yolo_checkpoint, tmp_path, caplog):
    """An Ultralytics QAT checkpoint (``modelopt`` holds ModelOpt's state) loads as its float weights, and says so:
    in the log, in the loaded model's notes (``trtqat eval`` prints them) and nowhere for a plain checkpoint."""
    from trtqat.models.checkpoint import torch_load

    ckpt, repo = yolo_checkpoint("yolov8", "model")
    plain = load_checkpoint(ckpt, repo)
    assert plain.notes == []
    obj, _ = torch_load(ckpt, repo)
    obj["modelopt"] = {"modelopt": {"modelopt_state_dict": [("quantize", {})]}, "ranges": {}}
    qat = tmp_path / "qat.pt"
    torch.save(obj, qat)
    with caplog.at_level("WARNING", logger="trtqat"):
        loaded = load_checkpoint(qat, repo)
    assert len(loaded.notes) == 1 and "ModelOpt QAT state" in loaded.notes[0] and "not applied" in loaded.notes[0]
    assert any("ModelOpt QAT state" in r.getMessage() for r in caplog.records)
    assert torch.equal(next(loaded.model.parameters()), next(plain.model.parameters()))  # the same float weights
