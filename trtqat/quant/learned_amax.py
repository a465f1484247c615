"""Learned activation scales during QAT: the step-size gradient of LSQ (Esser et al., ICLR 2020).

Why: with every amax frozen at its calibrated value, QAT can only move the weights, and on the trained
YOLOv7 the whole PTQ loss sits in the activation quantizers (switching the 89 weight quantizers off changes
nothing; switching the activation quantizers off restores float mAP). Letting each per-tensor activation
amax follow the distillation loss moves the clipping point to where this network needs it; the result is
still one static scale per tensor, exactly what TensorRT consumes.

How, without touching pytorch-quantization's pickled state:

* each learned quantizer gets a parameter ``log(amax)`` kept *outside* the model (in this module's
  registry), so checkpoints, ``state_dict`` keys and ``--resume`` files look exactly as with frozen amax;
* while :func:`learned_amax` is open, ``TensorQuantizer._quant_forward`` is swapped for one that, for a
  registered quantizer with gradients enabled, fake-quantizes with :class:`LearnableFakeQuant` (the
  straight-through LSQ gradient for the step size, on the grid pytorch-quantization uses: step amax/127,
  [-128, 127], or [-127, 127] with ``narrow_range``); every other call (weights, scoring under
  ``no_grad``, copies being saved) runs the original code on the ``_amax`` buffer;
* :meth:`LearnedAmax.sync_buffers` writes ``exp(log_amax)`` into each ``_amax`` buffer after every optimizer
  step, so scoring, saving and export always see the current scale.

A quantizer shared by the scale-sharing rules is one object, so it gets one parameter and its members keep
one scale. The parameters train in their own optimizer group at ``lr * AMAX_LR_FACTOR``: in log space, so
Adam's step is a relative change of the scale (at the default peak lr 3e-5, at most about 0.3 % per step).
Under DDP the parameters are not module parameters, so their gradients are averaged by
:meth:`LearnedAmax.all_reduce_grads` before the step.
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
from pytorch_quantization.nn import TensorQuantizer

from .quantizers import is_weight_quantizer, named_quantizers, quant_bound

#: the amax group's learning rate relative to the weights' (the parameter is log(amax))
AMAX_LR_FACTOR = 100.0

#: quantizer -> its log(amax) parameter
_registry: "weakref.WeakKeyDictionary[TensorQuantizer, torch.nn.Parameter]" = weakref.WeakKeyDictionary()
_original_quant_forward = TensorQuantizer._quant_forward


class LearnableFakeQuant(torch.autograd.Function):
    """Per-tensor fake quantization with the LSQ gradient for the scale, zero point 0, gradient factor 1.

    Bit for bit what ``torch._fake_quantize_learnable_per_tensor_affine`` computes on the CPU (output,
    input gradient and scale gradient; ``tests/quant/test_learned_amax.py`` compares them, and a QAT run
    gives identical checkpoints with either), at a fraction of the cost: that op reads the scale back to the
    host (``scale.item()``, a device sync per quantizer per step on a GPU) and allocates a fresh tensor per
    intermediate, and a fresh large activation costs more in page faults than the arithmetic on it.

    Rounding of ``x / scale`` to the nearest even integer, as ``std::nearbyint``; an input whose rounded
    value falls outside [lo, hi] gets no gradient and gives the scale ``lo`` or ``hi``, one inside gives it
    ``(q * scale - x) / scale`` (with one fused multiply-add, as the compiled kernel computes it).

    Why it is written this way (CPU eager mode, where every element-wise op is one pass over the activation
    and, with two threads, one more parallel region): boolean tensors are slow there (``where`` and
    ``masked_fill`` take 2.5-3.7 ns of CPU per element, an in-place multiply 0.2-0.3 ns) and a pass into a
    fresh buffer costs more than one in place. So the inside/outside mask is ``rounded == q`` written as
    1.0/0.0 into the buffer that held ``rounded``, the two branches are merged by ``lerp`` (a weight of
    exactly 0 or 1 returns that operand exactly), and the mask's buffer becomes the input gradient: 11 ops
    and 3 fresh buffers per backward, 4 ops and 1 buffer per forward, where the first version took 16 ops, 4
    buffers (one of them boolean) and ``where``, and 2 buffers. Only ``x`` is saved, so learning the scales
    keeps the activation memory of frozen ones. Not taken: the scale gradient as ``q - inside * x / scale``
    (three ops fewer) subtracts two nearly equal numbers per element; on the YOLOv7 fixture it moved the
    gradient of layers whose terms nearly cancel by up to 6x its size. The residual ``x - q * scale`` in one
    fused multiply-add is what keeps it exact.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        ctx.bounds = (lo, hi)
        return torch.mul(x, scale.reciprocal()).round_().clamp_(lo, hi).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale = ctx.saved_tensors
        lo, hi = ctx.bounds
        inv = scale.reciprocal()
        inside = torch.mul(x, inv).round_()  # the rounded value, before the clamp
        q = inside.clamp(lo, hi)
        torch.eq(inside, q, out=inside)  # 1.0 where rounding stayed in range, 0.0 where it was clipped
        # inside: grad * (q * scale - x) / scale, with q * scale - x in one rounding, written as -(x - q * scale)
        # (addcmul's fused form; the sign moves to -inv, exactly); outside: grad * q
        inner = torch.addcmul(x, q, scale, value=-1).mul_(grad).mul_(-inv)
        per_element = q.mul_(grad).lerp_(inner, inside)
        grad_x = inside.mul_(grad) if ctx.needs_input_grad[0] else None  # not for the network input
        return grad_x, per_element.sum().reshape(scale.shape), None, None


