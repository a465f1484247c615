"""Accuracy claims on the committed trained detectors (trtqat.demo.trained), where quantization error shows.

The random-weight fixtures cannot test accuracy (their mAP is 0); these tests use the trained YOLOv5-shaped
reference at a reduced input size to stay quick, on held-out generated images (``shapes_val``).
"""
import pytest
import torch

from trtqat.data.images import image_stream
from trtqat.eval.evaluate import EvalConfig, eval_set, evaluate
from trtqat.eval.fidelity import FidelityMeter
from trtqat.quant.modes import quant_disabled, validation_mode
from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq
from trtqat.quant.qat import QatConfig, train_qat
from trtqat.quant.sensitivity import run_sensitivity

SIZE = 256


@pytest.fixture(scope="module")
def ptq_yolov5(trained_checkpoint, shapes_val):
    ckpt, repo = trained_checkpoint("yolov5")
    calib = CalibConfig(calib_dir=shapes_val.train_images, size=SIZE, batch_size=8, calib_batches=2)
    return run_ptq(ckpt, repo=repo, calib=calib, qconf=QuantConfig())


@pytest.fixture(scope="module")
def val_set(shapes_val):
    return eval_set(shapes_val.val_images, EvalConfig(size=SIZE, batch_size=8), ann=shapes_val.val_json, nc=8,
                    cache=True)


def _sqnr(model, batches, refs) -> float:
    """Mean SQNR (dB) of ``model`` (fake-quant on) against the float model's outputs ``refs``."""
    with validation_mode(model):
        return _sqnr_as_is(model, batches, refs)


def _sqnr_as_is(model, batches, refs) -> float:
    """Mean SQNR (dB) of ``model`` with its quantizers as they are (already in validation mode)."""
    meter = FidelityMeter()
    with torch.no_grad():
        for x, ref in zip(batches, refs):
            meter.update(ref, model(x))
    return meter.score()


def test_trained_fixture_has_learnt_the_task(ptq_yolov5, val_set):
    """The float model finds the shapes (a random model scores 0) and PTQ stays close to it."""
    float_map = evaluate(ptq_yolov5.model, val_set, quantized=False).map
    ptq_map = evaluate(ptq_yolov5.model, val_set, quantized=True).map
    assert float_map > 0.3, float_map
    assert abs(float_map - ptq_map) < 0.05, (float_map, ptq_map)


def test_qat_improves_fidelity_over_ptq(ptq_yolov5, shapes_val, tmp_path):
    """Label-free QAT (distillation from the float model, the default recipe: Adam at --lr 3e-5, learned
    activation scales) moves the quantized model closer to the ORIGINAL float model than PTQ, on held-out
    images, within 96 steps of 4 images. (QAT changes the weights, so the QAT model's own float self is no
    reference.) Measured: 30.37 -> 31.43 dB (--lr 1e-5: 31.42; with --fixed-amax 30.94). At 24 steps the
    learned scales gained only 0.23 dB (fixed: 0.90): they need steps to settle, hence this budget."""
    held_out = [torch.from_numpy(b) for b in image_stream(shapes_val.val_images, SIZE, 8, max_batches=2)]
    with quant_disabled(ptq_yolov5.model), torch.no_grad():
        refs = [ptq_yolov5.model(x) for x in held_out]
    before = _sqnr(ptq_yolov5.model, held_out, refs)
    cfg = QatConfig(epochs=1, iters=96, batch_size=4, size=SIZE)
    qat = train_qat(ptq_yolov5.model, sorted(shapes_val.train_images.glob("*.jpg")), tmp_path / "qat.pt", cfg)
    after = _sqnr(qat.model, held_out, refs)
    assert after > before + 0.5, (before, after)
    assert _sqnr(ptq_yolov5.model, held_out, refs) == pytest.approx(before)  # the PTQ model (the teacher) is untouched


def test_sensitivity_ranking_holds_on_held_out_images(trained_checkpoint, shapes_val):
    """The layer the sensitivity ranks first (measured on calibration images) matters on images it never saw:
    keeping it in float raises the held-out SQNR by at least 1 dB more than keeping the last-ranked layer.

    Measured (held-out SQNR gain, top / bottom layer): 2.27 / 0.07 dB on this machine's kernels, 2.44 / -0.01
    with AVX2-only kernels, 2.30 / 0.09 on one thread; the gap (2.2-2.4 dB) is resolved with a 1 dB margin.
    A ranking in the wrong order fails (the gap turns negative). mAP cannot resolve this on the fixture:
    floating either layer moves mAP@0.5:0.95 by 0.0004-0.0015, the noise of one evaluation, and the order
    of the two gains flipped between kernel settings."""
    from trtqat.quant.sensitivity import quantizers_by_layer

    ckpt, repo = trained_checkpoint("yolov5")
    calib = CalibConfig(calib_dir=shapes_val.train_images, size=SIZE, batch_size=8, calib_batches=1, method="max")
    res = run_ptq(ckpt, repo=repo, calib=calib, qconf=QuantConfig(use_rules=False))
    batches = [torch.from_numpy(b) for b in image_stream(shapes_val.train_images, SIZE, 8, max_batches=1)]
    held_out = [torch.from_numpy(b) for b in image_stream(shapes_val.val_images, SIZE, 8, max_batches=4)]
    with quant_disabled(res.model), torch.no_grad():
        refs = [res.model(x) for x in batches]
        held_refs = [res.model(x) for x in held_out]

    ranking = run_sensitivity(res.model, lambda m: _sqnr_as_is(m, batches, refs), mode="drop", metric="SQNR dB")
    top, bottom = ranking.rows[0], ranking.rows[-1]
    layers = {i: qs for i, _, qs in quantizers_by_layer(res.model)}

    def held_out_gain(index):
        for q in layers[index]:
            q.disable()
        try:
            return _sqnr_as_is(res.model, held_out, held_refs) - base
        finally:
            for q in layers[index]:
                q.enable()

    with validation_mode(res.model):
        base = _sqnr_as_is(res.model, held_out, held_refs)
        gain_top, gain_bottom = held_out_gain(top.index), held_out_gain(bottom.index)
    assert gain_top > gain_bottom + 1.0, (top.name, gain_top, bottom.name, gain_bottom)
