"""Benchmark 3: one QAT distillation step, trtqat vs the reference recipe, and the effect of each speed lever.

A step is: teacher forward (float, quantizers off) + student forward (fake-quant) + sum-of-MSE loss over
the supervised layers + backward + Adam. Variants, each with its own student copy and optimizer, timed
interleaved (``cfg.qat_steps`` steps per call, medians per step):

- ``reference``: :class:`benchmarks.reference_flow.ReferenceDistiller` (pytorch-quantization's multi-op
  fake quant, teacher under ``no_grad``, every supervised output hooked, ``MSELoss`` summed, Adam);
- ``trtqat``: trtqat's step as shipped: ``trtqat.quant.qat`` supervision and loss, channels-last
  (adopted from this benchmark), learned activation scales (``--learn-amax``, the default: the LSQ op
  :class:`trtqat.quant.learned_amax.LearnableFakeQuant` for every activation quantizer, one more Adam group);
- ``fixed_amax``: the same with the calibrated scales frozen (``--fixed-amax``, the reference recipe's choice);
- ``-channels_last``: the shipped step in the default NCHW layout;
- ``+inference_mode``: teacher under ``torch.inference_mode`` instead of ``no_grad``;
- ``+fused_fake_quant``: ``TensorQuantizer.use_fb_fake_quant = True`` (``torch.fake_quantize_per_*_affine``:
  one fused kernel with a built-in straight-through backward; note its int8 range is [-128, 127] where
  pytorch-quantization's own is the narrow [-127, 127], and it refuses fp16 inputs, i.e. AMP). With learned
  scales it reaches only the weight quantizers (the activations already run one fused learnable op);
- ``all``: the three levers together. AMP is CUDA-only (autocast on CPU is not what the reference runs)
  and is not measured on a CPU-only machine.

Breakdown (reference configuration and all-levers configuration): teacher forward, student forward
(with loss), backward + optimizer step; fake-quant share = 1 - (student fwd+bwd with quantizers off) /
(with quantizers on).

Repeats and spread: the variants are timed in ``max(cfg.repeats, MIN_ROUNDS)`` interleaved rounds (the
smoke run keeps ``cfg.repeats``). With the suite's default of 2 rounds, single rounds of reference / trtqat
on the shared 2-core machines scattered from 0.87 to 1.17 and whole runs of the same code from 0.90 to 1.01,
so a median of two said little; ``qat_step_speedup_rounds`` (reference / trtqat within each round, the
sides timed back to back) is reported beside the median so that it can be read against that scatter.
"""
from __future__ import annotations

import contextlib
import copy
import time

import torch
from pytorch_quantization.nn import TensorQuantizer

from trtqat.models import set_memory_format

from .common import Config, Workspace, interleaved, log, median, ratio
from .reference_flow import ReferenceDistiller, reference_teacher

#: interleaved rounds of the step table at least (the headline is a ratio of medians over these)
MIN_ROUNDS = 6

# "trtqat" is the step as shipped (channels-last, adopted after this benchmark showed it helps on CPU, and the
# learned activation scales of --learn-amax); the learned path patches TensorQuantizer._quant_forward for the
# whole run, which costs the other variants one dictionary lookup per quantizer call
LEVERS = {"trtqat": ("cl", "learned"), "fixed_amax": ("cl",), "-channels_last": ("learned",),
          "+inference_mode": ("cl", "learned", "inference"), "+fused_fake_quant": ("cl", "learned", "fb"),
          "all": ("inference", "fb", "cl", "learned")}


@contextlib.contextmanager
def fused_fake_quant(on: bool):
    previous = TensorQuantizer.use_fb_fake_quant
    TensorQuantizer.use_fb_fake_quant = on
    try:
        yield
    finally:
        TensorQuantizer.use_fb_fake_quant = previous


def calibrated_model(ws: Workspace, cfg: Config, family: str = "yolov7"):
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint
    from trtqat.quant.calibrate import calibrate
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = ws.checkpoint(family)
    images = ws.images(cfg.throughput_images)
    model, _, _, _ = prepare_quantized(load_checkpoint(ckpt, repo), QuantConfig())
    calibrate(model, image_stream(images, cfg.qat_size, cfg.qat_batch, max_batches=2))
    x = torch.from_numpy(next(iter(image_stream(images, cfg.qat_size, cfg.qat_batch))))
    return model, x


