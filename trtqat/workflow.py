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
    """PTQ (unless resuming), QAT when asked, evaluation when ``--val`` is given, summary JSON file."""
    from .quant.distributed import dist_env
    from .quant.ptq import run_ptq

    job.validate()
    env = dist_env()
    outcome = QuantizeOutcome(is_main=env.is_main)
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
    if job.evaluation.val_dir is not None:
        outcome.summary["eval"] = evaluate_models(model, teacher, job, final="qat" if job.qat is not None else "ptq")
    target = job.qat_out or job.ptq_out
    if target is not None and ("eval" in outcome.summary or "qat" in outcome.summary):
        from ._io import write_json

        path = Path(target).with_name(f"{Path(target).stem}.summary.json")
        write_json(path, outcome.summary)
        outcome.summary["summary"] = str(path)
    return outcome


def _run_qat(job: QuantizeJob, ptq: PtqResult | None, progress: ProgressFactory, on_epoch):
    from .data.images import find_images
    from .eval.evaluate import EvalConfig, epoch_scorer, eval_set
    from .quant.qat import train_qat

    qcfg, ev = job.qat, job.evaluation
    train_files = find_images(job.train_dir)
    ecfg = EvalConfig(size=qcfg.size, batch_size=qcfg.batch_size, conf_thres=ev.conf_thres, iou_thres=ev.iou_thres,
                      max_images=ev.val_images if ev.val_dir is not None else (ev.val_images or 32))
    if ev.val_dir is not None:
        scoring = eval_set(ev.val_dir, ecfg, ann=ev.val_ann, nc=num_classes(ptq.model) if ptq else 80, cache=True)
    else:  # epoch selection on train images is label-free (fidelity to the teacher)
        scoring = eval_set(job.train_dir, ecfg, files=train_files, cache=True, labels=False)
    meta = {}
    if ptq is not None:
        meta = {"family": ptq.loaded.family.name, "source": str(ptq.loaded.path), "size": qcfg.size,
                "ignore": list(ptq.ignore)}
    bar, advance, set_total = progress("QAT")
    set_total(qcfg.epochs * qcfg.iters)
    with bar:
        return train_qat(ptq.model if ptq else None, train_files, job.qat_out, qcfg, scorer=epoch_scorer(scoring),
                         meta=meta, resume=job.resume, repo=job.repo, progress=advance,
                         on_epoch=(lambda rec: on_epoch(rec, scoring.labelled)) if on_epoch else None)


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
    data = eval_set(ev.val_dir, ecfg, ann=ev.val_ann, nc=num_classes(model), cache=True)
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
            "rows": [r.to_dict() for r in rows]}
