"""Post-training quantization of a YOLO checkpoint, end to end.

load (upstream pickle) -> fuse -> replace modules (ignore policy) -> scale-sharing rules -> calibrate
(histograms on letterboxed images) -> amax -> save. The library reports progress through a callback;
printing is the CLI's job.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..calib.amax import METHODS
from ..errors import InputError, UsageError
from ..models import LoadedModel, fuse_model, load_checkpoint, model_stride, to_device
from ._compat import quiet_absl
from .calibrate import CalibResult, calibrate
from .checkpoint import save_quantized
from .device import resolve_device
from .replace import ReplaceReport, quantize_modules, replace_modules
from .share import apply_groups, converted_modules, discover, load_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibConfig:
    """``--calib --size --batch-size --calib-batches --calib-method --percentile --device``."""

    calib_dir: Path | None = None
    size: int = 640
    batch_size: int = 8
    calib_batches: int | None = 32
    method: str = "mse"
    percentile: float = 99.99
    device: str | None = "cpu"

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"--calib-method {self.method!r} is not supported", f"Choose one of {', '.join(METHODS)}")
        if self.size <= 0:
            raise UsageError(f"--size must be positive, got {self.size}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.calib_batches is not None and self.calib_batches < 1:
            raise UsageError(f"--calib-batches must be >= 1, got {self.calib_batches}")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"--percentile must be in (0, 100], got {self.percentile}")


@dataclass(frozen=True)
class QuantConfig:
    """Which modules get quantized and which quantizers share a scale.

    ``use_rules=False`` (``--no-rules``) is the baseline: no trtqat placement at all (no scale sharing, no
    rule conversions such as TQ007 ``quantize-input``); only the ignore policy applies. ``share=False``
    (``--no-share``) keeps the placement (TQ007 conversions happen, each converted layer with its own input
    quantizer) but ties no quantizers together. ``rule_overrides`` (``--rule ID=SETTING``) change single
    rules of the policy file, e.g. ``("TQ007=report",)`` keeps YOLOv5's detect convs fully float.
    """

    ignore: tuple[str, ...] = ()
    family_ignore: bool = True  # add the family default (detect convs stay float)
    rules_file: Path | None = None
    use_rules: bool = True
    share: bool = True
    rule_overrides: tuple[str, ...] = ()
    quantize_maxpool: bool = True
    quantize_residual_add: bool = True


@dataclass
class PtqResult:
    loaded: LoadedModel
    model: object
    replaced: ReplaceReport
    calib: CalibResult | None
    groups: list = field(default_factory=list)
    ignore: tuple[str, ...] = ()
    seconds: float = 0.0
    saved: Path | None = None
    skipped_images: int = 0
    placement: str = ""  # e.g. "rules (scale sharing, TQ007 quantize-input)", "--no-rules baseline"

    def summary(self) -> dict:
        fam = self.loaded.family
        return {"family": fam.name, "version": fam.version, "output_layout": fam.output_layout,
                "detect": fam.detect_name,
                "quantized": dict(self.replaced.quantized), "ignored": self.replaced.ignored,
                "float": dict(self.replaced.float_why), "converted": dict(self.replaced.converted),
                "block_ops": dict(self.replaced.block_ops),
                "ignore_policy": list(self.ignore), "unmatched_ignore": list(self.replaced.unmatched),
                "groups": len(self.groups), "placement": self.placement,
                "calib": self.calib.to_dict() if self.calib else None, "skipped_images": self.skipped_images,
                "seconds": round(self.seconds, 2), "saved": str(self.saved) if self.saved else None}


def check_size(size: int, model) -> None:
    """Input sizes must be a multiple of the model's largest stride."""
    stride = model_stride(model)
    if size % stride:
        raise UsageError(f"--size {size} is not a multiple of the model stride {stride}",
                         f"Use e.g. --size {max(stride, round(size / stride) * stride)}")


