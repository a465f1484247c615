"""The accuracy benchmark runs every trained fixture, and its nudged-input noise floor reads each model in its own
output layout (the wrapper that nudges the input hides the detect head the layout is read from)."""
import pytest

from benchmarks import accuracy
from trtqat.demo import trained
from trtqat.eval.evaluate import EvalConfig, eval_set, evaluate
from trtqat.models.checkpoint import torch_load


def test_every_trained_fixture_is_a_family():
    assert accuracy.FAMILIES == trained.TRAINED_FAMILIES and "yolov8" in accuracy.FAMILIES


@pytest.fixture(scope="module")
def yolov8_and_eight_val_images(trained_checkpoint, shapes_val):
    ckpt, repo = trained_checkpoint("yolov8")
    files = sorted(shapes_val.val_images.glob("*.jpg"))[:8]
    evset = eval_set(shapes_val.val_images, EvalConfig(size=160, batch_size=8), ann=shapes_val.val_json, nc=8,
                     files=files, cache=True)
    return ckpt, repo, evset


def test_nudged_maps_of_the_yolov8_fixture_read_the_ultralytics_layout(yolov8_and_eight_val_images):
    """Read as YOLOv5's ``[B, N, 5+nc]``, the ``[B, 4+nc, N]`` output scores 0 (or fails); in its own layout a
    1e-5 nudge moves the mAP by far less than the mAP itself."""
    ckpt, repo, evset = yolov8_and_eight_val_images
    obj, _ = torch_load(ckpt, repo)
    plain = evaluate(obj["model"].float().eval(), evset, quantized=True).map
    nudged = accuracy.nudged_maps(ckpt, repo, evset)
    assert plain > 0.1 and len(nudged) == accuracy.NUDGES
    assert all(abs(m - plain) < 0.02 for m in nudged), (plain, nudged)
