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
from ..errors import UsageError
from ..models import LoadedModel, fuse_model, load_checkpoint, model_stride, to_device
from ._compat import quiet_absl
from .calibrate import CalibResult, calibrate
from .checkpoint import save_quantized
from .device import resolve_device
from .replace import ReplaceReport, replace_modules
from .share import apply_rules, converted_modules, load_policy

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
    """Which modules get quantized and which quantizers share a scale."""

    ignore: tuple[str, ...] = ()
    family_ignore: bool = True  # add the family default (detect convs stay float)
    rules_file: Path | None = None
    use_rules: bool = True
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

    def summary(self) -> dict:
        return {"family": self.loaded.family.name, "detect": self.loaded.family.detect_name,
                "quantized": dict(self.replaced.quantized), "ignored": self.replaced.ignored,
                "ignore_policy": list(self.ignore), "groups": len(self.groups),
                "calib": self.calib.to_dict() if self.calib else None, "skipped_images": self.skipped_images,
                "seconds": round(self.seconds, 2), "saved": str(self.saved) if self.saved else None}


def check_size(size: int, model) -> None:
    """Input sizes must be a multiple of the model's largest stride."""
    stride = model_stride(model)
    if size % stride:
        raise UsageError(f"--size {size} is not a multiple of the model stride {stride}",
                         f"Use e.g. --size {max(stride, round(size / stride) * stride)}")


def prepare_quantized(loaded: LoadedModel, qconf: QuantConfig,
                      trace_size: int | None = None) -> tuple[object, ReplaceReport, list, tuple]:
    """Fuse, replace modules (ignore policy) and apply scale-sharing rules.

    The policy file (``rules/<family>.yaml`` or ``--rules FILE``) always supplies the ignore patterns;
    ``use_rules=False`` (``--no-rules``) only turns the scale sharing off, for a baseline.
    ``trace_size`` is the input size of the rules' temporary ONNX trace; the graph's topology does not
    depend on it, so the default is the smallest valid one (twice the stride: fast).
    Returns (model, replace report, applied groups, ignore patterns).
    """
    import dataclasses

    quiet_absl()
    model = fuse_model(loaded.model)
    policy = load_policy(loaded.family, qconf.rules_file)
    ignore = (tuple(policy.ignore) if qconf.family_ignore else ()) + tuple(qconf.ignore)
    replaced = replace_modules(model, ignore, quantize_maxpool=qconf.quantize_maxpool,
                               quantize_residual_add=qconf.quantize_residual_add)
    groups = []
    if qconf.use_rules:  # user --ignore-policy layers are never converted by the float-fanout rule
        groups = apply_rules(model, dataclasses.replace(policy, ignore=policy.ignore + tuple(qconf.ignore)),
                             size=trace_size or 2 * model_stride(model))
        converted = set(converted_modules(groups))
        replaced.ignored = [name for name in replaced.ignored if name not in converted]
        replaced.recount(model)  # the float-fanout rule may have quantized ignored layers
    return model, replaced, groups, ignore


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
    check_size(calib.size, loaded.model)
    model, replaced, groups, ignore = prepare_quantized(loaded, qconf)
    to_device(model, device)
    if on_total:
        on_total(min(len(stream.files), calib.batch_size * (calib.calib_batches or len(stream))))
    result = calibrate(model, stream, method=calib.method, percentile=calib.percentile, device=device,
                       progress=progress)
    to_device(model, "cpu")
    res = PtqResult(loaded=loaded, model=model, replaced=replaced, calib=result, groups=groups, ignore=ignore,
                    skipped_images=stream.skipped)
    if out is not None:
        res.saved = save_quantized(model, out, {
            "kind": "ptq", "family": loaded.family.name, "source": str(loaded.path), "size": calib.size,
            "calib": {**result.to_dict(), "percentile": calib.percentile, "skipped_images": stream.skipped,
                      "calib_dir": str(calib.calib_dir)},
            "ignore": list(ignore), "groups": [g.to_dict() if hasattr(g, "to_dict") else g for g in groups],
            "quantized": dict(replaced.quantized), "config": {k: str(v) for k, v in asdict(qconf).items()}})
    res.seconds = time.perf_counter() - t0
    return res