def prepare_quantized(loaded: LoadedModel, qconf: QuantConfig, trace_size: int | None = None, *,
                      discover_only: bool = False) -> tuple[object, ReplaceReport, list, tuple]:
    """Fuse, replace modules (ignore policy, the policy's ``block`` rules) and apply scale-sharing rules.

    ``discover_only`` stops before the scale-sharing step (``trtqat rules`` runs its own discovery on the
    model as a PTQ run would see it, block quantizers included).

    The policy file (``rules/<family>.yaml`` or ``--rules FILE``, with ``rule_overrides``) always supplies
    the ignore patterns; see :class:`QuantConfig` for ``use_rules`` and ``share``. The report says why each
    float layer stays float (``float_why``) and which layers a rule converted (``converted``).
    ``trace_size`` is the input size of the rules' temporary ONNX trace; the graph's topology does not
    depend on it, so the default is the smallest valid one (twice the stride: fast).
    Returns (model, replace report, applied groups, ignore patterns).
    """
    import dataclasses

    quiet_absl()
    model = fuse_model(loaded.model)
    policy = load_policy(loaded.family, qconf.rules_file).with_overrides(qconf.rule_overrides)
    ignore = (tuple(policy.ignore) if qconf.family_ignore else ()) + tuple(qconf.ignore)
    replaced = replace_modules(model, ignore, quantize_maxpool=qconf.quantize_maxpool,
                               quantize_residual_add=qconf.quantize_residual_add,
                               blocks=policy.active("block") if qconf.use_rules else ())
    groups, notes = [], {}
    if qconf.use_rules and not discover_only:  # user --ignore-policy layers are never converted by TQ007
        found = discover(model, dataclasses.replace(policy, ignore=policy.ignore + tuple(qconf.ignore)),
                         size=trace_size or 2 * model_stride(model))
        mode = policy.fanout_mode()
        if qconf.share:
            groups = apply_groups(model, found)
            for g in groups:
                sib = ", ".join(m for m in g.members if m not in g.converted)
                replaced.converted.update({m: f"{g.rule} {mode}: INT8 input (scale shared with {sib}) and INT8 "
                                              "weights, float output" for m in g.converted})
        else:  # the placement without sharing: each converted layer gets its own input quantizer
            for m in quantize_modules(model, converted_modules(found.groups)):
                replaced.converted[m] = f"TQ007 {mode}: INT8 input (own scale: --no-share) and INT8 weights, float output"
        replaced.ignored = [name for name in replaced.ignored if name not in replaced.converted]
        replaced.recount(model)  # the float-fanout rule may have quantized ignored layers
        notes.update({m: f"{f.rule} {mode}: kept float; its input is also read in INT8 (TensorRT keeps a "
                         "standalone Quantize)" for f in found.fanouts for m in f.float_readers})
    for m in replaced.ignored:
        why = policy.float_reason(m, qconf.ignore, family_ignore=qconf.family_ignore)
        replaced.float_why[m] = f"{why}; {notes[m]}" if m in notes else why
    replaced.placement = placement_label(qconf, policy.fanout_mode() if qconf.use_rules else "")
    return model, replaced, groups, ignore


def refuse_quantized(loaded: LoadedModel) -> None:
    """A trtqat PTQ/QAT checkpoint is not calibrated again (``quantize``, ``sensitive``): that would silently
    replace its amax values (38 of 45 changed on a real YOLOv5n) under a table showing no shared groups.

    Raises:
        InputError: ``loaded`` is a trtqat checkpoint; the hint names ``trtqat eval`` and its float source.
    """
    if not loaded.extra:
        return
    kind = str(loaded.extra.get("kind", "ptq")).upper()
    source = loaded.extra.get("source")
    raise InputError(f"{loaded.path} is a trtqat {kind} checkpoint: it is quantized and calibrated already",
                     f"Measure it with 'trtqat eval {loaded.path} --val DIR', export it with 'trtqat export', or "
                     f"start again from the float checkpoint" + (f" it came from ({source})" if source else ""))


def placement_label(qconf: QuantConfig, policy_mode: str = "") -> str:
    """One line naming the placement a run used (the PTQ table and summary JSON show it)."""
    if not qconf.use_rules:
        return "--no-rules baseline: no scale sharing, no rule conversions (ignore policy only)"
    parts = ["scale sharing" if qconf.share else "no scale sharing (--no-share)"]
    if policy_mode:
        parts.append(f"TQ007 {policy_mode}")
    parts += [f"--rule {o}" for o in qconf.rule_overrides]
    return "rules: " + ", ".join(parts)


def run_ptq(ckpt: str | Path, *, repo: str | Path | None, calib: CalibConfig, qconf: QuantConfig = QuantConfig(),
            out: str | Path | None = None, progress: Callable[[int], None] | None = None,
            on_total: Callable[[int], None] | None = None) -> PtqResult:
    """Quantize ``ckpt`` with PTQ and (optionally) save the result to ``out``."""
    from ..allocator import tune_allocator
    from ..data.images import image_stream

    t0 = time.perf_counter()
    tune_allocator()
    if calib.calib_dir is None:
        raise UsageError("--calib DIR is required for calibration", "Pass a folder of representative images")
    device = resolve_device(calib.device)
    stream = image_stream(calib.calib_dir, calib.size, calib.batch_size, calib.calib_batches)  # fail fast
    loaded = load_checkpoint(ckpt, repo)
    refuse_quantized(loaded)
    check_size(calib.size, loaded.model)
    model, replaced, groups, ignore = prepare_quantized(loaded, qconf)
    to_device(model, device)
    if on_total:
        on_total(min(len(stream.files), calib.batch_size * (calib.calib_batches or len(stream))))
    result = calibrate(model, stream, method=calib.method, percentile=calib.percentile, device=device,
                       progress=progress)
    to_device(model, "cpu")
    res = PtqResult(loaded=loaded, model=model, replaced=replaced, calib=result, groups=groups, ignore=ignore,
                    skipped_images=stream.skipped, placement=replaced.placement)
    if out is not None:
        res.saved = save_quantized(model, out, {
            "kind": "ptq", "family": loaded.family.name, "version": loaded.family.version,
            "output_layout": loaded.family.output_layout, "source": str(loaded.path), "size": calib.size,
            "calib": {**result.to_dict(), "percentile": calib.percentile, "skipped_images": stream.skipped,
                      "calib_dir": str(calib.calib_dir)},
            "ignore": list(ignore), "groups": [g.to_dict() if hasattr(g, "to_dict") else g for g in groups],
            "quantized": dict(replaced.quantized), "float": dict(replaced.float_why),
            "converted": dict(replaced.converted), "block_ops": dict(replaced.block_ops),
            "placement": replaced.placement, "config": {k: str(v) for k, v in asdict(qconf).items()}})
    res.seconds = time.perf_counter() - t0
    return res
