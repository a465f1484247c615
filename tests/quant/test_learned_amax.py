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


def _torchs_lsq(x, scale, lo, hi):
    """torch's own learnable fake quant, zero point 0, gradient factor 1: what LearnableFakeQuant reproduces."""
    return torch._fake_quantize_learnable_per_tensor_affine(x, scale, torch.zeros(1), lo, hi, 1.0)


@pytest.mark.parametrize("lo,hi", [(-128, 127), (-127, 127), (0, 255)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_lsq_op_is_torchs_learnable_fake_quant_bit_for_bit(lo, hi, channels_last):
    """Output and input gradient identical to ``torch._fake_quantize_learnable_per_tensor_affine``, the scale
    gradient too on this CPU (allowed 1e-6 relative elsewhere: it is a float32 sum of ~10^5 terms), on
    values that land exactly on the grid, half-way between two levels, inside and far outside the range."""
    from trtqat.quant.learned_amax import LearnableFakeQuant

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 40, 40, generator=gen) * 2
    x.view(-1)[:2001] = torch.arange(-1000, 1001) * 0.005  # grid points and exact halves of the step 0.01
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    grad = torch.randn(x.shape, generator=gen).contiguous(memory_format=layout)
    results = []
    for op in (_torchs_lsq, LearnableFakeQuant.apply):
        a = x.clone().requires_grad_(True)
        s = torch.tensor([0.01], requires_grad=True)
        y = op(a, s, lo, hi)
        y.backward(grad)
        results.append((y.detach(), a.grad, s.grad))
    (y0, dx0, ds0), (y1, dx1, ds1) = results
    assert torch.equal(y0, y1) and torch.equal(dx0, dx1)
    assert (dx1 == 0).any() and (dx1 != 0).any()  # both sides of the range were exercised
    torch.testing.assert_close(ds1, ds0, rtol=1e-6, atol=0)
    assert y1.is_contiguous(memory_format=torch.channels_last) == channels_last  # the layout is kept


def test_training_with_it_matches_training_with_torchs_op(monkeypatch):
    """A few Adam steps on a quantized conv stack: weights and learned scales identical with either op."""
    import copy

    import trtqat.quant.learned_amax as la

    torch.manual_seed(0)
    net = torch.nn.Sequential(quant_nn.QuantConv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                              quant_nn.QuantConv2d(8, 4, 3, padding=1))
    for conv, amax in ((net[0], 2.5), (net[2], 0.4)):
        conv.input_quantizer.amax = amax
        conv.weight_quantizer.amax = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    x = torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    target = torch.randn(4, 4, 24, 24, generator=torch.Generator().manual_seed(2))

    def train(model):
        with learned_amax(model) as learned:
            opt = torch.optim.Adam([{"params": list(model.parameters())}, learned.param_group(1e-3)], lr=1e-3)
            for _ in range(5):
                opt.zero_grad()
                ((model(x) - target) ** 2).mean().backward()
                opt.step()
                learned.sync_buffers()
        return model.state_dict()

    ours = train(copy.deepcopy(net))
    monkeypatch.setattr(la.LearnableFakeQuant, "apply", staticmethod(_torchs_lsq))
    theirs = train(copy.deepcopy(net))
    assert float(ours["0._input_quantizer._amax"]) != 2.5  # the scales did train
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=0, msg=key)


