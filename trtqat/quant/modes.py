"""Explicit, restorable quantizer states, as QAT users know them.

- ``calibration_mode``: activation quantizers collect statistics only (no fake-quant); weight quantizers
  are bypassed (weight amax is computed from the weights directly).
- ``qat_mode``: statistics frozen, fake-quant on everywhere, gradients flow (straight-through).
- ``validation_mode``: fake-quant on, no statistics, no gradients, eval mode.
- ``quant_disabled``: every quantizer bypassed — the float model (teacher, ``--eval-origin``).
- ``onnx_export_mode``: fake-quant through ``torch.fake_quantize_*`` so the exporter emits
  QuantizeLinear/DequantizeLinear; restores the class-level switch afterwards.

Each manager snapshots every quantizer's flags (and the model's training flag) and restores them in a
``finally`` block: an exception in the middle never leaves a model half in one state.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from pytorch_quantization.nn import TensorQuantizer

from .quantizers import is_weight_quantizer, named_quantizers

_FLAGS = ("_disabled", "_if_quant", "_if_calib")


def _snapshot(model) -> tuple[list[tuple[TensorQuantizer, tuple]], bool]:
    return [(q, tuple(getattr(q, f) for f in _FLAGS)) for _, q in named_quantizers(model)], model.training


def _restore(snap) -> None:
    states, _ = snap
    for q, values in states:
        for f, v in zip(_FLAGS, values):
            setattr(q, f, v)


@contextlib.contextmanager
def _mode(model, setup, train: bool | None = None) -> Iterator[torch.nn.Module]:
    snap = _snapshot(model)
    try:
        for name, q in named_quantizers(model):
            setup(name, q)
        if train is not None:
            model.train(train)
        yield model
    finally:
        _restore(snap)
        model.train(snap[1])


def _calib(name: str, q: TensorQuantizer) -> None:
    if q._calibrator is not None and not is_weight_quantizer(name):
        q._disabled, q._if_quant, q._if_calib = False, False, True
    else:
        q._disabled = True


def _fake_quant(name: str, q: TensorQuantizer) -> None:
    q._disabled, q._if_quant, q._if_calib = False, True, False


def _off(name: str, q: TensorQuantizer) -> None:
    q._disabled = True


def calibration_mode(model):
    """Collect activation statistics only (eval mode)."""
    return _mode(model, _calib, train=False)


def qat_mode(model):
    """Fake-quant on, statistics frozen; the caller runs forward/backward. Keeps eval-mode layers
    (the model is fused: no BatchNorm statistics to update)."""
    return _mode(model, _fake_quant, train=False)


@contextlib.contextmanager
def validation_mode(model):
    """Fake-quant inference (eval mode, no gradients)."""
    with _mode(model, _fake_quant, train=False), torch.no_grad():
        yield model


def quant_disabled(model):
    """The float model: every quantizer bypassed."""
    return _mode(model, _off)


@contextlib.contextmanager
def onnx_export_mode(model) -> Iterator[torch.nn.Module]:
    """Fake-quant through native torch ops so ``torch.onnx.export`` emits Q/DQ nodes."""
    previous = TensorQuantizer.use_fb_fake_quant
    TensorQuantizer.use_fb_fake_quant = True
    try:
        with _mode(model, _fake_quant, train=False):
            yield model
    finally:
        TensorQuantizer.use_fb_fake_quant = previous
