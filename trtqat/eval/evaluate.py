"""Run a (quantized) YOLO model over a folder of images and return metrics — the one entry point.

Preprocessing is the deployment one (letterbox to ``size``, grey 114, RGB, 0..1: :mod:`trtqat.data.images`),
so the numbers describe what the engine will see. A quantized model is evaluated with fake-quant on
(:func:`trtqat.quant.modes.validation_mode`) or as its float self (:func:`~trtqat.quant.modes.quant_disabled`,
the fused float model: ``--eval-origin``). With labels (COCO JSON or YOLO txt) the result has COCO mAP;
with a ``reference`` float model it also has fidelity and agreement mAP (label-free). Each model's output is
read in its own layout (:mod:`trtqat.eval.layouts`: a runner's decoder, else the module's family), so
every layout reaches the same NMS, letterbox un-mapping and metric.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.images import Letterbox, find_images, letterbox, read_rgb
from ..errors import InputError, UsageError
from .boxes import unletterbox, xyxy_to_coco
from .coco_map import coco_map
from .fidelity import AgreementMeter, FidelityMeter, decoded_predictions, fidelity_score
from .labels import GroundTruth, load_ground_truth
from .layouts import decoder_for

#: in-memory cache budget for letterboxed images reused across evaluations (sensitivity, QAT epochs)
CACHE_BYTES = 1 << 30


@dataclass(frozen=True)
class EvalConfig:
    """``--size --batch-size --conf-thres --iou-thres --max-det``; ``gt_conf`` is the agreement threshold."""

    size: int = 640
    batch_size: int = 8
    conf_thres: float = 0.001
    iou_thres: float = 0.65
    max_det: int = 300
    gt_conf: float = 0.25
    max_images: int | None = None

    def __post_init__(self):
        if not 0 <= self.conf_thres < 1:
            raise UsageError(f"--conf-thres must be in [0, 1), got {self.conf_thres}")
        if not 0 < self.iou_thres <= 1:
            raise UsageError(f"--iou-thres must be in (0, 1], got {self.iou_thres}")
        if self.batch_size < 1 or self.size <= 0:
            raise UsageError("--batch-size and --size must be positive")


@dataclass
class EvalSet:
    """The images to evaluate, their ground truth (None: label-free) and an optional decoded-image cache."""

    files: list[Path]
    gt: GroundTruth | None
    cfg: EvalConfig
    cache: bool = False
    _cached: list = field(default_factory=list, repr=False)

    @property
    def labelled(self) -> bool:
        return self.gt is not None

    def batches(self) -> Iterator[tuple[list[Path], np.ndarray, list[Letterbox]]]:
        """Letterboxed float batches with their files and letterbox parameters (unreadable files skipped)."""
        if self._cached:
            yield from self._cached
            return
        keep, files, boxes, images = [], [], [], []
        budget = self.cache and len(self.files) * self.cfg.size ** 2 * 3 * 4 <= CACHE_BYTES
        for path in self.files:
            img = read_rgb(path)
            if img is None:
                continue
            boxed, lb = letterbox(img, self.cfg.size)
            files.append(path), boxes.append(lb), images.append(boxed)
            if len(images) == self.cfg.batch_size:
                item = (files, _to_batch(images), boxes)
                keep.append(item)
                yield item
                files, boxes, images = [], [], []
        if images:
            item = (files, _to_batch(images), boxes)
            keep.append(item)
            yield item
        if not keep:
            raise InputError(f"none of the {len(self.files)} evaluation images could be read", "Check the folder")
        if budget:
            self._cached = keep


def _to_batch(images: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def eval_set(folder: str | Path, cfg: EvalConfig, *, ann: str | Path | None = None, nc: int = 80,
             files: Sequence[Path] | None = None, cache: bool = False, labels: bool = True) -> EvalSet:
    """Find the images of ``folder`` (at most ``cfg.max_images``) and their ground truth.

    ``labels=False`` ignores any labels (label-free fidelity, e.g. on calibration or training images).
    """
    found = list(files) if files is not None else find_images(folder)
    if cfg.max_images:
        found = found[:cfg.max_images]
    gt = load_ground_truth(found, ann, nc) if labels else None
    if gt is not None and gt.missing:
        found = [p for p in found if str(p) in gt.image_ids]
    return EvalSet(files=found, gt=gt, cfg=cfg, cache=cache)


@dataclass
class EvalResult:
    """Metrics of one model on one :class:`EvalSet`."""

    name: str
    images: int = 0
    map: float | None = None
    map50: float | None = None
    fidelity: dict | None = None  # output name -> {"cosine", "sqnr_db"}
    agreement: dict | None = None  # {"map", "map50", "objects"}
    detections: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0  # time inside the model call only (no letterbox, NMS or scoring)
    coco_rows: list[dict] | None = None  # the detections as COCO result rows, when labelled (not in to_dict)
    image_ids: list[int] | None = None  # the COCO image ids scored

    def match_table(self, data: EvalSet):
        """The per-image matches behind :attr:`map`, for bootstrap intervals (:mod:`trtqat.eval.bootstrap`)."""
        from .bootstrap import match_table

        if data.gt is None or self.coco_rows is None:
            raise ValueError("bootstrap intervals need a labelled evaluation")
        return match_table(data.gt.coco, self.coco_rows, self.image_ids)

    def score(self) -> float:
        """mAP@0.5:0.95 when labelled, else mean SQNR (dB) against the reference."""
        if self.map is not None:
            return self.map
        return fidelity_score(self.fidelity) if self.fidelity else float("nan")

    def to_dict(self) -> dict:
        return {"name": self.name, "images": self.images, "map": self.map, "map50": self.map50,
                "fidelity": self.fidelity, "agreement": self.agreement, "detections": self.detections,
                "seconds": round(self.seconds, 2), "forward_seconds": round(self.forward_seconds, 3)}


@contextlib.contextmanager
def model_mode(model, quantized: bool | None):
    """Run ``model`` with fake-quant on (True), off (False: the fused float model) or as it is (None), no grad."""
    from ..quant.modes import quant_disabled, validation_mode

    if quantized is None:  # quantizers exactly as the caller set them (sensitivity analysis)
        with torch.no_grad():
            yield
    elif quantized:
        with validation_mode(model):
            yield
    else:
        with quant_disabled(model), torch.no_grad():
            was = model.training
            model.eval()
            try:
                yield
            finally:
                model.train(was)


def _device(model) -> torch.device:
    """Where ``model`` wants its input; a runner that is no module (ONNX, TensorRT) moves it itself."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def evaluate(model, data: EvalSet, *, quantized: bool | None = True, reference=None, name: str = "",
             progress: Callable[[int], None] | None = None, reference_cache: dict | None = None,
             agreement: bool = True, layout: str | None = None) -> EvalResult:
    """Run ``model`` over ``data``; COCO mAP when labelled; fidelity/agreement when ``reference`` is given.

    Args:
        model: a YOLO module (quantized or not), eval mode; stays on its device.
        quantized: fake-quant on (PTQ/QAT), off (the float model), or None: quantizers as they are.
        reference: a float model (quantizers are disabled while it runs; may be ``model`` itself).
        reference_cache: a dict kept by the caller across calls with the same ``reference`` and data:
            the reference outputs are computed once per batch (sensitivity runs one evaluation per layer).
        progress: called with the number of images after each batch.
        layout: the output layout of a module ``model`` (``yolov5`` / ``ultralytics`` / ``end2end``); default:
            a runner's own, else the module family's (:func:`trtqat.eval.layouts.decoder_for`).
    """
    t0 = time.perf_counter()
    cfg = data.cfg
    res = EvalResult(name=name)
    fid = FidelityMeter() if reference is not None else None
    agree = AgreementMeter(size=cfg.size, gt_conf=cfg.gt_conf) if reference is not None and agreement else None
    detect = data.gt is not None or agree is not None  # NMS is the costly part: only when someone reads it
    dets: list[dict] = []
    device = _device(model)
    nms = {"conf_thres": cfg.conf_thres, "iou_thres": cfg.iou_thres, "max_det": cfg.max_det}
    decoder = decoder_for(model, layout) if detect else None
    ref_decoder = decoder_for(reference) if reference is not None and agree is not None else None
    for b, (files, batch, boxes) in enumerate(data.batches()):
        x = torch.from_numpy(batch).to(device)
        start = time.perf_counter()
        with model_mode(model, quantized):
            out = model(x)
        res.forward_seconds += _finished(out, start)
        found = decoder.detections(out, **nms) if detect else []
        if reference is not None:
            if reference_cache is not None and b in reference_cache and (reference_cache[b][1] is not None
                                                                         or agree is None):
                ref, ref_found = reference_cache[b]
            else:
                with model_mode(reference, False):
                    ref = reference(x.to(_device(reference)))
                ref_found = ref_decoder.detections(ref, **nms) if agree is not None else None
                if reference_cache is not None:
                    reference_cache[b] = (ref, ref_found)
            fid.update(ref, out)
            if agree is not None:
                agree.update(ref_found, found)
        if data.gt is not None:
            dets += _coco_rows(found, files, boxes, data.gt)
        res.detections += sum(int(d.shape[0]) for d in found)
        res.images += len(files)
        if progress:
            progress(len(files))
    if data.gt is not None:
        res.coco_rows, res.image_ids = dets, sorted(data.gt.image_ids.values())
        res.map, res.map50 = coco_map(data.gt.coco, dets, res.image_ids).values()
    if fid is not None:
        res.fidelity = fid.result()
        res.agreement = agree.result() if agree is not None else res.agreement
    res.seconds = time.perf_counter() - t0
    return res