def _learned_quant_forward(self: TensorQuantizer, inputs: torch.Tensor) -> torch.Tensor:
    log_amax = _registry.get(self)
    if log_amax is None or not torch.is_grad_enabled() or not self._fake_quant:
        return _original_quant_forward(self, inputs)
    # pytorch-quantization's grid: step amax / 127 on [-128, 127] ([-127, 127] narrow, [0, 255] unsigned)
    bound = quant_bound(self)
    lo = 0 if self._unsigned else -bound - (0 if self._narrow_range else 1)
    scale = torch.exp(log_amax) / bound
    return LearnableFakeQuant.apply(inputs.float(), scale, lo, bound).to(inputs.dtype)


def learnable_quantizers(model) -> list[tuple[str, TensorQuantizer]]:
    """The unique calibrated per-tensor activation quantizers (weights keep their per-channel max)."""
    return [(n, q) for n, q in named_quantizers(model)
            if not is_weight_quantizer(n) and getattr(q, "_amax", None) is not None and q._amax.numel() == 1]


class LearnedAmax:
    """The learned ``log(amax)`` parameters of one model, in the order of :func:`learnable_quantizers`."""

    def __init__(self, model, device: torch.device | str = "cpu"):
        self.quantizers = [q for _, q in learnable_quantizers(model)]
        self.params = [torch.nn.Parameter(torch.log(q._amax.detach().float().reshape(1).to(device)))
                       for q in self.quantizers]

    def param_group(self, lr: float) -> dict:
        return {"params": self.params, "lr": lr * AMAX_LR_FACTOR, "lr_factor": AMAX_LR_FACTOR}

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Write each learned scale into its quantizer's ``_amax`` buffer (what scoring and export read)."""
        for q, p in zip(self.quantizers, self.params):
            q._amax.copy_(torch.exp(p).reshape(q._amax.shape).to(q._amax.dtype))

    def all_reduce_grads(self, world_size: int) -> None:
        """Average the gradients over DDP ranks (these parameters are outside DDP's buckets)."""
        import torch.distributed as dist

        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad /= world_size


@contextlib.contextmanager
def learned_amax(model, device: torch.device | str = "cpu") -> Iterator[LearnedAmax]:
    """Train the activation scales of ``model`` while open; the buffers hold the final values on exit."""
    learned = LearnedAmax(model, device)
    for q, p in zip(learned.quantizers, learned.params):
        _registry[q] = p
    TensorQuantizer._quant_forward = _learned_quant_forward
    try:
        yield learned
    finally:
        learned.sync_buffers()
        for q in learned.quantizers:
            _registry.pop(q, None)
        if not _registry:
            TensorQuantizer._quant_forward = _original_quant_forward
