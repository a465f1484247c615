"""``trtqat optimize``: make any Q/DQ ONNX TensorRT-friendly, then prove it changed what it should only.

Why a library module: ModelOpt, Ultralytics and pytorch-quantization users bring a Q/DQ ONNX, not a
trtqat checkpoint. The steps, in order (each a module of its own):

1. read and normalise (:mod:`trtqat.graph.normalize_qdq`: no-op Casts, Identity/Constant scales,
   duplicate Q/DQ), refuse what TensorRT's parser would refuse (:mod:`trtqat.graph.parser_checks`);
2. pick the rules (``--rules FILE`` or the family found in the graph, :mod:`trtqat.graph.family_detect`),
   and keep the detect head's output convs float as they say (:mod:`trtqat.graph.float_head`);
3. insert the Q/DQ the rules call for (:mod:`trtqat.graph.insert_qdq`) when a scale is known for them
   or data is given; list the others;
4. tie every scale-sharing group (:mod:`trtqat.graph.scale_groups`, :mod:`trtqat.graph.retie`), from the
   largest member scale, or from histograms collected through onnxruntime (:mod:`trtqat.calib`);
5. check: onnx.checker, onnxruntime on IN and OUT (cosine, max error per output), ``trtqat lint``
   before and after.

Imports: graph, calib and data (numpy, onnx, onnxruntime); never torch.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from .calib.amax import METHODS, balanced_mse_amax, histogram_amax
from .errors import InputError, UsageError, VerificationError
from .graph.family_detect import canonical_family, detect_onnx_family
from .graph.float_head import HeadConv, float_head_outputs
from .graph.insert_qdq import Insertion, apply_insertions, plan_insertions
from .graph.lint import lint_model
from .graph.normalize_qdq import NormalizeReport, normalize_qdq
from .graph.parser_checks import check_parser
from .graph.policy import load_policy_file, policy_file
from .graph.qdq import graph_from_model, is_q, is_weight_qdq, qdq_nodes
from .graph.retie import TiedGroup, group_tensors, tie_scales
from .graph.scale_groups import ScaleSet, find_scale_sets

log = logging.getLogger(__name__)

#: lint summary fields shown before/after (missing ones are shown as None)
LINT_FIELDS = ("standalone_qdq", "int8_share", "int8_share_macs", "precision_boundaries")

#: what ``--calib`` derives again: the tied groups only (the input's other scales are kept, and a group's
#: scale is floored at its members' smallest), or every activation scale (the input's calibration is
#: replaced as ``trtqat quantize`` would calibrate; weights are kept)
RECALIBRATE = ("groups", "all")

#: the ``rules`` of a one-Q set made for an activation Q in no group (``--recalibrate all``)
ALONE = ("recalibrate",)

#: the ``rules`` entry of a one-Q set made for an asymmetric activation Q (its symmetric scale from data)
SYMMETRIC = "symmetric"

@dataclass(frozen=True)
class OptimizeConfig:
    """``--rules --method --percentile --trt-version --recalibrate`` and, from Python, ``family`` (a family of
    :data:`~trtqat.graph.family_detect.FAMILIES` or an alias such as ``yolov8``, instead of detecting it)."""

    rules_file: Path | None = None
    family: str | None = None
    method: str = "mse"
    percentile: float = 99.99
    trt_version: str = "10"
    recalibrate: str = "groups"

    def __post_init__(self):
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method!r} is not supported", f"Choose one of {', '.join(METHODS)}")
        if self.recalibrate not in RECALIBRATE:
            raise UsageError(f"--recalibrate {self.recalibrate!r} is not supported",
                             f"Choose one of {', '.join(RECALIBRATE)}")
        if not 0 < self.percentile <= 100:
            raise UsageError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.family is not None:
            from .graph.family_detect import FAMILIES

            if canonical_family(self.family)[0] not in (*FAMILIES, "unknown"):
                raise UsageError(f"family {self.family!r} is not one trtqat knows",
                                 f"Choose one of {', '.join(FAMILIES)} (or yolov8, yolo11, yolo26)")


@dataclass
class OptimizeReport:
    """What ``optimize`` did and measured; ``to_dict`` is the ``--json`` schema."""

    family: str = ""  # "yolov5" | "yolov7" | "ultralytics" | "unknown" (rules/<family>.yaml, else default.yaml)
    family_from: str = ""  # "--family" | "metadata" | "structure" | "" (unknown)
    version: str = ""  # ultralytics: "v8" | "11" | "26" ("" when not told)
    policy: tuple[str, ...] = ()
    calibrated: bool = False
    method: str = ""
    recalibrate: str = ""  # "groups" | "all" with --calib, "" without
    normalize: NormalizeReport = field(default_factory=NormalizeReport)
    head: list[HeadConv] = field(default_factory=list)
    groups: list[TiedGroup] = field(default_factory=list)
    inserted: list[Insertion] = field(default_factory=list)
    suggested: list[Insertion] = field(default_factory=list)
    lint_before: dict[str, Any] = field(default_factory=dict)
    lint_after: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    checker: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "family_from": self.family_from, "version": self.version,
                "policy": list(self.policy),
                "calibrated": self.calibrated, "method": self.method, "recalibrate": self.recalibrate,
                "normalize": self.normalize.to_dict(),
                "head": [h.to_dict() for h in self.head],
                "groups": [g.to_dict() for g in self.groups],
                "groups_changed": sum(g.changed for g in self.groups if not is_single(g)),
                "recalibrated_alone": sum(g.rules == ALONE for g in self.groups),
                "symmetric_alone": sum(g.rules == (SYMMETRIC,) for g in self.groups),
                "inserted": [i.to_dict() for i in self.inserted], "suggested": [i.to_dict() for i in self.suggested],
                "lint": {"before": self.lint_before, "after": self.lint_after}, "outputs": self.outputs,
                "checker": self.checker}


def is_single(group: TiedGroup) -> bool:
    """A one-Q set calibrated on its own (``--recalibrate all``, or an asymmetric Q made symmetric), not a
    scale-sharing group."""
    return group.rules in (ALONE, (SYMMETRIC,))


def lint_summary(model: onnx.ModelProto, trt_version: str) -> dict[str, Any]:
    """The lint summary fields optimize reports (through lint's public API)."""
    summary = dict(lint_model(model, trt_version=trt_version).summary)
    return {k: summary.get(k) for k in LINT_FIELDS}


def _refuse_parser_errors(graph: gs.Graph, label: str) -> None:
    errors = [f for f in check_parser(graph) if f.severity == "error"]
    if errors:
        f = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{label}: TensorRT would refuse it: {f.rule_id} {f.hazard}{more}", f.mitigation)


def optimize_model(model: onnx.ModelProto, cfg: OptimizeConfig = OptimizeConfig(), *,
                   calib: Iterable[np.ndarray] | None = None, label: str = "model",
                   progress: Callable[[int], None] | None = None) -> tuple[onnx.ModelProto, OptimizeReport]:
    """Normalise, float the detect head outputs, insert and tie the Q/DQ of ``model``; returns the new model
    and what was done.

    Args:
        calib: float32 image batches (N x 3 x H x W); with them inserted Q/DQ without a known scale are
            added and every group (with ``cfg.recalibrate == "all"`` every activation Q) is recalibrated
            through onnxruntime; without them groups take their largest scale and such insertions are only
            suggested.
    Raises:
        InputError: no Q/DQ in the model, or Q/DQ TensorRT's parser would refuse.
        UsageError: ``recalibrate="all"`` without ``calib``.
    """
    if cfg.recalibrate == "all" and calib is None:
        raise UsageError("--recalibrate all needs data", "Pass --calib DIR with a folder of images")
    report = OptimizeReport(method=cfg.method if calib is not None else "max-scale", calibrated=calib is not None,
                            recalibrate=cfg.recalibrate if calib is not None else "")
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - dtypes help the Cast check; without them Casts are kept
        log.info("shape inference failed (%s); casts of unknown dtype are kept", exc)
    graph = graph_from_model(model, label)
    if not qdq_nodes(graph):
        raise InputError(f"{label} has no QuantizeLinear/DequantizeLinear nodes",
                         "Pass a Q/DQ ONNX (ModelOpt, pytorch-quantization or trtqat export); a float model "
                         "needs quantizing first (trtqat quantize, or ModelOpt's ONNX PTQ)")
    report.normalize = normalize_qdq(graph)
    asymmetric = report.normalize.asymmetric
    if asymmetric and calib is None:
        default = " (onnxruntime's default)" if report.normalize.onnxruntime_style else ""
        raise InputError(f"{label}: {len(asymmetric)} activation scales are asymmetric{default}, e.g. "
                         f"{asymmetric[0]} has a non-zero zero point, and TensorRT runs symmetric INT8 only",
                         "Pass --calib DIR (images) to derive symmetric scales, or quantize symmetrically "
                         '(onnxruntime: quantize_static(..., extra_options={"ActivationSymmetric": True, '
                         '"WeightSymmetric": True}))')
    _refuse_parser_errors(graph, label)
    if cfg.family:
        (report.family, report.version), report.family_from = canonical_family(cfg.family), "--family"
    else:
        found = detect_onnx_family(graph, {p.key: p.value for p in model.metadata_props})
        report.family, report.family_from, report.version = found.name, found.source or "", found.version
    policy = load_policy_file(policy_file(report.family, cfg.rules_file))
    report.policy = policy.sources
    report.head = float_head_outputs(graph, policy)
    planned = plan_insertions(graph, policy, trt_version=cfg.trt_version)
    report.inserted = [i for i in planned if not i.needs_data or calib is not None]
    report.suggested = [i for i in planned if i.needs_data and calib is None]
    new_qs = apply_insertions(graph, report.inserted)
    sets = find_scale_sets(graph, policy, min_q=1).sets
    # no scale yet: inserted without a sibling, or asymmetric (a placeholder scale), or inserted with the
    # scale of an asymmetric sibling: calibrate them, and let none of them set a group's floor
    fresh = {name: (ins.node, ins.rule) for name, ins in new_qs.items()
             if ins.needs_data or ins.sibling_q in asymmetric}
    fresh.update({name: (name, SYMMETRIC) for name in asymmetric if name not in fresh})
    sets = tuple(s for s in sets if len(s.q_nodes) >= 2 or fresh.keys() & set(s.q_nodes))
    alone = [name for name in fresh if not any(name in s.q_nodes for s in sets)]
    sets += tuple(ScaleSet(q_nodes=(name,), tensors=(), ops=(fresh[name][0],), rules=(fresh[name][1],))
                  for name in alone)
    amax, floor_exempt = None, frozenset(fresh)
    if calib is not None:
        if cfg.recalibrate == "all":
            sets += _ungrouped_activation_qs(graph, sets)
            floor_exempt = frozenset(q for s in sets for q in s.q_nodes)
        amax = _calibrate(graph, sets, calib, cfg, progress)
    report.groups = tie_scales(graph, sets, amax, cfg.method, floor_exempt=floor_exempt)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = model.ir_version
    del out.graph.value_info[:]
    del out.metadata_props[:]  # the exporter's metadata (Ultralytics' names, stride, task) travels with it
    out.metadata_props.extend(model.metadata_props)
    return out, report


def _ungrouped_activation_qs(graph: gs.Graph, sets: tuple[ScaleSet, ...]) -> tuple[ScaleSet, ...]:
    """One set per activation Q in no group (``--recalibrate all``); weight Qs keep their scales."""
    grouped = {q for s in sets for q in s.q_nodes}
    return tuple(ScaleSet(q_nodes=(n.name,), tensors=(), ops=(), rules=ALONE)
                 for n in graph.nodes if is_q(n) and n.name not in grouped and not is_weight_qdq(n))


def _calibrate(graph: gs.Graph, sets, batches: Iterable[np.ndarray], cfg: OptimizeConfig,
               progress: Callable[[int], None] | None) -> dict[int, float]:
    """Group index -> amax from the float twin's activations.

    MSE (the default) searches one amax over one histogram per distinct tensor of the group
    (:func:`balanced_mse_amax`); the other methods read one histogram merged across the group, as a shared
    torch quantizer collects."""
    from .calib.ort_collect import collect_histograms
    from .graph.strip_qdq import float_twin

    twin = float_twin(gs.export_onnx(graph.copy(), do_type_check=False))
    tensors = group_tensors(graph, sets)
    if cfg.method == "mse":
        hists = collect_histograms(twin, {t: [t] for ts in tensors.values() for t in ts}, batches, progress=progress)
        found = {k: balanced_mse_amax([hists[t].histogram() for t in dict.fromkeys(ts)]) for k, ts in tensors.items()}
    else:
        hists = collect_histograms(twin, tensors, batches, progress=progress)
        found = {k: h.max_seen if cfg.method == "max" else histogram_amax(cfg.method, *h.histogram(),
                                                                          percentile=cfg.percentile)
                 for k, h in hists.items()}
    return {k: float(v) for k, v in found.items() if v is not None and v > 0}


def compare_outputs(before: onnx.ModelProto, after: onnx.ModelProto, batch: np.ndarray) -> dict[str, dict[str, float]]:
    """onnxruntime outputs of both models on ``batch``: cosine similarity and max |error| per output."""
    from .calib.ort_collect import run_outputs

    a, b = run_outputs(before, batch), run_outputs(after, batch)
    out = {}
    for name, x in a.items():
        y = b.get(name)
        if y is None or y.shape != x.shape:
            raise VerificationError(f"output {name!r} is missing or changed shape after optimize",
                                    "Report this with the input ONNX")
        x64, y64 = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        denom = np.linalg.norm(x64) * np.linalg.norm(y64)
        cos = float(x64 @ y64 / denom) if denom else float(np.array_equal(x64, y64))
        out[name] = {"cosine": round(cos, 6), "max_abs_error": float(np.max(np.abs(x64 - y64))) if x64.size else 0.0,
                     "max_abs": float(np.max(np.abs(x64))) if x64.size else 0.0}
    return out


def check_model(model: onnx.ModelProto) -> None:
    """onnx.checker on the written model (a failure is a trtqat bug, reported as a failed check)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise VerificationError(f"the optimized ONNX does not pass onnx.checker ({str(exc).splitlines()[0]})",
                                "Report this with the input ONNX") from exc


def input_size(model: onnx.ModelProto) -> int | None:
    """The square spatial size of the model's image input, when it is fixed."""
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    if len(dims) == 4 and dims[2].HasField("dim_value") and dims[2].dim_value == dims[3].dim_value:
        return int(dims[2].dim_value)
    return None


def optimize_file(src: str | Path, dst: str | Path, cfg: OptimizeConfig = OptimizeConfig(), *,
                  calib_dir: str | Path | None = None, size: int | None = None, batch_size: int = 8,
                  calib_batches: int | None = 32, progress: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> OptimizeReport:
    """``trtqat optimize``: read ``src``, optimize, write ``dst`` atomically, then check it.

    The check runs onnx.checker on ``dst``, onnxruntime on both models (the first calibration batch, or
    seeded noise) and lint on both. ``size`` defaults to the model's fixed input size.
    Raises:
        UsageError: no input size known (dynamic H/W and no ``--size``).
        InputError: unreadable ``src``, a folder without images, Q/DQ the parser would refuse.
    """
    from ._io import atomic_path
    from .data.images import image_stream, seeded_noise
    from .graph.qdq import load_model

    model = load_model(src)
    size = size or input_size(model)
    if size is None:
        raise UsageError(f"{src} has no fixed square input size", "Pass --size N")
    stream = None
    if calib_dir is not None:
        stream = image_stream(calib_dir, size, batch_size, calib_batches)  # fail fast on an empty folder
        if on_total:
            on_total(min(len(stream.files), batch_size * (calib_batches or len(stream))))
    out, report = optimize_model(model, cfg, calib=stream, label=str(src), progress=progress)
    with atomic_path(dst) as tmp:
        onnx.save(out, str(tmp))
    written = onnx.load(str(dst))
    check_model(written)
    report.checker = True
    batch = next(iter(image_stream(calib_dir, size, 1, 1))) if calib_dir is not None else seeded_noise(1, size)
    report.outputs = compare_outputs(model, written, batch)
    report.lint_before = lint_summary(model, cfg.trt_version)
    report.lint_after = lint_summary(written, cfg.trt_version)
    return report