def _finished(out, start: float) -> float:
    """Seconds since ``start`` once ``out`` is computed (CUDA runs asynchronously: wait for it first)."""
    first = decoded_predictions(out)
    if isinstance(first, torch.Tensor) and first.is_cuda:
        torch.cuda.synchronize(first.device)
    return time.perf_counter() - start


def _coco_rows(found: list[torch.Tensor], files: list[Path], boxes: list[Letterbox], gt: GroundTruth) -> list[dict]:
    rows = []
    ncat = len(gt.class_to_category)
    for det, path, lb in zip(found, files, boxes):
        image_id = gt.image_ids.get(str(path))
        if image_id is None or not det.shape[0]:
            continue
        det = det.detach().cpu()
        xywh = xyxy_to_coco(unletterbox(det[:, :4], lb))
        for (x, y, w, h), score, cls in zip(xywh.tolist(), det[:, 4].tolist(), det[:, 5].tolist()):
            if int(cls) < ncat:
                rows.append({"image_id": image_id, "category_id": gt.class_to_category[int(cls)],
                             "bbox": [round(x, 3), round(y, 3), round(w, 3), round(h, 3)], "score": round(score, 5)})
    return rows


def epoch_scorer(data: EvalSet) -> Callable:
    """``scorer(student, teacher) -> (score, metrics)`` used to pick the best QAT epoch.

    Labelled data: mAP@0.5:0.95 of the fake-quant student. Unlabelled: mean SQNR (dB) of the student's
    outputs against the teacher (the float model); no NMS runs then (agreement mAP is not part of the score,
    and NMS over ~30k low-confidence candidates per image dominated the epoch on CPU). Higher is better.
    """
    def scorer(student, teacher) -> tuple[float, dict]:
        res = evaluate(student, data, quantized=True, reference=None if data.labelled else teacher, name="qat",
                       agreement=False)
        return res.score(), res.to_dict()

    return scorer
