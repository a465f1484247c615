"""CUDA paths: calibration, pytorch-quantization's own GPU-only MSE, PTQ/QAT/export from the CLI.

Marked ``gpu``: ``make test`` (and CI, which has no GPU) deselects them; run with ``make test-gpu`` on a
machine with CUDA. Each test also skips itself when CUDA is absent.
"""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from trtqat.cli import main

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SIZE = 64


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_histogram_on_cuda_equals_reference_calibrator():
    """The CUDA path (histc) collects exactly what pytorch-quantization's calibrator does, range growth included."""
    from pytorch_quantization.calib import HistogramCalibrator

    from trtqat.quant.calibrator import FastHistogramCalibrator

    torch.manual_seed(0)
    ours, theirs = FastHistogramCalibrator(), HistogramCalibrator(8, None, False, torch_hist=True)
    for scale in (1.0, 3.0, 0.5, 7.0):
        x = (torch.randn(4, 16, 32, 32) * scale).cuda().contiguous(memory_format=torch.channels_last)
        ours.collect(x)
        theirs.collect(x)
    assert ours._calib_hist.device.type == "cuda"
    assert torch.equal(ours._calib_hist.float(), theirs._calib_hist.float())
    assert torch.equal(ours._calib_bin_edges.cpu(), theirs._calib_bin_edges.cpu())


def test_cpu_and_cuda_binning_agree():
    """The CPU bincount path and CUDA's histc give the same counts for the same values."""
    from trtqat.quant.calibrator import _Scratch, abs_max, linear_histogram

    torch.manual_seed(1)
    x = torch.randn(3_000_000) * 2.5
    top = abs_max(x)
    cpu = linear_histogram(x, 2048, top, top, _Scratch())
    gpu = linear_histogram(x.cuda(), 2048, top.cuda(), top.cuda(), _Scratch())
    assert torch.equal(cpu, gpu.cpu())


def test_reference_cuda_mse_matches_trtqat_mse():
    """pytorch-quantization's MSE search (it calls .cuda(), so only here) and trtqat's numpy search agree
    within one histogram bin on a skewed histogram."""
    from pytorch_quantization.calib import HistogramCalibrator

    from trtqat.calib.amax import mse_amax

    torch.manual_seed(2)
    cal = HistogramCalibrator(8, None, False, torch_hist=True)
    cal.collect(torch.cat([torch.randn(200_000), torch.randn(50) * 40]).abs().cuda())
    theirs = float(cal.compute_amax("mse"))
    counts, edges = cal._calib_hist.int().cpu().numpy(), cal._calib_bin_edges.cpu().numpy()
    ours = mse_amax(counts.astype(np.int64), edges)
    assert ours == pytest.approx(theirs, abs=float(edges[1] - edges[0]) * 1.001)


def test_ptq_on_cuda_matches_cpu(yolo_checkpoint, calib_images, tmp_path, monkeypatch):
    """`trtqat quantize --device cuda` works end to end (the rules trace runs on the CPU at the same size
    first: stale upstream grid caches must move along) and its amax agree with a CPU run; the checkpoint
    loads on CPU. TF32 is off and the method is ``max``: with TF32 (PyTorch's cuDNN default) the random
    fixture's activations drift by ~1e-3 per layer, and an MSE optimum can move by a few percent."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ckpt, repo = yolo_checkpoint("yolov7")
    amax = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.pt"
        res = run("quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", SIZE, "--batch-size", 4,
                  "--calib-batches", 2, "--calib-method", "max", "--ptq", out, "--device", device, "--json")
        assert res.exit_code == 0, res.output
        meta = torch.load(out, map_location="cpu", weights_only=False)["trtqat"]
        amax[device] = meta["amax"]
    assert amax["cpu"].keys() == amax["cuda"].keys()
    for name, value in amax["cpu"].items():
        assert amax["cuda"][name] == pytest.approx(value, rel=1e-3), name


def test_qat_with_amp_and_export_on_cuda(yolo_checkpoint, calib_images, tmp_path):
    """QAT on CUDA with AMP: finite loss, per-epoch files, resume; the result exports and verifies."""
    ckpt, repo = yolo_checkpoint("yolov5")
    common = ("--repo", repo, "--calib", calib_images, "--size", SIZE, "--batch-size", 4, "--calib-batches", 1,
              "--ptq", tmp_path / "ptq.pt", "--qat", tmp_path / "qat.pt", "--train", calib_images, "--iters", 2,
              "--device", "cuda", "--amp", "--json")
    res = run("quantize", ckpt, *common, "--epochs", 1)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    losses = [e["loss"] for e in out["qat"]["epochs"]]
    assert losses and all(np.isfinite(v) for v in losses)
    res = run("quantize", ckpt, *common, "--epochs", 2, "--resume")
    assert res.exit_code == 0, res.output
    assert [e["epoch"] for e in json.loads(res.stdout)["qat"]["epochs"]] == [0, 1]
    res = run("export", tmp_path / "qat.pt", "--repo", repo, "--size", SIZE, "--dynamic",
              "--save", tmp_path / "qat.onnx", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["verification"]["passed"]
