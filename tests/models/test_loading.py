"""Loading upstream-style checkpoints: forms, family detection, one-line errors with exit code 2."""
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.demo import fixtures
from trtqat.errors import InputError
from trtqat.models import fuse_model, load_checkpoint


@pytest.mark.parametrize("family,detect,layers", [("yolov5", "model.24", 25), ("yolov7", "model.105", 106)])
@pytest.mark.parametrize("form", ["ema", "model", "bare"])
def test_forms_load_as_float_eval(yolo_checkpoint, family, detect, layers, form):
    ckpt, repo = yolo_checkpoint(family, form)
    loaded = load_checkpoint(ckpt, repo)
    assert loaded.family.name == family
    assert loaded.family.detect_name == detect and loaded.family.num_layers == layers
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.source_key == {"ema": "ema", "model": "model", "bare": None}[form]


def test_train_form_prefers_ema(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov5", "train")
    assert load_checkpoint(ckpt, repo).source_key == "ema"


def test_fuse_removes_batchnorm_and_keeps_outputs(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov7")
    model = load_checkpoint(ckpt, repo).model
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        before = model(x)[0]
        fused = fuse_model(model)
        after = fused(x)[0]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert torch.allclose(before, after, rtol=1e-3, atol=1e-3 * float(before.abs().max()))


def test_switching_between_two_repos_in_one_process(yolo_checkpoint):
    """Both clones provide a top-level 'models' package: the loader must not mix them up."""
    for family in ("yolov5", "yolov7", "yolov5"):
        ckpt, repo = yolo_checkpoint(family)
        assert load_checkpoint(ckpt, repo).family.name == family


def run(*args):
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.output


def one_error_line(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_missing_file(tmp_path, calib_images):
    code, out = run("quantize", tmp_path / "nope.pt", "--calib", calib_images)
    assert code == 2 and "checkpoint not found" in one_error_line(out)


def test_not_a_checkpoint(tmp_path, calib_images):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    code, out = run("quantize", bad, "--calib", calib_images)
    assert code == 2 and "is not a PyTorch checkpoint" in one_error_line(out)


def test_truncated_checkpoint(tmp_path, yolo_checkpoint, calib_images):
    ckpt, repo = yolo_checkpoint("yolov5")
    bad = tmp_path / "cut.pt"
    bad.write_bytes(ckpt.read_bytes()[:4000])
    code, out = run("quantize", bad, "--repo", repo, "--calib", calib_images)
    assert code == 2 and "could not be read" in one_error_line(out)


def test_pickle_needs_repo(yolo_checkpoint, calib_images, tmp_path):
    """In a fresh process (no upstream 'models' imported yet), without --repo."""
    ckpt, _ = yolo_checkpoint("yolov7")
    env = {k: v for k, v in os.environ.items() if k != "TRTQAT_REPO"}
    proc = subprocess.run([sys.executable, "-m", "trtqat", "quantize", str(ckpt), "--calib", str(calib_images)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "--repo" in line and "models" in line


def test_wrong_repo_folder(yolo_checkpoint, calib_images, tmp_path):
    ckpt, _ = yolo_checkpoint("yolov7")
    code, out = run("quantize", ckpt, "--repo", tmp_path, "--calib", calib_images)
    assert code == 2 and "does not look like a YOLOv5/YOLOv7 clone" in one_error_line(out)


def test_repo_of_the_other_family(yolo_checkpoint, calib_images):
    ckpt, _ = yolo_checkpoint("yolov7")
    _, v5_repo = yolo_checkpoint("yolov5")
    code, out = run("quantize", ckpt, "--repo", v5_repo, "--calib", calib_images)
    line = one_error_line(out)
    assert code == 2 and "--repo" in line


def test_torchvision_failure_is_named(yolo_checkpoint, calib_images, tmp_path):
    ckpt, _ = yolo_checkpoint("yolov5")
    repo = fixtures.write_repo("yolov5", tmp_path / "tv_repo", import_torchvision=True)
    code, out = run("quantize", ckpt, "--repo", repo, "--calib", calib_images)
    if code == 0:  # a machine where torchvision imports fine (seen on the GPU machine)
        pytest.skip("torchvision imports on this machine")
    line = one_error_line(out)
    assert code == 2 and "torchvision" in line


def test_checkpoint_without_module(tmp_path, calib_images):
    path = tmp_path / "weights_only.pt"
    torch.save({"epoch": 3, "optimizer": None}, path)
    code, out = run("quantize", path, "--calib", calib_images)
    line = one_error_line(out)
    assert code == 2 and "no model module" in line and "epoch" in line


def test_loader_error_types(tmp_path):
    with pytest.raises(InputError):
        load_checkpoint(tmp_path)
    legacy = tmp_path / "legacy.pt"
    with zipfile.ZipFile(legacy, "w") as z:
        z.writestr("x", b"not a torch archive")
    with pytest.raises(InputError, match="could not be read"):
        load_checkpoint(legacy)
    raw = tmp_path / "raw.pt"
    torch.save(["a list"], raw)
    with pytest.raises(InputError, match="holds a list"):
        load_checkpoint(raw)


@pytest.mark.parametrize("raised", [
    "raise RuntimeError('operator torchvision::nms does not exist')",
    "raise AttributeError(\"partially initialized module 'torchvision' has no attribute 'extension'\")",
    "raise OSError('libtorchvision.so: undefined symbol: _ZN3c10')",
    "raise ImportError(\"cannot import name '_C'\")",
])
def test_broken_torchvision_is_named_in_one_line(yolo_checkpoint, calib_images, tmp_path, raised):
    """A torchvision that is installed but broken fails in many ways; each must name torchvision (exit 2)."""
    ckpt, _ = yolo_checkpoint("yolov5")
    repo = fixtures.write_repo("yolov5", tmp_path / "repo", import_torchvision=True)
    stub = tmp_path / "site" / "torchvision"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(raised + "\n")
    # prepended: trtqat and its dependencies may themselves come from PYTHONPATH (they did on the GPU machine)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "trtqat", "quantize", str(ckpt), "--repo", str(repo),
                           "--calib", str(calib_images)], env=env, capture_output=True, text=True, timeout=120)
    line = one_error_line(proc.stderr)
    assert proc.returncode == 2 and "imports torchvision" in line


def test_fuse_works_on_parameters_that_require_grad(yolo_checkpoint):
    """YOLOv7's IDetect.fuse updates biases in place: fusing must not need requires_grad=False."""
    ckpt, repo = yolo_checkpoint("yolov7")
    model = load_checkpoint(ckpt, repo).model
    for p in model.parameters():
        p.requires_grad_(True)
    fused = fuse_model(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    with torch.no_grad():
        assert torch.isfinite(fused(torch.rand(1, 3, 64, 64))[0]).all()
