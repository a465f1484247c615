"""The ``quantize`` job end to end: PTQ, then optional QAT, then the float / PTQ / QAT evaluation.

Why a module of its own: the command line only parses flags and prints; the order of the steps, which
model is the teacher, what is evaluated against what, and the summary file are library behaviour that
``trtqat demo``, notebooks and tests use the same way.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, UsageError
from .quant.ptq import CalibConfig, PtqResult, QuantConfig


@dataclass(frozen=True)
class EvalOptions:
    """``--val --val-ann --val-images --conf-thres --iou-thres --eval-origin --eval-ptq``."""

    val_dir: Path | None = None
    val_ann: Path | None = None
    val_images: int | None = None
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    origin: bool = False
    ptq: bool = False


@dataclass(frozen=True)
class QuantizeJob:
    """Everything ``trtqat quantize`` was asked to do."""

    ckpt: Path
    repo: Path | None
    calib: CalibConfig
    qconf: QuantConfig = field(default_factory=QuantConfig)
    ptq_out: Path | None = None
    qat_out: Path | None = None
    train_dir: Path | None = None
    qat: object | None = None  # trtqat.quant.qat.QatConfig when QAT runs
    resume: bool = False
    evaluation: EvalOptions = field(default_factory=EvalOptions)

    def validate(self) -> None:
        """Flag combinations that cannot work, as one-line usage errors (exit 2), before any work."""
        ev = self.evaluation
        if self.qat_out is not None and self.train_dir is None:
            raise UsageError("--qat needs --train DIR (images for distillation)", "Add --train with a folder of images")
        if self.train_dir is not None and self.qat_out is None:
            raise UsageError("--train is only used by QAT", "Add --qat qat.pt")
        if self.resume and self.qat_out is None:
            raise UsageError("--resume needs --qat FILE (the run to continue)")
        if ev.val_ann is not None and ev.val_dir is None:
            raise UsageError("--val-ann needs --val DIR (the images it annotates)")
        if ev.val_ann is not None and not Path(ev.val_ann).is_file():
            raise InputError(f"annotation file not found: {ev.val_ann}", "Pass a COCO JSON file")
        if (ev.origin or ev.ptq) and ev.val_dir is None:
            raise UsageError("--eval-origin/--eval-ptq need --val DIR", "Add a folder of validation images")
        if ev.val_dir is not None:  # labelled mAP and label-free agreement mAP are both COCO evaluations:
            from ._deps import require  # fail now, not after calibration or a QAT epoch

            require("pycocotools", purpose="evaluating on --val (COCO mAP)")
        if self.resume:
            from .quant.qat import qat_paths

            if not qat_paths(self.qat_out).state.exists():
                raise InputError(f"nothing to resume: {qat_paths(self.qat_out).state} not found",
                                 "Run without --resume to start QAT")


#: a progress factory: description -> (context manager, advance(n), set_total(n))
ProgressFactory = Callable[[str], tuple[AbstractContextManager, Callable[[int], None], Callable[[int], None]]]


def _no_progress(_: str):
    return contextlib.nullcontext(), (lambda n=1: None), (lambda n: None)


@dataclass
class QuantizeOutcome:
    """``summary`` is what ``--json`` prints: the PTQ summary plus ``qat`` / ``eval`` / ``summary`` keys."""

    summary: dict = field(default_factory=dict)
    ptq: PtqResult | None = None
    is_main: bool = True


def num_classes(model) -> int:
    layers = getattr(model, "model", None)
    return int(getattr(layers[-1], "nc", 80)) if layers is not None and len(layers) else 80


def run_quantize(job: QuantizeJob, *, progress: ProgressFactory = _no_progress,
                 on_epoch: Callable[[dict, bool], None] | None = None) -> QuantizeOutcome:
    """PTQ (unless resuming), QAT when asked, evaluation when ``--val`` is given, summary JSON file.

    Under torchrun every rank runs this; a failure on any rank ends all of them with one error
    (:func:`trtqat.quant.distributed.ranks_fail_together`)."""
    from .quant.distributed import dist_env, ranks_fail_together

    env = dist_env()
    with ranks_fail_together(env):
        return _quantize(job, env, progress, on_epoch)


def _quantize(job: QuantizeJob, env, progress: ProgressFactory, on_epoch) -> QuantizeOutcome:
    from .quant.ptq import run_ptq

    job.validate()
    outcome = QuantizeOutcome(is_main=env.is_main)
    if not env.is_main:  # one progress bar on the terminal: rank 0's (it counts its own share)
        progress = _no_progress
    if not job.resume:
        bar, advance, set_total = progress("calibrating")
        with bar:
            outcome.ptq = run_ptq(job.ckpt, repo=job.repo, calib=job.calib, qconf=job.qconf,
                                  out=job.ptq_out if env.is_main else None, progress=advance, on_total=set_total)
        outcome.summary.update(outcome.ptq.summary())
    model = teacher = outcome.ptq.model if outcome.ptq else None
    if job.qat is not None:
        qat = _run_qat(job, outcome.ptq, progress, on_epoch)
        if not env.is_main:
            return outcome
        model, teacher = qat.model, qat.teacher
        outcome.summary["qat"] = qat.summary()
    if not env.is_main:  # rank 0 evaluates and writes the summary
        return outcome
    if job.evaluation.val_dir is not None:
        outcome.summary["eval"] = evaluate_models(model, teacher, job, final="qat" if job.qat is not None else "ptq")
    target = job.qat_out or job.ptq_out
    if target is not None and ("eval" in outcome.summary or "qat" in outcome.summary):
        from ._io import write_json

        path = Path(target).with_name(f"{Path(target).stem}.summary.json")
        write_json(path, outcome.summary)
        outcome.summary["summary"] = str(path)
    return outcome


#: with --val, every SELECTION_EVERY-th image (sorted order, from the first) picks the best QAT epoch and
#: the others make the final table, so the reported QAT number is not the one it was selected on
SELECTION_EVERY = 4


@dataclass(frozen=True)
class EpochSelection:
    """Where the best QAT epoch is chosen, and which ``--val`` images the final table keeps."""

    source: str  # "val-split" (held-out part of --val) or "train" (fidelity on --train images)
    files: list[Path]  # the images the epochs are scored on
    table_files: list[Path] | None  # --val images left for the final table (None: all of --val)

    def describe(self, labelled: bool) -> dict:
        metric = "mAP@0.5:0.95" if labelled and self.source == "val-split" else "SQNR dB vs float"
        where = (f"{len(self.files)} held-out --val images (every {SELECTION_EVERY}th)" if self.source == "val-split"
                 else f"{len(self.files)} --train images")
        table = (f"the other {len(self.table_files)} --val images" if self.table_files is not None
                 else "all --val images")
        return {"source": self.source, "images": len(self.files), "metric": metric,
                "table_images": len(self.table_files) if self.table_files is not None else None,
                "note": f"best QAT epoch chosen by {metric} on {where}; table on {table}"}


def epoch_selection(job: QuantizeJob, train_files: list[Path]) -> EpochSelection:
    """The deterministic split behind the best-epoch choice (same answer on every call and every rank).

    With ``--val`` of at least two images (after ``--val-images``): every :data:`SELECTION_EVERY`-th
    image selects, the rest is the table. Otherwise the first 32 (or ``--val-images``) ``--train`` images
    select by fidelity to the float model and the table keeps all of ``--val``."""
    from .data.images import find_images

    ev = job.evaluation
    if ev.val_dir is not None:
        files = find_images(ev.val_dir)[:ev.val_images] if ev.val_images else find_images(ev.val_dir)
        if len(files) >= 2:
            held = files[::SELECTION_EVERY]
            return EpochSelection("val-split", held, [f for f in files if f not in set(held)])
    return EpochSelection("train", train_files[:ev.val_images or 32], None)


def _run_qat(job: QuantizeJob, ptq: PtqResult | None, progress: ProgressFactory, on_epoch):
    from .data.images import find_images
    from .eval.evaluate import EvalConfig, epoch_scorer, eval_set
    from .quant.qat import train_qat

    qcfg, ev = job.qat, job.evaluation
    train_files = find_images(job.train_dir)
    ecfg = EvalConfig(size=qcfg.size, batch_size=qcfg.batch_size, conf_thres=ev.conf_thres, iou_thres=ev.iou_thres)
    selection = epoch_selection(job, train_files)
    if selection.source == "val-split":
        scoring = eval_set(ev.val_dir, ecfg, ann=ev.val_ann, nc=num_classes(ptq.model) if ptq else 80,
                           files=selection.files, cache=True)
    else:  # label-free: fidelity to the teacher on training images
        scoring = eval_set(job.train_dir, ecfg, files=selection.files, cache=True, labels=False)
    meta = {}
    if ptq is not None:
        meta = {"family": ptq.loaded.family.name, "source": str(ptq.loaded.path), "size": qcfg.size,
                "ignore": list(ptq.ignore)}
    bar, advance, set_total = progress("QAT")
    set_total(qcfg.epochs * qcfg.iters)
    with bar:
        result = train_qat(ptq.model if ptq else None, train_files, job.qat_out, qcfg, scorer=epoch_scorer(scoring),
                           meta=meta, resume=job.resume, repo=job.repo, progress=advance,
                           on_epoch=(lambda rec: on_epoch(rec, scoring.labelled)) if on_epoch else None)
    result.selection = selection.describe(scoring.labelled)
    return result


def evaluate_models(model, teacher, job: QuantizeJob, *, final: str) -> dict:
    """Evaluate float / PTQ / final on ``--val``: mAP with labels, else fidelity and agreement with the
    float model. Returns the JSON-able table."""
    from .eval.evaluate import EvalConfig, eval_set, evaluate
    from .models import to_device
    from .quant.device import resolve_device

    ev, calib = job.evaluation, job.calib
    device = resolve_device(calib.device)
    ecfg = EvalConfig(size=calib.size, batch_size=calib.batch_size, conf_thres=ev.conf_thres, iou_thres=ev.iou_thres,
                      max_images=ev.val_images)
    selection = epoch_selection(job, []) if job.qat is not None else None  # the table skips its images
    data = eval_set(ev.val_dir, ecfg, ann=ev.val_ann, nc=num_classes(model), cache=True,
                    files=selection.table_files if selection else None)
    reference = None if data.labelled else teacher
    runs = []
    if ev.origin and data.labelled:
        runs.append(("float", teacher, False))
    if ev.ptq and job.qat is not None:
        runs.append(("ptq", teacher, True))
    runs.append((final, model, True))
    rows = []
    for name, m, quantized in runs:
        to_device(m, device)
        if reference is not None:
            to_device(reference, device)
        rows.append(evaluate(m, data, quantized=quantized, reference=reference if quantized else None, name=name))
        to_device(m, "cpu")
    if reference is not None:
        to_device(reference, "cpu")
    return {"labelled": data.labelled, "labels": data.gt.source if data.gt else None, "images": len(data.files),
            "conf_thres": ev.conf_thres, "iou_thres": ev.iou_thres, "origin_skipped": ev.origin and not data.labelled,
            "epoch_selection": selection.describe(data.labelled)["note"] if selection else None,
            "rows": [r.to_dict() for r in rows]}
