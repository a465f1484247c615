"""``trtqat export``: a trtqat PTQ/QAT checkpoint -> a clean, verified Q/DQ ONNX for TensorRT 10/11.

Steps (each explained in its module):

1. load the checkpoint; a trtqat PTQ/QAT one is exported as is, an upstream float one only with
   ``no_quant`` (after fusing, like the PTQ pipeline does), a trtqat one with ``no_quant`` with every
   quantizer disabled: the FP16 baseline and the input of TensorRT's implicit PTQ go through the same path;
2. trace with the TorchScript exporter (:mod:`.onnx_trace`): fake-quant -> QuantizeLinear/DequantizeLinear;
3. clean for TensorRT's parser (:mod:`trtqat.graph.cleanup`), optionally simplify (onnxslim);
4. ``float_dtype="fp16"``: cast the non-quantized parts to FP16 (:mod:`trtqat.graph.fp16`), because strongly
   typed TensorRT (10 with ``--stronglyTyped``, 11 always) runs float layers in the ONNX dtype;
5. verify in onnxruntime against the model in export semantics (:mod:`.verify`);
6. write atomically (a failed verification writes nothing).
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .. import __version__
from .._io import atomic_path
from ..errors import InputError, UsageError, VerificationError
from ..graph.cleanup import (
    CleanupReport,
    cleanup_model,
    infer_and_check,
    output_shapes,
    qdq_summary,
    simplify_model,
)
from ..graph.fp16 import Fp16Report, convert_to_fp16
from ..models import LoadedModel, fuse_model, load_checkpoint, to_device
from ..models.detect_head import raw_head_from_model
from .checkpoint import require_quantized
from .modes import quant_disabled
from .onnx_trace import OPSET_MAX, OPSET_MIN, trace_onnx
from .ptq import check_size
from .verify import VerifyReport, check_graphs, qdq_param_problems, require_passed

HEADS = ("decoded", "raw")
FLOAT_DTYPES = ("fp16", "fp32")


@dataclass(frozen=True)
class ExportConfig:
    """The ``trtqat export`` flags. ``save=None`` writes ``<checkpoint stem>.onnx`` beside the checkpoint."""

    size: int = 640
    save: Path | None = None
    dynamic: bool = False
    dynamic_hw: bool = False
    opset: int = 13
    head: str = "decoded"
    float_dtype: str = "fp16"
    no_quant: bool = False
    simplify: bool = False
    verify: bool = True
    calib_dir: Path | None = None
    batch: int = 4  # the larger verification batch (dynamic exports only)

    def __post_init__(self):
        if not OPSET_MIN <= self.opset <= OPSET_MAX:
            raise UsageError(f"--opset {self.opset} is not supported",
                             f"Use an opset from {OPSET_MIN} to {OPSET_MAX} (per-channel Q/DQ needs 13; "
                             f"FP16 Q/DQ needs 19)")
        if self.head not in HEADS:
            raise UsageError(f"--head {self.head!r} is not supported", f"Choose one of {', '.join(HEADS)}")
        if self.float_dtype not in FLOAT_DTYPES:
            raise UsageError(f"--float-dtype {self.float_dtype!r} is not supported",
                             f"Choose one of {', '.join(FLOAT_DTYPES)}")
        if self.size <= 0:
            raise UsageError(f"--size must be positive, got {self.size}")
        if self.batch < 1:
            raise UsageError(f"--batch must be >= 1, got {self.batch}")

    @property
    def verify_batches(self) -> list[int]:
        """Batch 1, plus the larger batch when the batch axis is dynamic (a static export is batch 1)."""
        return sorted({1, self.batch}) if self.dynamic else [1]


@dataclass
class ExportResult:
    path: Path
    family: str
    kind: str  # "ptq" | "qat" | "float"
    config: ExportConfig
    outputs: dict[str, list]
    qdq: dict[str, int]
    cleanup: CleanupReport
    fp16: Fp16Report | None = None
    verification: VerifyReport | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        c = self.config
        return {"path": str(self.path), "family": self.family, "kind": self.kind, "opset": c.opset,
                "size": c.size, "head": c.head, "float_dtype": c.float_dtype, "dynamic": c.dynamic,
                "dynamic_hw": c.dynamic_hw, "simplified": c.simplify,
                "input": {"images": ["batch" if c.dynamic else 1, 3,
                                     "height" if c.dynamic_hw else c.size, "width" if c.dynamic_hw else c.size]},
                "outputs": self.outputs, "qdq": self.qdq, "cleanup": self.cleanup.to_dict(),
                "fp16": self.fp16.to_dict() if self.fp16 else None,
                "verification": self.verification.to_dict() if self.verification else None,
                "seconds": round(self.seconds, 2), "notes": self.notes}


def prepare_for_export(loaded: LoadedModel, no_quant: bool) -> tuple[object, str]:
    """(model, kind) for a loaded checkpoint, or InputError for a float checkpoint without ``no_quant``."""
    if loaded.extra:
        require_quantized(loaded.extra, loaded.path)
        return loaded.model, "float" if no_quant else str(loaded.extra.get("kind", "ptq"))
    if not no_quant:
        raise InputError(f"{loaded.path} is a float {loaded.family.name} checkpoint, not a trtqat PTQ/QAT one",
                         "Run 'trtqat quantize CKPT --calib DIR --ptq ptq.pt' first, or pass --no-quant "
                         "to export the float model")
    return fuse_model(loaded.model), "float"


def default_save_path(ckpt: str | Path) -> Path:
    """``<checkpoint stem>.onnx`` in the checkpoint's folder."""
    ckpt = Path(ckpt)
    return ckpt.with_name(ckpt.stem + ".onnx")


