"""``trtqat export``: a trtqat PTQ/QAT checkpoint -> a clean, verified Q/DQ ONNX for TensorRT 10/11.

Steps (each explained in its module):

1. load the checkpoint; a trtqat PTQ/QAT one is exported as is, an upstream float one only with
   ``no_quant`` (after fusing, like the PTQ pipeline does), a trtqat one with ``no_quant`` with every
   quantizer disabled: the FP16 baseline and the input of TensorRT's implicit PTQ go through the same path;
2. trace with the TorchScript exporter (:mod:`.onnx_trace`): fake-quant -> QuantizeLinear/DequantizeLinear;
3. clean for TensorRT's parser (:mod:`trtqat.graph.cleanup`), optionally simplify (onnxslim);
4. ``float_dtype="fp16"``: cast the non-quantized parts to FP16 (:mod:`trtqat.graph.fp16`), because strongly
   typed TensorRT (10 with ``--stronglyTyped``, 11 always) runs float layers in the ONNX dtype;
5. verify in onnxruntime against the model in export semantics (:mod:`.verify`), part by part in the
   output layout of the model's family (``FamilyInfo.output_layout``);
6. write atomically (a failed verification writes nothing), with metadata that names the family, its
   version and the output layout (:func:`export_metadata`).

Ultralytics models (YOLOv8, YOLO11, YOLO26) export their decoded output alone, named ``output0`` as
Ultralytics' own exporter names it: ``[B, 4 + nc, N]``, or ``[B, K, 6]`` when the YOLO26 one-to-one head
runs (``end2end``). ``--head raw`` is refused for them: their raw head is per-level DFL logits with no
anchors to record, which no reader decodes.
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
from ..models import FamilyInfo, LoadedModel, fuse_model, load_checkpoint, model_stride, to_device
from ..models.detect_head import raw_head_from_model
from ..models.family import ULTRALYTICS_PACKAGE, detect_family
from .checkpoint import require_quantized
from .modes import quant_disabled
from .onnx_trace import OPSET_MAX, OPSET_MIN, trace_onnx
from .ptq import check_size
from .verify import VerifyReport, check_graphs, qdq_param_problems, require_passed

HEADS = ("decoded", "raw")
FLOAT_DTYPES = ("fp16", "fp32")
#: output name of the decoded head: trtqat's own for YOLOv5/YOLOv7, Ultralytics' exporter's for its models
OUTPUT_NAME = "output"
ULTRALYTICS_OUTPUT_NAME = "output0"
_LAYOUT_SHAPES = {"yolov5": "[B, N, 5+nc]", "ultralytics": "[B, 4+nc, N]", "end2end": "[B, K, 6]"}


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
    version: str = ""  # the family's version ("v8", "11", "26"; "" for YOLOv5/YOLOv7)
    output_layout: str = ""  # "yolov5" | "ultralytics" | "end2end" ("" for the raw head)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        c = self.config
        return {"path": str(self.path), "family": self.family, "version": self.version,
                "output_layout": self.output_layout, "kind": self.kind, "opset": c.opset,
                "size": c.size, "head": c.head, "float_dtype": c.float_dtype, "dynamic": c.dynamic,
                "dynamic_hw": c.dynamic_hw, "simplified": c.simplify,
                "input": {"images": ["batch" if c.dynamic else 1, 3,
                                     "height" if c.dynamic_hw else c.size, "width" if c.dynamic_hw else c.size]},
                "outputs": self.outputs, "qdq": self.qdq, "cleanup": self.cleanup.to_dict(),
                "fp16": self.fp16.to_dict() if self.fp16 else None,
                "verification": self.verification.to_dict() if self.verification else None,
                "metadata": self.metadata, "seconds": round(self.seconds, 2), "notes": self.notes}


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
    check_head(loaded.family, config, str(loaded.path))
    model, kind = prepare_for_export(loaded, config.no_quant)
    save = Path(config.save) if config.save is not None else default_save_path(ckpt)
    return export_module(model, save, config, family=loaded.family.name, kind=kind, progress=progress,
                         info=loaded.family)


def check_head(info: FamilyInfo, config: ExportConfig, source: str = "the model") -> None:
    """Refuse ``--head raw`` for an Ultralytics model (one line, exit 2): see the module docstring.

    Raises:
        UsageError: ``config.head == "raw"`` for the ultralytics family.
    """
    if config.head == "raw" and info.name == ULTRALYTICS_PACKAGE:
        raise UsageError(f"--head raw is not available for {source} ({info.label}): an Ultralytics head has no "
                         "anchors to record and no reader decodes its raw DFL logits",
                         "Use --head decoded (the default): output0 in the model's own layout "
                         f"({info.output_layout} {_LAYOUT_SHAPES.get(info.output_layout, '')})".rstrip())


def export_module(model, save: str | Path, config: ExportConfig, *, family: str = "unknown", kind: str = "ptq",
                  progress: Callable[[str], None] | None = None, info: FamilyInfo | None = None) -> ExportResult:
    """Export an in-memory (fused, CPU, float32) model; ``kind="float"`` disables its quantizers.

    ``info`` is the model's family (version, output layout); detected from ``model`` when None.
    """
    t0 = time.perf_counter()
    say = progress or (lambda _msg: None)
    check_size(config.size, model)
    model = to_device(model, "cpu").float().eval()
    info = info if info is not None else detect_family(model)
    check_head(info, config)
    ultralytics = info.name == ULTRALYTICS_PACKAGE
    layout = info.output_layout if config.head == "decoded" else ""
    quantized = kind != "float"
    say(f"tracing ({'Q/DQ' if quantized else 'float'}, opset {config.opset}, head {config.head})")
    with tempfile.TemporaryDirectory(prefix="trtqat-export-") as tmp:
        traced = Path(tmp) / "traced.onnx"
        with quant_disabled(model) if not quantized else contextlib.nullcontext():
            trace_onnx(model, traced, size=config.size, batch=1, opset=config.opset, head=config.head,
                       dynamic_batch=config.dynamic, dynamic_hw=config.dynamic_hw, quantized=quantized,
                       output_names=[ULTRALYTICS_OUTPUT_NAME if ultralytics else OUTPUT_NAME]
                       if config.head == "decoded" else None)
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
    meta = export_metadata(model, info, family=family, kind=kind, config=config, layout=layout)
    write_metadata(final, meta)
    data = final.SerializeToString()
    result = ExportResult(path=Path(save), family=family, kind=kind, config=config, outputs=output_shapes(final),
                          qdq=qdq_summary(final), cleanup=report, fp16=fp16, version=info.version,
                          output_layout=layout, metadata=meta)
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
                                           batches=config.verify_batches, calib_dir=config.calib_dir,
                                           layout=layout or None)
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


def export_metadata(model, info: FamilyInfo, *, family: str, kind: str, config: ExportConfig,
                    layout: str) -> dict[str, str]:
    """The ONNX ``metadata_props`` of an export (TensorRT ignores them; ``trtqat eval``/``lint``/``optimize``,
    Ultralytics' ``AutoBackend`` and humans read them).

    trtqat's keys: ``trtqat_version``, ``family``, ``version`` (the family's: ``v8``/``11``/``26``; absent for
    YOLOv5/YOLOv7), ``output_layout`` (decoded head only: what :mod:`trtqat.eval.layouts` reads first),
    ``kind``, ``size``, ``head``, ``float_dtype``; with ``--head raw`` the ``anchors``/``strides``. Keys other
    readers know, written where the model has them: ``names`` (a Python dict literal ``{0: 'person', ...}``,
    as Ultralytics and YOLOv5 write it) and ``stride`` (the largest) for every family; for Ultralytics
    models also ``task`` (``detect``), ``end2end``, ``imgsz`` (``[size, size]``) and ``batch`` (1: the
    export batch; ``AutoBackend`` splits larger batches only for static exports), which Ultralytics'
    ``AutoBackend`` reads with ``ast.literal_eval``. ``version`` is the family's, where Ultralytics' own
    exports write the package version (``8.4.190``); ``AutoBackend`` does not read it.
    """
    meta = {"trtqat_version": __version__, "family": family}
    if info.version:
        meta["version"] = info.version
    if layout:
        meta["output_layout"] = layout
    meta.update({"kind": kind, "size": str(config.size), "head": config.head, "float_dtype": config.float_dtype})
    meta.update(_detect_head_metadata(model, config))
    names = _names_literal(getattr(model, "names", None))
    if names:
        meta["names"] = names
    if getattr(model, "stride", None) is not None:
        meta["stride"] = str(model_stride(model))
    if info.name == ULTRALYTICS_PACKAGE:
        meta.update({"task": "detect", "end2end": str(layout == "end2end"), "imgsz": str([config.size, config.size]),
                     "batch": "1"})
    return meta


def _names_literal(names) -> str:
    """Class names as a Python dict literal ``{0: 'person', ...}`` ("" when the model has none)."""
    if isinstance(names, dict) and names:
        return str({int(k): str(v) for k, v in names.items()})
    if isinstance(names, (list, tuple)) and names:
        return str(dict(enumerate(str(n) for n in names)))
    return ""


def write_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    """Replace ``model``'s ``metadata_props`` by ``meta``."""
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
