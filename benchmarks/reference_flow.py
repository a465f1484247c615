"""The reference tool's way of doing each PTQ/QAT step, re-implemented here to benchmark trtqat against it.

The reference is NVIDIA-AI-IOT/yolo_deepstream ``yolov7_qat`` on pytorch-quantization 2.1.3 (described in
``shared/reference/reference-qat-tools.md`` §3 and §5). Nothing here is copied from GPL YOLO code; the only
mirrored code is pytorch-quantization's own (Apache-2.0) ``_compute_amax_mse`` loop, which calls ``.cuda()``
and therefore cannot run on a CPU machine as shipped: :func:`reference_mse_amax` is that loop, line for line,
without the ``.cuda()`` calls. Entropy and percentile are pytorch-quantization's functions, called as they are.

What "the reference way" means per step, and what is deliberately kept identical to trtqat so that the two
flows produce the *same amax values* and the timing isolates the implementation:

- same quantization plan: the modules trtqat quantizes (its ``replace_modules``, ignore policy from the
  family's rules file) and the same scale-sharing groups (``apply_rules``). The reference tool quantizes
  fewer layers (no MaxPool) and finds fewer groups; comparing different plans would compare amax of
  different tensors. The rules step costs what the reference's costs: one temporary ONNX export of the
  model at the calibration size (the reference exports at 1x3x640x640) plus a graph walk;
- calibrators: pytorch-quantization's ``HistogramCalibrator`` with ``_torch_hist=True`` (what the reference's
  replacement switches on), 2048 bins, on every activation quantizer; the per-channel ``MaxCalibrator`` of the
  weight quantizers stays in calibration mode and collects the weights on every batch, as in the reference;
- calibration loop (§3 ``calibrate_model``): eval mode, every quantizer with a calibrator switched to
  calibrate-only, the others disabled, forward under ``no_grad``, quantization switched back on, then
  ``load_calib_amax()`` for MaxCalibrators and ``load_calib_amax(method="mse")`` for the histograms;
- save: ``torch.save({"model": model})`` of the whole module, histograms included (the reference never
  resets its calibrators before pickling).

QAT (§5 ``finetune``): the teacher is a ``deepcopy`` of the calibrated model with every quantizer disabled;
forward hooks on the supervised top-level layers (``range(0, n - 1, stride)`` plus ``n - 2``) collect student
and teacher outputs; the loss is the sum of ``MSELoss`` over layers; Adam over all parameters; autocast and
GradScaler (enabled on CUDA only); pytorch-quantization's default multi-op fake quant
(``use_fb_fake_quant=False``); teacher under ``no_grad``.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from pytorch_quantization import nn as quant_nn
from pytorch_quantization.calib import HistogramCalibrator, MaxCalibrator
from pytorch_quantization.calib import histogram as pq_hist
from pytorch_quantization.tensor_quant import fake_tensor_quant

# ---------------------------------------------------------------- amax search (pytorch-quantization 2.1.3)

def reference_mse_amax(calib_hist, calib_bin_edges, num_bits, unsigned, stride=1, start_bin=128):
    """pytorch-quantization 2.1.3 ``calib/histogram.py:_compute_amax_mse`` with ``.cuda()`` removed.

    Copyright (c) 1993-2023 NVIDIA CORPORATION & AFFILIATES, Apache License 2.0 (loop logic mirrored).
    """
    if calib_bin_edges is None and calib_hist is None:
        return None

    counts = torch.from_numpy(calib_hist[:]).float()
    edges = torch.from_numpy(calib_bin_edges[:]).float()
    centers = (edges[1:] + edges[:-1]) / 2

    mses = []
    arguments = []

    for i in range(start_bin, len(centers), stride):
        amax = centers[i]
        quant_centers = fake_tensor_quant(centers, amax, num_bits, unsigned)
        mse = ((quant_centers - centers) ** 2 * counts).mean()
        mses.append(mse.cpu())
        arguments.append(i)

    argmin = np.argmin(mses)
    calib_amax = centers[arguments[argmin]]
    return calib_amax


def reference_amax(method: str, counts: np.ndarray, edges: np.ndarray, num_bits: int = 8, unsigned: bool = False,
                   percentile: float = 99.99):
    """pytorch-quantization's amax for one histogram (``HistogramCalibrator.compute_amax`` dispatch).

    The entropy function writes ``bins[0] = bins[1]`` into the array it is given (a view): it gets a copy.
    """
    if method == "mse":
        return reference_mse_amax(counts, edges, num_bits, unsigned)
    if method == "entropy":
        return pq_hist._compute_amax_entropy(counts.copy(), edges, num_bits, unsigned, 1, 128)
    if method == "percentile":
        return pq_hist._compute_amax_percentile(counts, edges, percentile)
    raise ValueError(method)


def calibrator_histogram(cal: HistogramCalibrator) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) exactly as ``HistogramCalibrator.compute_amax`` converts them."""
    return cal._calib_hist.int().cpu().numpy(), cal._calib_bin_edges.cpu().numpy()


# ---------------------------------------------------------------- calibration (§3)

def use_reference_calibrators(model: torch.nn.Module) -> int:
    """Give every activation quantizer a fresh ``HistogramCalibrator`` (``_torch_hist=True``, 2048 bins),
    what the reference's ``initialize()`` + replacement produce. Returns how many were swapped."""
    n = 0
    for name, module in model.named_modules():
        if isinstance(module, quant_nn.TensorQuantizer) and not name.endswith("_weight_quantizer"):
            cal = HistogramCalibrator(module.num_bits, None, module.unsigned, num_bins=2048)
            cal._torch_hist = True
            module._calibrator = cal
            n += 1
    return n


