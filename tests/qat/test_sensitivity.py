"""Sensitivity analysis ranks a deliberately damaged layer first; policy regex and chart."""
import re

import pytest
import torch

from trtqat.data.images import image_stream
from trtqat.eval.fidelity import FidelityMeter
from trtqat.quant.modes import quant_disabled
from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq
from trtqat.quant.quantizers import set_amax
from trtqat.quant.sensitivity import ignore_regex, plot_sensitivity, quantizers_by_layer, run_sensitivity

DAMAGED = 6


@pytest.fixture(scope="module")
def damaged(yolo_checkpoint, calib_images):
    ckpt, repo = yolo_checkpoint("yolov5")
    res = run_ptq(ckpt, repo=repo, calib=CalibConfig(calib_dir=calib_images, size=64, batch_size=2, calib_batches=1),
                  qconf=QuantConfig(family_ignore=False, use_rules=False))
    model = res.model
    conv = model.model[DAMAGED].cv1.conv  # a C3 block: damage the first conv's weight scale
    set_amax(conv._weight_quantizer, conv._weight_quantizer._amax * 1e-3)
    x = torch.from_numpy(next(iter(image_stream(calib_images, 64, 2))))
    with quant_disabled(model), torch.no_grad():
        ref = model(x)

    def score(m):
        meter = FidelityMeter()
        with torch.no_grad():
            meter.update(ref, m(x))
        return meter.score()

    return model, score


@pytest.mark.parametrize("mode", ["drop", "single"])
def test_damaged_layer_ranks_first(damaged, mode, tmp_path):
    model, score = damaged
    layers = quantizers_by_layer(model)
    indices = [i for i, _, _ in layers]
    assert 24 in indices and 0 in indices and 11 not in indices  # detect head quantized; Upsample has none
    flags = [q._disabled for _, _, qs in layers for q in qs]
    result = run_sensitivity(model, score, mode=mode, metric="SQNR dB")
    assert [q._disabled for _, _, qs in layers for q in qs] == flags  # restored
    assert result.rows[0].index == DAMAGED and len(result.rows) == len(layers)
    assert result.rows[0].impact > result.rows[1].impact >= result.rows[-1].impact
    assert result.ignore_policy(1) == rf"model\.{DAMAGED}\..*"
    summary = result.to_dict(top_k=1)
    assert summary["rows"][0]["name"] == f"model.{DAMAGED}" and summary["ignore_policy"] == result.ignore_policy(1)
    png = plot_sensitivity(result, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ignore_regex():
    pattern = ignore_regex([17, 3])
    assert pattern == r"model\.(?:3|17)\..*"
    assert re.match(pattern, "model.17.m.0.cv1.conv") and re.match(pattern, "model.3.conv")
    assert not re.match(pattern, "model.31.conv") and not re.match(pattern, "model.170.conv")
    assert ignore_regex([]) is None
