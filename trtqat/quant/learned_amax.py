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
  registered quantizer with gradients enabled, fake-quantizes with
  ``torch._fake_quantize_learnable_per_tensor_affine`` (the straight-through LSQ gradient for the step
  size, on the grid pytorch-quantization uses: step amax/127, [-128, 127], or [-127, 127] with
  ``narrow_range``); every other call (weights, scoring
  under ``no_grad``, copies being saved) runs the original code on the ``_amax`` buffer;
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

#: quantizer -> (its log(amax) parameter, the zero point the learnable op wants, on the same device)
_registry: "weakref.WeakKeyDictionary[TensorQuantizer, tuple]" = weakref.WeakKeyDictionary()
_original_quant_forward = TensorQuantizer._quant_forward


def _learned_quant_forward(self: TensorQuantizer, inputs: torch.Tensor) -> torch.Tensor:
    entry = _registry.get(self)
    if entry is None or not torch.is_grad_enabled() or not self._fake_quant:
        return _original_quant_forward(self, inputs)
    log_amax, zero = entry
    # pytorch-quantization's grid: step amax / 127 on [-128, 127] ([-127, 127] narrow, [0, 255] unsigned)
    bound = quant_bound(self)
    lo = 0 if self._unsigned else -bound - (0 if self._narrow_range else 1)
    scale = torch.exp(log_amax) / bound
    out = torch._fake_quantize_learnable_per_tensor_affine(inputs.float(), scale, zero, lo, bound, 1.0)
    return out.to(inputs.dtype)


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
    zero = torch.zeros(1, device=device)
    for q, p in zip(learned.quantizers, learned.params):
        _registry[q] = (p, zero)
    TensorQuantizer._quant_forward = _learned_quant_forward
    try:
        yield learned
    finally:
        learned.sync_buffers()
        for q in learned.quantizers:
            _registry.pop(q, None)
        if not _registry:
            TensorQuantizer._quant_forward = _original_quant_forward
