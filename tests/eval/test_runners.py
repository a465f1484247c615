"""The runners behind ``trtqat eval``: one output for every format of the same model."""
import json

import numpy as np
import pytest
import torch
from eval_sizes import SIZE

from trtqat.errors import InputError
from trtqat.eval.raw_head import decode_raw
from trtqat.eval.runners import open_runner, runner_format
from trtqat.eval.runners.base import Runner
from trtqat.eval.runners.onnx_runner import classify_outputs
from trtqat.models.detect_head import RawHead, raw_head_from_metadata


def batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, SIZE, SIZE, generator=g)


def run(path, x, **kw):
    runner = open_runner(path, **kw)
    runner.probe()
    with runner.activated(SIZE):
        return runner, runner(x)


def test_decode_raw_closed_form():
    head = RawHead(anchors=(((10.0, 20.0),), ((40.0, 30.0),)), strides=(8.0, 16.0))
    raw = [torch.zeros(1, 1, 2, 2, 7), torch.zeros(1, 1, 4, 4, 7)]  # given out of stride order
    out = decode_raw(raw, head, (32, 32))
    assert out.shape == (1, 16 + 4, 7)
    # sigmoid(0) = 0.5: xy = (cell + 0.5) * stride, wh = anchor, scores 0.5
    assert out[0, 0].tolist() == [4.0, 4.0, 10.0, 20.0, 0.5, 0.5, 0.5]
    assert out[0, 5].tolist()[:2] == [12.0, 12.0]  # stride 8, row 1, column 1
    assert out[0, 16].tolist()[:4] == [8.0, 8.0, 40.0, 30.0]  # first cell of the stride-16 level
    assert out[0, 19].tolist()[:2] == [24.0, 24.0]


def test_raw_head_metadata_errors():
    with pytest.raises(InputError, match="no 'anchors'/'strides'"):
        raw_head_from_metadata({}, "m.onnx")
    with pytest.raises(InputError, match="2 anchor levels but 3 strides"):
        raw_head_from_metadata({"anchors": json.dumps([[[1, 2]], [[3, 4]]]), "strides": "[8, 16, 32]"}, "m.onnx")
    with pytest.raises(InputError, match="unreadable"):
        raw_head_from_metadata({"anchors": "[[1", "strides": "[8]"}, "m.onnx")
    head = RawHead(anchors=(((10.0, 13.0), (16.0, 30.0)),), strides=(8.0,))
    assert raw_head_from_metadata(head.to_metadata(), "m.onnx") == head


def test_classify_outputs():
    assert classify_outputs([[1, 100, 13]], "m") == ("decoded", 8)
    assert classify_outputs([["batch", 3, 20, 20, 85], ["batch", 3, 10, 10, 85]], "m") == ("raw", 80)
    with pytest.raises(InputError, match="not a YOLO head"):
        classify_outputs([[1, 1000]], "m")
    with pytest.raises(InputError, match="not a YOLO head"):
        classify_outputs([[1, 100, 13], [1, 100, 13]], "m")


class Recorder(Runner):
    """A runner that returns its input's per-image means and records the batch sizes it was given."""

    format = "fake"

    def __init__(self, fixed=None, maximum=None):
        super().__init__("fake")
        self.fixed_batch, self.max_batch, self.calls = fixed, maximum, []

    def probe(self):
        pass

    def activate(self, size):
        pass

    def deactivate(self):
        pass

    def infer(self, x):
        self.calls.append(x.shape[0])
        return x.mean((1, 2, 3)).view(-1, 1, 1)


@pytest.mark.parametrize("fixed,maximum,calls", [(None, None, [5]), (1, None, [1] * 5), (2, None, [2, 2, 2]),
                                                 (None, 4, [4, 1]), (None, 8, [5])])
def test_batches_are_split_to_fit_and_padding_is_dropped(fixed, maximum, calls):
    x = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    runner = Recorder(fixed, maximum)
    out = runner(x)
    assert runner.calls == calls
    assert out.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_raw_head_onnx_decodes_like_the_decoded_export(eval_models):
    x = batch()
    raw_runner, raw = run(eval_models.onnx_raw, x)
    dec_runner, dec = run(eval_models.onnx_dynamic, x)
    assert raw_runner.head == "raw" and dec_runner.head == "decoded" and raw_runner.nc == dec_runner.nc == 80
    assert raw.shape == dec.shape == (3, 3 * (20 * 20 + 10 * 10 + 5 * 5), 85)
    np.testing.assert_allclose(raw.numpy(), dec.numpy(), rtol=2e-4, atol=2e-5)


def test_static_batch_one_onnx_runs_per_image(eval_models):
    x = batch(3)
    static, out = run(eval_models.onnx_static1, x)
    _, dynamic = run(eval_models.onnx_dynamic, x)
    assert static.fixed_batch == 1 and static.fixed_size == SIZE
    # two exports of one chaotic random-weight model: float rounding differs by up to ~0.1 %
    np.testing.assert_allclose(out.numpy(), dynamic.numpy(), rtol=2e-3, atol=1e-3)


def test_checkpoint_runner_matches_its_float_onnx(eval_models):
    x = batch(2)
    ckpt, out = run(eval_models.ckpt, x, repo=eval_models.repo)
    _, onnx_out = run(eval_models.onnx_dynamic, x)
    assert ckpt.kind == "float" and ckpt.nc == 80 and ckpt.describe()["family"] == "yolov5"
    np.testing.assert_allclose(out.numpy(), onnx_out.numpy(), rtol=1e-3, atol=1e-3)


def test_runner_format_by_suffix_then_content(tmp_path, eval_models):
    assert runner_format(tmp_path / "a.PT") == "checkpoint"
    assert runner_format(tmp_path / "a.plan") == runner_format(tmp_path / "a.engine") == "tensorrt"
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(eval_models.onnx_dynamic.read_bytes())
    assert runner_format(renamed) == "onnx"
    renamed.write_bytes(eval_models.ckpt.read_bytes())
    assert runner_format(renamed) == "checkpoint"
    renamed.write_text("not a model")
    with pytest.raises(InputError, match="unknown model format"):
        runner_format(renamed)