def reference_collect(model: torch.nn.Module, batches: Iterable) -> int:
    """§3 ``calibrate_model`` steps 1-4: calibrate-only quantizers, forward every batch, quantizers back on."""
    model.eval()
    for _, module in model.named_modules():
        if isinstance(module, quant_nn.TensorQuantizer):
            if module._calibrator is not None:
                module.disable_quant()
                module.enable_calib()
            else:
                module.disable()
    n = 0
    with torch.no_grad():
        for batch in batches:
            model(torch.as_tensor(batch).float())
            n += 1
    for _, module in model.named_modules():
        if isinstance(module, quant_nn.TensorQuantizer):
            if module._calibrator is not None:
                module.enable_quant()
                module.disable_calib()
            else:
                module.enable()
    return n


def _load_amax(q: quant_nn.TensorQuantizer, value: torch.Tensor) -> None:
    """The tail of ``TensorQuantizer.load_calib_amax`` (create or copy the ``_amax`` buffer)."""
    if not hasattr(q, "_amax"):
        q.register_buffer("_amax", value.data)
    else:
        q._amax.copy_(value)


def reference_compute_amax(model: torch.nn.Module, method: str = "mse",
                           widths: dict[str, float] | None = None) -> dict[str, float]:
    """§3 step 5: MaxCalibrators ``load_calib_amax()``, histograms ``load_calib_amax(method=...)``
    (the MSE path through :func:`reference_mse_amax`, since the shipped one needs CUDA). Returns the
    activation amax per quantizer; ``widths`` (if given) receives each histogram's bin width."""
    out: dict[str, float] = {}
    for name, module in model.named_modules():
        if not isinstance(module, quant_nn.TensorQuantizer) or module._calibrator is None:
            continue
        cal = module._calibrator
        if isinstance(cal, MaxCalibrator):
            module.load_calib_amax()
            continue
        if cal._calib_hist is None:
            raise RuntimeError(f"Calibrator returned None for {name}")  # what load_calib_amax raises
        counts, edges = calibrator_histogram(cal)
        value = reference_amax(method, counts, edges, module.num_bits, module.unsigned)
        if widths is not None:
            widths[name] = float(edges[1] - edges[0])
        _load_amax(module, torch.as_tensor(value).float())
        out[name] = float(value)
    return out


def reference_ptq(ckpt: Path, repo: Path, images: Path, *, size: int, batch: int, max_batches: int | None,
                  out: Path, method: str = "mse") -> dict:
    """The whole PTQ the reference way (same plan as trtqat, see module docstring); returns timings + amax."""
    from trtqat.data.images import image_stream
    from trtqat.models import fuse_model, load_checkpoint
    from trtqat.quant._compat import quiet_absl
    from trtqat.quant.ptq import QuantConfig
    from trtqat.quant.replace import replace_modules
    from trtqat.quant.share import apply_rules, load_policy

    quiet_absl()
    t = {}
    t0 = time.perf_counter()
    loaded = load_checkpoint(ckpt, repo)
    model = fuse_model(loaded.model)
    policy = load_policy(loaded.family)
    ignore = tuple(policy.ignore) if QuantConfig().family_ignore else ()
    replace_modules(model, ignore)
    t["load_replace"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    groups = apply_rules(model, policy, size=size)  # one temporary export at the calibration size
    use_reference_calibrators(model)  # after the rules: shared quantizers get one calibrator
    t["rules"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    reference_collect(model, image_stream(images, size, batch, max_batches))
    t["collect"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    widths: dict[str, float] = {}
    amax = reference_compute_amax(model, method, widths)
    t["amax"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    torch.save({"model": model}, out)
    t["save"] = time.perf_counter() - t4
    t["total"] = time.perf_counter() - t0
    return {"seconds": t, "amax": amax, "bin_widths": widths, "groups": len(groups)}


# ---------------------------------------------------------------- QAT step (§5)

def reference_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """``deepcopy`` of the calibrated model with every quantizer disabled (the fused float model)."""
    teacher = copy.deepcopy(model)
    for module in teacher.modules():
        if isinstance(module, quant_nn.TensorQuantizer):
            module.disable()
    return teacher


class ReferenceDistiller:
    """The reference finetune's per-step work: hooks on supervised layers, sum of MSE, Adam, GradScaler."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module, stride: int = 1, lr: float = 1e-5):
        layers = list(student.model)
        n = len(layers)
        idx = list(range(0, n - 1, stride))
        if n - 2 not in idx:
            idx.append(n - 2)
        self.student, self.teacher = student, teacher
        self.s_out: list = []
        self.t_out: list = []
        self.handles = [student.model[i].register_forward_hook(self._save(self.s_out)) for i in idx]
        self.handles += [teacher.model[i].register_forward_hook(self._save(self.t_out)) for i in idx]
        for module in student.modules():
            if isinstance(module, quant_nn.TensorQuantizer) and hasattr(module, "_amax"):
                module.enable_quant()
                module.disable_calib()
                module.enable()
        # Adam over all parameters, all trainable: checkpoints (and fused convs) arrive with requires_grad off;
        # leaving them off would make the reference step skip almost every weight gradient (unfair, and
        # not a fine-tune at all)
        student.requires_grad_(True)
        self.optimizer = torch.optim.Adam(student.parameters(), lr=lr)
        self.amp = next(student.parameters()).device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.mse = torch.nn.MSELoss()

    @staticmethod
    def _save(store: list):
        def hook(module, inputs, output):
            store.append(output)
        return hook

    def step(self, x: torch.Tensor) -> float:
        self.s_out.clear()
        self.t_out.clear()
        with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=self.amp):
            self.student(x)
            with torch.no_grad():
                self.teacher(x)
            loss = sum(self.mse(s, t) for s, t in zip(self.s_out, self.t_out))
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def close(self) -> None:
        for h in self.handles:
            h.remove()