def _lsq_spelled_out(x, scale, lo, hi):
    """The LSQ op as the textbook writes it (boolean mask, ``where``): the maths ``LearnableFakeQuant`` must
    keep while it is made faster. Output round(x/s) clamped, times s; input gradient where the rounded value is
    in range; scale gradient ``(q*s - x)/s`` inside (one fused multiply-add) and ``q`` outside."""

    class SpelledOut(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.save_for_backward(x, scale)
            return torch.round(x * scale.reciprocal()).clamp(lo, hi) * scale

        @staticmethod
        def backward(ctx, grad):
            x, scale = ctx.saved_tensors
            inv = scale.reciprocal()
            rounded = torch.round(x * inv)
            q = rounded.clamp(lo, hi)
            inside = rounded == q
            inner = torch.addcmul(x, q, scale, value=-1) * grad * -inv
            per_element = torch.where(inside, inner, q * grad)
            return torch.where(inside, grad, torch.zeros_like(grad)), per_element.sum().reshape(scale.shape)

    return SpelledOut.apply(x, scale)


@pytest.mark.parametrize("lo,hi", [(-128, 127), (-127, 127), (0, 255)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_fast_op_keeps_the_spelled_out_maths_on_a_conv_layer(lo, hi, channels_last):
    """One quantized conv (activation fake-quant -> conv), forward and backward with the fast op and with the
    spelled-out one: output, input gradient and weight gradient bit for bit, the scale gradient to float
    tolerance (it is bit-equal on this CPU: same per-element values, same summation). The input holds exact
    grid points, exact ties (rounded half to even, at the range ends too) and values far outside."""
    from trtqat.quant.learned_amax import LearnableFakeQuant

    gen = torch.Generator().manual_seed(3)
    step = 0.01
    x = torch.randn(2, 6, 20, 20, generator=gen) * 1.5
    ties = torch.tensor([lo - 0.5, lo - 1.5, hi + 0.5, hi - 0.5, hi + 1.5, 0.5, -0.5, 2.5, lo, hi]) * step
    x.view(-1)[: ties.numel()] = ties
    x.view(-1)[ties.numel(): ties.numel() + 401] = torch.arange(-200, 201) * (step / 2)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    weight = torch.randn(5, 6, 3, 3, generator=gen) * 0.2
    target = torch.randn(2, 5, 18, 18, generator=gen)
    results = []
    for op in (LearnableFakeQuant.apply, lambda a, s, lo_, hi_: _lsq_spelled_out(a, s, lo_, hi_)):
        a = x.clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        log_amax = torch.tensor([float(torch.log(torch.tensor(step * hi)))], requires_grad=True)
        scale = torch.exp(log_amax) / hi
        out = torch.nn.functional.conv2d(op(a, scale, lo, hi), w)
        ((out - target) ** 2).mean().backward()
        results.append((out.detach(), a.grad, w.grad, log_amax.grad))
    (o0, dx0, dw0, dl0), (o1, dx1, dw1, dl1) = results
    assert torch.equal(o0, o1) and torch.equal(dx0, dx1) and torch.equal(dw0, dw1)
    assert (dx0 == 0).any() and (dx0 != 0).any()  # both sides of the range were exercised
    torch.testing.assert_close(dl0, dl1, rtol=1e-6, atol=0)
    assert dl0.abs().item() > 0


def test_the_fast_op_without_an_input_gradient():
    """The network input needs no gradient: only the scale gets one, the same as with the gradient on."""
    from trtqat.quant.learned_amax import LearnableFakeQuant

    x = _gauss(5000).reshape(5, 10, 100) * 3
    grads = []
    for needs in (False, True):
        s = torch.tensor([0.02], requires_grad=True)
        a = x.clone().requires_grad_(needs)
        (LearnableFakeQuant.apply(a, s, -128, 127) * torch.linspace(-1, 1, 100)).sum().backward()
        assert (a.grad is not None) == needs
        grads.append(s.grad)
    assert torch.equal(grads[0], grads[1])


def test_every_learned_scale_moves_under_the_qat_step():
    """The shipped QAT step (``trtqat.quant.qat._step``) with learned scales, on two quantized convs distilled
    from their float twin: after a few steps every activation scale has moved away from its calibrated value,
    the buffers carry the parameters' values, and the distillation loss went down."""
    import copy

    from trtqat.quant.modes import qat_mode, quant_disabled
    from trtqat.quant.qat import Distillation, _step

    torch.manual_seed(0)
    student = torch.nn.Sequential(quant_nn.QuantConv2d(3, 8, 3, padding=1), torch.nn.SiLU(),
                                  quant_nn.QuantConv2d(8, 8, 3, padding=1), torch.nn.SiLU())
    for conv, amax in ((student[0], 1.0), (student[2], 0.3)):  # deliberately off the data's range
        conv.input_quantizer.amax = amax
        conv.weight_quantizer.amax = conv.weight.detach().abs().amax(dim=(1, 2, 3), keepdim=True)
    teacher = copy.deepcopy(student)
    distil = Distillation(student=[student[1], student[3]], teacher=[teacher[1], teacher[3]],
                          params=list(student.parameters()))
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2
    before = [float(q.amax) for q in (student[0].input_quantizer, student[2].input_quantizer)]
    with qat_mode(student), quant_disabled(teacher), learned_amax(student) as learned:
        opt = torch.optim.Adam([{"params": distil.params}, learned.param_group(1e-3)], lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        losses = [_step(student, teacher, distil, x, opt, scaler, False, None, learned) for _ in range(8)]
        params = [float(torch.exp(p.detach())) for p in learned.params]
        after = [float(q.amax) for q in (student[0].input_quantizer, student[2].input_quantizer)]
    assert all(abs(a - b) > 1e-4 * b for a, b in zip(after, before)), (before, after)
    assert after == pytest.approx(params, rel=1e-6)
    assert losses[-1] < losses[0], losses
