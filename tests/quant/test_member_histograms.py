"""Shared quantizers calibrate with one histogram per member (``trtqat.quant.member_histograms``) and take
the balanced MSE amax over them; nothing of the tracking outlives calibration."""
import numpy as np
import pytest
import torch

from trtqat.calib.amax import balanced_mse_amax, mse_amax
from trtqat.data.images import image_stream
from trtqat.models import load_checkpoint
from trtqat.quant.calibrate import calibrate, collect_statistics, compute_amax
from trtqat.quant.member_histograms import member_histograms
from trtqat.quant.ptq import QuantConfig, prepare_quantized
from trtqat.quant.quantizers import named_quantizers, quantizer_aliases

SIZE = 64


@pytest.fixture(scope="module")
def model_v5(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov5")
    return lambda: prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig())[0]


def _shared(model) -> dict[str, list[str]]:
    return {names[0]: names for names in quantizer_aliases(model).values() if len(names) > 1}


def test_each_member_collects_what_it_reads(model_v5, calib_images):
    model = model_v5()
    shared = _shared(model)
    residual = next(names for names in shared.values() if any(n.endswith("addop._input1_quantizer") for n in names))
    with member_histograms(model) as tracked:
        collect_statistics(model, image_stream(calib_images, SIZE, 4, 1))
        assert tracked == len(shared) > 0
        cal = model.get_submodule(residual[0])._calibrator
        hists = {name: cal.members[name].histogram() for name in residual}
        amax, _ = compute_amax(model, "mse")
    conv = next(n for n in residual if n.endswith("cv1.conv._input_quantizer"))
    skip = next(n for n in residual if n.endswith("addop._input0_quantizer"))
    branch = next(n for n in residual if n.endswith("addop._input1_quantizer"))
    # the block input x feeds cv1 and the Add's skip input: one tensor, the same histogram
    np.testing.assert_array_equal(hists[conv][0], hists[skip][0])
    assert not np.array_equal(hists[skip][0], hists[branch][0])  # the conv branch is another tensor
    merged = cal.histogram() if cal._calib_hist is not None else None
    assert merged is not None and merged[0].sum() == sum(h[0].sum() for h in hists.values())
    assert amax[residual[0]] == balanced_mse_amax(list(hists.values()))
    assert amax[residual[0]] != mse_amax(*merged)  # not the merged histogram's MSE amax


def test_calibrate_leaves_no_hooks_or_member_histograms(model_v5, calib_images):
    model = model_v5()
    calibrate(model, image_stream(calib_images, SIZE, 4, 1))
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    cals = [q._calibrator for _, q in named_quantizers(model) if q._calibrator is not None]
    assert not any(hasattr(c, "members") or hasattr(c, "member_queue") for c in cals)  # nothing to pickle


def test_other_methods_read_the_merged_histogram(model_v5, calib_images):
    model = model_v5()
    with member_histograms(model):
        collect_statistics(model, image_stream(calib_images, SIZE, 4, 1))
        name = next(iter(_shared(model)))
        counts, edges = model.get_submodule(name)._calibrator.histogram()
        amax, _ = compute_amax(model, "percentile")
    from trtqat.calib.amax import percentile_amax

    assert amax[name] == percentile_amax(counts, edges)


def test_hooks_are_removed_on_error(model_v5):
    model = model_v5()
    with pytest.raises(RuntimeError), member_histograms(model):
        model(torch.zeros(1, 4, SIZE, SIZE))  # four channels: the first conv refuses them
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
