"""Learned activation scales (LSQ step-size gradient) behind pytorch-quantization's TensorQuantizer."""

import pickle

import pytest
import torch
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.nn import TensorQuantizer
from pytorch_quantization.tensor_quant import QuantDescriptor

from trtqat.quant.learned_amax import AMAX_LR_FACTOR, learnable_quantizers, learned_amax


def _quantizer(amax: float) -> TensorQuantizer:
    q = TensorQuantizer(QuantDescriptor(num_bits=8, calib_method="histogram"))
    q.amax = amax
    return q


def _gauss(n=20000, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def test_forward_matches_the_calibrated_quantizer_and_the_gradient_reaches_the_scale():
    q = _quantizer(2.0)
    model = torch.nn.Sequential(q)
    x = _gauss()
    frozen = q(x)
    with learned_amax(model) as learned:
        y = q(x)
        torch.testing.assert_close(y, frozen, rtol=0, atol=1e-6)  # same grid, same rounding
        ((y - x) ** 2).sum().backward()
        (p,) = learned.params
        assert p.grad is not None and p.grad.abs().item() > 0
        with torch.no_grad():  # scoring path: the buffer, through pytorch-quantization's own code
            torch.testing.assert_close(q(x), frozen, rtol=0, atol=0)


@pytest.mark.parametrize("start,direction", [(8.0, -1), (0.5, +1)])
def test_learning_moves_a_bad_scale_toward_lower_error(start, direction):
    """amax 8 on N(0, 1) wastes levels (rounding error), amax 0.5 clips: the learned scale must move the
    right way and lower the quantization error, with the default log-space learning-rate factor."""
    q = _quantizer(start)
    model = torch.nn.Sequential(q)
    x = _gauss()
    before = ((q(x) - x) ** 2).mean().item()
    with learned_amax(model) as learned:
        opt = torch.optim.Adam([learned.param_group(1e-4)])
        for _ in range(200):
            opt.zero_grad()
            ((q(x) - x) ** 2).mean().backward()
            opt.step()
            learned.sync_buffers()
    after = ((q(x) - x) ** 2).mean().item()
    moved = float(q.amax) - start
    assert moved * direction > 0, (start, float(q.amax))
    assert after < before, (before, after)


def test_exit_restores_pytorch_quantization_and_leaves_nothing_in_the_model():
    original = TensorQuantizer._quant_forward
    conv = quant_nn.QuantConv2d(3, 4, 3)
    conv.input_quantizer.amax = 1.5
    conv.weight_quantizer.amax = torch.full((4, 1, 1, 1), 0.3)
    keys = set(conv.state_dict())
    with learned_amax(conv) as learned:
        assert TensorQuantizer._quant_forward is not original
        assert [q for _, q in learnable_quantizers(conv)] == [conv.input_quantizer]  # per-channel weights stay
        with torch.no_grad():
            learned.params[0].fill_(torch.log(torch.tensor(2.0)).item())
    assert TensorQuantizer._quant_forward is original
    assert set(conv.state_dict()) == keys
    assert float(conv.input_quantizer.amax) == pytest.approx(2.0)  # the learned value is in the buffer
    pickle.dumps(conv)  # checkpoints pickle the model: nothing unpicklable was attached


def test_restored_even_when_training_fails():
    original = TensorQuantizer._quant_forward
    with pytest.raises(RuntimeError, match="boom"), learned_amax(torch.nn.Sequential(_quantizer(1.0))):
        raise RuntimeError("boom")
    assert TensorQuantizer._quant_forward is original


def test_a_shared_quantizer_learns_one_scale():
    q = _quantizer(1.0)
    model = torch.nn.ModuleDict({"a": torch.nn.Sequential(q), "b": torch.nn.Sequential(q)})
    with learned_amax(model) as learned:
        assert len(learned.params) == 1
        group = learned.param_group(1e-5)
        assert group["lr"] == pytest.approx(1e-5 * AMAX_LR_FACTOR) and group["lr_factor"] == AMAX_LR_FACTOR


def test_copies_of_the_model_quantize_with_their_buffers():
    """A deep copy (what QAT saves each epoch) is not registered: it runs pytorch-quantization's code."""
    import copy

    q = _quantizer(1.0)
    model = torch.nn.Sequential(q)
    x = _gauss(1000)
    with learned_amax(model) as learned:
        twin = copy.deepcopy(model)
        with torch.no_grad():
            learned.params[0].fill_(torch.log(torch.tensor(4.0)).item())
        torch.testing.assert_close(twin(x), _quantizer(1.0)(x), rtol=0, atol=0)
