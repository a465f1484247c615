"""``trtqat eval``: score several models (checkpoints, ONNX, engines) on one labelled folder, comparably.

Why one job for all formats: the numbers only compare when every model sees the same images, letterboxed
to the same size, and its predictions go through the same NMS and COCO evaluator. The job therefore
checks everything that can be checked before any model runs (files, formats, input sizes, labels,
pycocotools), picks one input size, letterboxes the images once (cached) and runs each model through
:func:`trtqat.eval.evaluate.evaluate`, the function ``trtqat quantize`` evaluates with.

Input size: ``--size`` when given (every model must accept it); else the fixed input size of the models
that have one (they must agree); else the ``size`` an exported ONNX records in its metadata; else 640.

Output layout (:mod:`trtqat.eval.layouts`): ``--layout`` for every model when given, else each model's own
(metadata, detect head, output shape). It is settled on the untimed warm-up batch, before the ground truth
is built with the model's class count, so a wrong layout stops the run in one line before any scoring.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from .._deps import require
from ..errors import InputError, UsageError

DEFAULT_SIZE = 640

#: a progress factory: description -> (context manager, advance(n), set_total(n)), as in trtqat.workflow
ProgressFactory = Callable[[str], tuple[AbstractContextManager, Callable[[int], None], Callable[[int], None]]]


def _no_progress(_: str):
    return contextlib.nullcontext(), (lambda n=1: None), (lambda n: None)


@dataclass(frozen=True)
class EvalJob:
    """Everything ``trtqat eval`` was asked to do."""

    models: tuple[Path, ...]
    val_dir: Path
    val_ann: Path | None = None
    repo: Path | None = None
    size: int | None = None
    batch_size: int = 8
    device: str = "cpu"
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    val_images: int | None = None
    layout: str | None = None  # --layout: yolov5 | ultralytics | end2end (None: each model's own)
    bootstrap: int = 0  # --bootstrap N: resamples of the images for intervals (0: none)

    def validate(self) -> None:
        """Flag values that cannot work (exit 2) and the optional dependency the metric needs."""
        if not self.models:
            raise UsageError("no MODEL given", "Pass one or more .pt / .onnx / .engine files")
        if self.size is not None and self.size <= 0:
            raise UsageError(f"--size must be positive, got {self.size}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise UsageError(f"--device {self.device!r} is not a device", "Use cpu, cuda or cuda:N")
        if self.bootstrap < 0 or 0 < self.bootstrap < 100:
            raise UsageError(f"--bootstrap must be 0 (off) or at least 100 resamples, got {self.bootstrap}",
                             "Use --bootstrap 1000 (percentile intervals need many resamples)")
        if self.val_images is not None and self.val_images < 1:
            raise UsageError(f"--val-images must be >= 1, got {self.val_images}")
        from .layouts import check_layout_name

        check_layout_name(self.layout)
        if self.val_ann is not None and not Path(self.val_ann).is_file():
            raise InputError(f"annotation file not found: {self.val_ann}", "Pass a COCO JSON file")
        require("pycocotools", purpose="trtqat eval (COCO mAP)")


def resolve_size(requested: int | None, runners: Sequence) -> int:
    """The one input size every model is scored at (see module docstring); UsageError when they disagree."""
    fixed = {r.path: r.fixed_size for r in runners if r.fixed_size is not None}
    if requested is not None:
        for r in runners:
            r.check_size(requested)
        return requested
    sizes = set(fixed.values())
    if len(sizes) > 1:
        listed = ", ".join(f"{p.name}: {s}" for p, s in fixed.items())
        raise UsageError(f"the models have different fixed input sizes ({listed})",
                         "Evaluate them separately, or export them at one --size")
    if sizes:
        return sizes.pop()
    recorded = {r.recorded_size for r in runners if getattr(r, "recorded_size", None)}
    return recorded.pop() if len(recorded) == 1 else DEFAULT_SIZE


def _check_labels(files: Sequence[Path], job: EvalJob) -> None:
    from .labels import has_yolo_labels

    if job.val_ann is None and not has_yolo_labels(files):
        raise InputError(f"no labels for the {len(files)} images under {job.val_dir} (no YOLO labels/ folder "
                         "beside images/)", "Add YOLO txt labels or pass --val-ann FILE (COCO JSON)")


def run_eval(job: EvalJob, *, progress: ProgressFactory = _no_progress) -> dict:
    """Score every model of ``job``; returns the JSON-able comparison (``rows`` in the order given)."""
    from ..data.images import find_images
    from .evaluate import EvalConfig, eval_set, evaluate
    from .labels import labels_class_count, yolo_class_floor
    from .runners import open_runner

    job.validate()
    runners = [open_runner(p, repo=job.repo, device=job.device, layout=job.layout) for p in job.models]
    files = find_images(job.val_dir)
    if job.val_images:
        files = files[:job.val_images]
    _check_labels(files, job)
    floor = yolo_class_floor(files) if job.val_ann is None else 1
    for r in runners:
        r.nc_min = floor
        r.probe()
    size = resolve_size(job.size, runners)
    cfg = EvalConfig(size=size, batch_size=job.batch_size, conf_thres=job.conf_thres, iou_thres=job.iou_thres)
    names = _row_names([r.path for r in runners])
    data, rows, nc, tables = None, [], None, {}
    for name, runner in zip(names, runners):
        with runner.activated(size):
            runner.settle(_warm_up(runner, min(job.batch_size, len(files)), size))
            if runner.nc is None:  # an end-to-end output without class names: the labels say how many
                runner.nc = labels_class_count(files, job.val_ann)
                runner.notes.append(f"the model does not name its classes: {runner.nc} classes taken from the labels")
            if data is None:
                data = eval_set(job.val_dir, cfg, ann=job.val_ann, nc=runner.nc, files=files, cache=True)
                nc = runner.nc
            elif runner.nc != nc:
                raise InputError(f"{runner.path} predicts {runner.nc} classes but {runners[0].path} {nc}",
                                 "Compare models trained on the same classes")
            bar, advance, set_total = progress(name)
            set_total(len(data.files))
            with bar:
                res = evaluate(runner, data, quantized=None, name=name, progress=advance)
            if job.bootstrap:
                tables[name] = res.match_table(data)
        rows.append({**res.to_dict(), **runner.describe(),
                     "images_per_s": round(res.images / res.forward_seconds, 2) if res.forward_seconds else None})
    result = {"val": str(job.val_dir), "labels": data.gt.source, "images": len(data.files),
              "objects": data.gt.num_objects, "size": size, "batch_size": job.batch_size,
              "conf_thres": job.conf_thres, "iou_thres": job.iou_thres, "rows": rows}
    if job.bootstrap:
        result["bootstrap"] = _intervals(tables, names, job.bootstrap)
    return result


def _intervals(tables: dict, names: Sequence[str], samples: int) -> dict:
    """95 % bootstrap intervals of each model's mAP@0.5:0.95 and of each model's difference to the first model
    (paired: the same resampled images for all), in points; JSON-able."""
    from .bootstrap import bootstrap

    res = bootstrap(tables, pairs=[(n, names[0]) for n in names[1:]], samples=samples)
    return {**res, "artifacts": {k: v.to_dict() for k, v in res["artifacts"].items()},
            "differences": {k: v.to_dict() for k, v in res["differences"].items()}}


def _warm_up(runner, batch: int, size: int):
    """One untimed batch of grey images, so images/s does not include first-call set-up (kernel selection,
    lazily built grids, CUDA context), which would favour whichever model happens to run later; returns its
    output (which settles the model's output layout)."""
    import torch

    return runner(torch.full((batch, 3, size, size), 114 / 255.0))


def _row_names(paths: Sequence[Path]) -> list[str]:
    """File names, or the full paths when two models share a file name."""
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]