class TrtqatStudent:
    """A student copy trained the trtqat way, optionally with levers."""

    def __init__(self, model, teacher, levers: tuple, stack: contextlib.ExitStack):
        from trtqat.quant.learned_amax import learned_amax
        from trtqat.quant.modes import qat_mode
        from trtqat.quant.qat import prepare_distillation

        self.levers = levers
        self.student = copy.deepcopy(model)
        self.teacher = teacher
        self.distil = prepare_distillation(self.student, teacher)
        self.params = self.distil.params
        if "cl" in levers:
            set_memory_format(self.student, torch.channels_last)
        stack.enter_context(qat_mode(self.student))
        self.learned = stack.enter_context(learned_amax(self.student)) if "learned" in levers else None
        groups = [{"params": self.params}] + ([self.learned.param_group(1e-5)] if self.learned else [])
        self.optimizer = torch.optim.Adam(groups, lr=1e-5)
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)

    def step(self, x: torch.Tensor, phases: dict | None = None) -> float:
        from trtqat.quant.qat import _step, capture_outputs, distillation_loss

        if "cl" in self.levers:
            x = x.contiguous(memory_format=torch.channels_last)
        with fused_fake_quant("fb" in self.levers):
            if set(self.levers) <= {"learned"} and phases is None:
                return _step(self.student, self.teacher, self.distil, x, self.optimizer, self.scaler, False, None,
                             self.learned)
            t0 = time.perf_counter()
            grad_off = torch.inference_mode() if "inference" in self.levers else torch.no_grad()
            with grad_off, capture_outputs(self.distil.teacher) as t_out:
                self.teacher(x)
            if "inference" in self.levers:  # inference tensors cannot be saved for backward: copy out
                t_out = [o.clone() if isinstance(o, torch.Tensor) else o for o in t_out]
            t1 = time.perf_counter()
            with capture_outputs(self.distil.student) as s_out:
                self.student(x)
            loss = distillation_loss(s_out, t_out)
            t2 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.learned is not None:
                self.learned.sync_buffers()
            t3 = time.perf_counter()
        if phases is not None:
            for k, v in (("teacher_forward", t1 - t0), ("student_forward", t2 - t1), ("backward_step", t3 - t2)):
                phases.setdefault(k, []).append(v)
        return float(loss.detach())


def fake_quant_share(model, x: torch.Tensor, fb: bool, repeats: int) -> float:
    """1 - (student fwd+bwd, quantizers off) / (quantizers on)."""
    from trtqat.quant.modes import qat_mode, quant_disabled

    student = copy.deepcopy(model)

    def fwd_bwd():
        out = student(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        out.float().mean().backward()

    with fused_fake_quant(fb), qat_mode(student):
        def off():
            with quant_disabled(student):
                fwd_bwd()
        fwd_bwd()
        times = interleaved({"on": fwd_bwd, "off": off}, repeats)
    return 1.0 - median(times["off"]) / median(times["on"])


def run(ws: Workspace, cfg: Config) -> dict:
    from trtqat.quant.modes import quant_disabled

    model, x = calibrated_model(ws, cfg)
    steps = cfg.qat_steps
    with contextlib.ExitStack() as stack:
        teacher = copy.deepcopy(model)
        stack.enter_context(quant_disabled(teacher))
        teacher_cl = set_memory_format(copy.deepcopy(model), torch.channels_last)
        stack.enter_context(quant_disabled(teacher_cl))
        ref = ReferenceDistiller(copy.deepcopy(model), reference_teacher(model))
        stack.callback(ref.close)
        students = {name: TrtqatStudent(model, teacher_cl if "cl" in lv else teacher, lv, stack)
                    for name, lv in LEVERS.items()}
        fns = {"reference": lambda: [ref.step(x) for _ in range(steps)]}
        for name, st in students.items():
            fns[name] = (lambda s: lambda: [s.step(x) for _ in range(steps)])(st)
        for fn in fns.values():  # warm-up: Adam state, allocator, lazy kernels
            fn()
        times = interleaved(fns, cfg.repeats if cfg.smoke else max(cfg.repeats, MIN_ROUNDS))
        per_step = {k: median(v) / steps for k, v in times.items()}
        phases_ref: dict = {}
        phases_all: dict = {}
        plain = TrtqatStudent(model, teacher_cl, LEVERS["trtqat"], stack)
        for _ in range(max(2, steps)):
            plain.step(x, phases_ref)
            students["all"].step(x, phases_all)
    breakdown = {"reference_config": {k: median(v) for k, v in phases_ref.items()},
                 "all_levers": {k: median(v) for k, v in phases_all.items()},
                 "fake_quant_share": {"multi_op": fake_quant_share(model, x, False, cfg.repeats),
                                      "fused": fake_quant_share(model, x, True, cfg.repeats)}}
    effect = {k: ratio(per_step["trtqat"], v) for k, v in per_step.items() if k != "reference"}
    out = {"family": "yolov7", "size": cfg.qat_size, "batch": cfg.qat_batch, "steps_per_call": steps,
           "seconds_per_step": per_step, "times": times, "speedup_over_trtqat_as_shipped": effect,
           "speedup_over_reference": {k: ratio(per_step["reference"], v) for k, v in per_step.items()},
           "breakdown": breakdown, "amp": "CUDA only: see cuda.json (make bench-cuda)",
           "qat_step_speedup": ratio(per_step["reference"], per_step["trtqat"]),
           "qat_step_speedup_rounds": [ratio(r, t) for r, t in zip(times["reference"], times["trtqat"])]}
    log("qat step: " + ", ".join(f"{k} {v:.3f}s" for k, v in per_step.items()))
    return out