def export_model(ckpt: str | Path, repo: str | Path | None = None, config: ExportConfig = ExportConfig(),
                 progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export checkpoint ``ckpt`` (see module docstring); returns what was written and measured."""
    loaded = load_checkpoint(ckpt, repo)
    model, kind = prepare_for_export(loaded, config.no_quant)
    save = Path(config.save) if config.save is not None else default_save_path(ckpt)
    return export_module(model, save, config, family=loaded.family.name, kind=kind, progress=progress)


def export_module(model, save: str | Path, config: ExportConfig, *, family: str = "unknown", kind: str = "ptq",
                  progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export an in-memory (fused, CPU, float32) model; ``kind="float"`` disables its quantizers."""
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    check_size(config.size, model)
    model = to_device(model, "cpu").float().eval()
    quantized = kind != "float"
    say(f"tracing ({'Q/DQ' if quantized else 'float'}, opset {config.opset}, head {config.head})")
    with tempfile.TemporaryDirectory(prefix="trtqat-export-") as tmp:
        traced = Path(tmp) / "traced.onnx"
        with quant_disabled(model) if not quantized else contextlib.nullcontext():
            trace_onnx(model, traced, size=config.size, batch=1, opset=config.opset, head=config.head,
                       dynamic_batch=config.dynamic, dynamic_hw=config.dynamic_hw, quantized=quantized)
        raw = onnx.load(str(traced))
    say("cleaning the graph (constant folding, Q/DQ parameter Identities, shape inference)")
    clean, report = cleanup_model(raw, dynamic_batch=config.dynamic)
    if config.simplify:
        say("simplifying with onnxslim")
        clean = simplify_model(clean, dynamic_batch=config.dynamic)
        report.simplified = True
    final, fp16 = clean, None
    if config.float_dtype == "fp16":
        say("casting the float parts to FP16")
        final, fp16 = convert_to_fp16(clean)
        final = infer_and_check(final, dynamic_batch=config.dynamic)
    _add_metadata(final, family=family, kind=kind, config=config, head=_detect_head_metadata(model, config))
    data = final.SerializeToString()
    result = ExportResult(path=Path(save), family=family, kind=kind, config=config, outputs=output_shapes(final),
                          qdq=qdq_summary(final), cleanup=report, fp16=fp16)
    if fp16 is not None and config.opset < 19 and quantized:
        result.notes.append("opset < 19 keeps Q/DQ in float32 with Casts around them; --opset 19 gives FP16 "
                            "Q/DQ without Casts")
    if config.verify:
        if quantized:  # exact and cheap first: every scale is some quantizer's amax/127
            problems = qdq_param_problems(model, clean) + (
                qdq_param_problems(model, final, rtol=1e-3) if fp16 is not None else [])
            if problems:
                raise VerificationError(f"{len(problems)} Q/DQ parameter mismatch(es) between the ONNX and the "
                                        f"model, first: {problems[0]}",
                                        "The file was not written; report the problem")
        say(f"verifying in onnxruntime at batch {', '.join(map(str, config.verify_batches))}")
        graphs = {"fp32": clean.SerializeToString()}
        if fp16 is not None:
            graphs["fp16"] = data
        result.verification = check_graphs(model, graphs, size=config.size, head=config.head, quantized=quantized,
                                           batches=config.verify_batches, calib_dir=config.calib_dir)
        require_passed(result.verification)
    with atomic_path(save) as tmp_path:
        tmp_path.write_bytes(data)
    result.seconds = time.perf_counter() - t0
    return result


def _detect_head_metadata(model, config: ExportConfig) -> dict[str, str]:
    """With ``--head raw``: the anchors and strides a reader needs to decode the boxes
    (:mod:`trtqat.models.detect_head`; ``trtqat eval`` reads them). Empty otherwise."""
    layers = getattr(model, "model", None)
    head = layers[-1] if layers is not None and len(layers) else None
    if config.head != "raw" or head is None or getattr(head, "stride", None) is None:
        return {}
    return raw_head_from_model(model).to_metadata()


def _add_metadata(model: onnx.ModelProto, *, family: str, kind: str, config: ExportConfig,
                  head: dict[str, str] | None = None) -> None:
    """Provenance in the ONNX metadata (TensorRT ignores it; ``trtqat lint`` and humans can read it)."""
    meta = {"trtqat_version": __version__, "family": family, "kind": kind, "size": str(config.size),
            "head": config.head, "float_dtype": config.float_dtype, **(head or {})}
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)

