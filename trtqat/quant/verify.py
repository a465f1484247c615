"""Check an exported ONNX against the PyTorch model it came from, in onnxruntime.

Why the reference is the model in :func:`~trtqat.quant.modes.onnx_export_mode`: that is the exact math the
ONNX encodes (``torch.fake_quantize_*`` with scale = amax/127, round half to even, clamp to the full int8
range [-128, 127], which is what QuantizeLinear/DequantizeLinear compute), so the only differences left
are float summation order and FP16 rounding. pytorch-quantization's own fake-quant kernel clamps to
[-127, 127] instead; comparing against it would add a real difference to the rounding noise.

onnxruntime runs with graph optimizations off: its CPU QDQ fusions (QLinearConv & co.) requantize with
integer arithmetic, which is not what TensorRT computes either.

Tolerance (per output, per batch size; documented in docs/export.md). Two regimes:

- **Float graphs** (``--no-quant``): nothing rounds to int8, so the only differences are float summation
  order. FP32: cosine >= 0.9999 and max abs error <= 1e-3 x max|reference| + 1e-4, or 3x what a 1e-5
  input perturbation moves the torch model (a random-weight YOLOv7 reaches activations of ~4000 and moves
  a few outputs by more). FP16: cosine >= 0.999 or within 3x the model's FP16 noise floor (below).
- **Q/DQ graphs**: torch and onnxruntime sum convolutions in different orders, so a value within ~1e-6 of
  an int8 rounding boundary rounds to the neighbouring level on one side (0.05% of the elements after the
  second conv of the test model). Each such flip is a full quantization step and propagates; on a
  sensitive network (random weights, decoded boxes = (2·sigmoid)²·anchor) the end-to-end difference grows
  to the size of the quantization noise itself. A fixed bound is wrong both ways (too loose for a trained
  model, too tight for a chaotic one), so the bound is **relative to the model's own noise floor**: the
  same torch model is run on the input plus a 1e-5 perturbation, which triggers the same kind of
  rounding flips; the ONNX passes when its error is at most ``FLOOR_FACTOR`` (3) times that floor, or
  above the static cosine (0.999 FP32 / 0.998 FP16) when the floor is tighter. On a trained YOLO the
  floor is ~1 - 1e-5 and the check is tight; on the random-weight test fixtures it is ~0.94-0.995. A
  structural error (a wrong head, grid, batch handling, Resize, NaN) exceeds it. Both numbers are
  reported. FP16 graphs (float or Q/DQ) get the same treatment with a 1e-3 perturbation, the size of FP16
  rounding. Because end-to-end comparison cannot see a single wrong scale on a noisy model, quantized
  exports are also checked exactly by :func:`qdq_param_problems`.

**Per part, on the detections that matter.** One cosine over the whole decoded output ``[B, N, 5 + nc]``
is dominated by the box coordinates in pixels: on a real trained YOLOv5n, reversing every class score
still gave 0.9999998, shuffling objectness 0.9999999 and setting every score to 0.5 gave 0.99999, and the
max error (7-38 px) came from low-confidence boxes far outside the image. So a YOLO head output (last axis
``5 + nc``, decoded or raw) is checked in four parts, each against its own noise floor:

- ``boxes``: cosine and max abs error of the 4 box values (pixels, or raw logits) on the rows that matter:
  reference confidence (objectness x best class score) above ``CONF_MATTERS`` (0.25, the usual deployment
  threshold), plus the ``TOP_ROWS`` (100) most confident rows (an input without objects still has some);
- ``objectness``: the correlation (cosine of the mean-removed values) of the objectness *logits* over
  all rows (a background row turned confident is an error too), clipped to logit(1 - 1e-3) so
  FP16-saturated probabilities compare equal; max abs error of the probability on the rows that matter;
- ``classes``: the same correlation of the class logits on the rows that matter, centred per row (the
  logits relative to each other decide the class; the class of a background row decides nothing and
  is the noisiest: 0.9990 over all rows against 0.99985 on the rows that matter, trained YOLOv5);
  max abs error of the class probabilities there. A correlation cannot be fooled by the large common
  offset of background logits, and a constant output (every score 0.5) has none;
- ``top class``: the share of the rows that matter whose best class is the same, or a tie in the
  reference (scores within ``CLASS_TIE``, 1e-3) (max abs error of the confidence on those rows); its
  minimum is ``TOP_CLASS_MIN`` (0.9), not the similarity bound: a share of rows moves in whole rows.

**Per output layout** (``layout``: the model family's ``FamilyInfo.output_layout``; the parts above are
those of ``yolov5`` ``[B, N, 5 + nc]``). The other layouts have no objectness, so their parts differ:

- ``ultralytics`` ``[B, 4 + nc, N]`` (YOLOv8, YOLO11, YOLO26 one-to-many): read as ``N`` rows of
  ``xywh + nc`` class probabilities. A row's confidence is its best class score (what Ultralytics' NMS
  thresholds), which decides the rows that matter. ``boxes`` as above; ``confidence``: correlation of
  the clipped confidence logits over all rows (the role of objectness: which anchors are detections);
  ``classes`` and ``top class`` as above; ``top detections``: per image, the share of the reference's
  detections (confidence above ``CONF_MATTERS``, its ``TOP_ROWS`` best at most: ``T`` rows) that are also
  among the ONNX's ``T`` most confident rows, a reference row within ``CLASS_TIE`` of the reference's own
  cutoff counting as kept (a tie at the edge of the set, which either side may keep). Max abs errors: of
  the confidence, of the class probabilities for ``classes``.
- ``end2end`` ``[B, K, 6]`` (YOLO26 with its one-to-one head: rows ``x1, y1, x2, y2, score, class`` already
  selected by top-k in the graph). There is no fixed row order to compare: the selection is a top-k over
  scores, and two candidates whose scores are within rounding noise of each other swap places, or one
  enters the set at the cutoff while the other leaves (the class of a row is the argmax of near-tied
  scores in the same way; an untrained head ties every score exactly, and torch and onnxruntime break the
  tie differently). So the rows are compared as **matched pairs**, per image: each reference row that
  matters (score above ``CONF_MATTERS`` or among the ``TOP_ROWS`` best) is paired with the unpaired ONNX row
  of the largest IoU (at least ``MATCH_IOU``; one of the same class preferred unless another overlaps
  ``CLASS_BONUS`` more; of the same box and class, the closest score); and the same the other way round.
  ``detections``: the share of the rows that matter, both ways, that found a twin, a row whose score is
  within ``CLASS_TIE`` of the other side's lowest selected score counting as found (it is at the cutoff);
  max abs error of the paired boxes. ``boxes``: cosine and max abs error (pixels) of the paired boxes;
  ``scores``: correlation of the paired clipped score logits, max abs error of the scores; ``classes``: the
  share of pairs with the same class, max abs difference of the class ids (0 when all agree). With no
  pair at all (every row a tie of the cutoff), ``detections`` decides and the others compare nothing.

Shares (``top class``, ``top detections``, ``detections``, end2end ``classes``) have the minimum
``TOP_CLASS_MIN``; every part is held to the same noise floor rule, measured the same way on the torch
model against itself. Any other output (a model that is not a YOLO head) is compared whole, as ``all``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import VerificationError
from ..models.family import LAYOUT_END2END, LAYOUT_ULTRALYTICS, LAYOUT_YOLOV5
from .modes import onnx_export_mode, quant_disabled
from .onnx_trace import HeadSelect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    """Pass when cosine >= ``min_cosine`` and (if ``rel_max_abs`` is set) max abs <= rel x max|ref| + abs."""

    min_cosine: float
    rel_max_abs: float | None = None
    abs_floor: float = 1e-4

    def limit(self, ref_max: float) -> float | None:
        return None if self.rel_max_abs is None else self.rel_max_abs * ref_max + self.abs_floor


#: (graph dtype, quantized) -> tolerance; see the module docstring for why Q/DQ graphs are looser
TOLERANCES = {("fp32", False): Tolerance(min_cosine=0.9999, rel_max_abs=1e-3),
              ("fp16", False): Tolerance(min_cosine=0.999),
              ("fp32", True): Tolerance(min_cosine=0.999),
              ("fp16", True): Tolerance(min_cosine=0.998)}
#: Q/DQ graphs: the allowed error is this many times the torch-vs-perturbed-torch error (the noise floor)
FLOOR_FACTOR = 3.0
#: relative size of the input perturbation that measures the noise floor: int8 rounding flips (FP32 Q/DQ
#: graphs) need only a tiny nudge; FP16 graphs also round every float op at ~1e-3 relative
FLOOR_EPS = {"fp32": 1e-5, "fp16": 1e-3}
#: a row (one anchor at one place) matters when its reference confidence is above this ...
CONF_MATTERS = 0.25
#: ... or it is among this many most confident rows
TOP_ROWS = 100
#: two classes whose reference scores are this close are a tie: either is the same top class
CLASS_TIE = 1e-3
#: scores are compared as logits clipped to +-logit(1 - SCORE_EPS): beyond it FP16 probabilities saturate
SCORE_EPS = 1e-3
#: the top-class agreement must reach at least this share of the rows that matter (or the noise-floor bound,
#: when lower). It is a count, not a similarity: one row whose two best classes are close flips with any
#: rounding difference, and a trained YOLOv7 QAT export agreed on 96 % of its confident rows at batch 4
#: while every other part passed (benchmarks/accuracy.py: the same mAP through onnxruntime). Wholesale
#: class errors sit far below (reversed classes 0-0.3, every score 0.5 ~0.02); the fine-grained check of the
#: class scores is the ``classes`` correlation.
TOP_CLASS_MIN = 0.9
#: the parts of a YOLO head output, in report order, and the similarity measure of each
PARTS = {"boxes": "cosine", "objectness": "correlation", "classes": "correlation", "top class": "agreement"}
#: the same per output layout (see the module docstring); ``PARTS`` is the yolov5 one
LAYOUT_PARTS = {
    LAYOUT_YOLOV5: PARTS,
    LAYOUT_ULTRALYTICS: {"boxes": "cosine", "confidence": "correlation", "classes": "correlation",
                         "top class": "agreement", "top detections": "agreement"},
    LAYOUT_END2END: {"detections": "agreement", "boxes": "cosine", "scores": "correlation", "classes": "agreement"},
}
#: end2end rows pair up at this IoU at least (a rounding flip moves a box by a few pixels; a different
#: object, or the same anchor's box from a broken graph, does not overlap half of it)
MATCH_IOU = 0.5
#: ... and a row of the same class is preferred unless another overlaps by more than this much IoU
CLASS_BONUS = 0.01
#: two boxes whose IoUs with a row differ by less than this are the same box (float summation noise)
SAME_BOX = 1e-3


@dataclass
class OutputCheck:
    """One part of one output at one batch size. ``cosine`` is the similarity named by ``measure``
    (cosine, correlation or agreement, 1 = identical; the key keeps its name for existing readers)."""

    graph: str  # "fp32" | "fp16": which ONNX was run
    batch: int
    output: str
    max_abs: float
    ref_max: float
    cosine: float
    limit_max_abs: float | None
    min_cosine: float
    passed: bool
    floor_cosine: float | None = None  # torch vs torch on a 1e-5-perturbed input (Q/DQ graphs only)
    part: str = "all"  # "all" | "boxes" | "objectness" | "classes" | "top class"
    measure: str = "cosine"
    rows: int | None = None  # rows measured (the rows that matter for boxes / max abs errors)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    source: str  # "images:<dir>" or "seeded noise"
    checks: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict:
        return {"source": self.source, "passed": self.passed, "checks": [c.to_dict() for c in self.checks]}


def verification_inputs(size: int, batch: int, calib_dir: str | Path | None, seed: int = 0) -> tuple[np.ndarray, str]:
    """``batch`` letterboxed calibration images (repeated when there are fewer), or seeded noise."""
    if calib_dir is None:
        from ..data.images import seeded_noise

        return seeded_noise(batch, size, seed), "seeded noise"
    from ..data.images import image_stream

    arr = next(iter(image_stream(calib_dir, size, batch_size=batch, max_batches=1)))
    if len(arr) < batch:
        arr = np.concatenate([arr] * -(-batch // len(arr)))[:batch]
    return np.ascontiguousarray(arr), f"images:{calib_dir}"


def torch_reference(model, x: np.ndarray, *, head: str, quantized: bool) -> list[np.ndarray]:
    """The model's outputs on ``x`` with the ONNX's semantics (see module docstring)."""
    wrapper = HeadSelect(model, head).eval()
    ctx = onnx_export_mode(model) if quantized else quant_disabled(model)
    with ctx, torch.no_grad():
        out = wrapper(torch.from_numpy(x))
    out = out if isinstance(out, (list, tuple)) else [out]
    return [o.detach().float().numpy() for o in out]


def ort_session(onnx_bytes: bytes):
    """A CPU onnxruntime session with graph optimizations off (the ONNX's own math, no QDQ fusions)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(max abs error, max |ref|, cosine similarity) over the flattened tensors (float64)."""
    r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    if not r.size:
        return 0.0, 0.0, 1.0
    return float(np.abs(r - g).max()), float(np.abs(r).max()), _cosine(r, g)


def _cosine(r: np.ndarray, g: np.ndarray) -> float:
    denom = np.linalg.norm(r) * np.linalg.norm(g)
    return float(r @ g / denom) if denom > 0 else float(np.array_equal(r, g))


def correlation(ref: np.ndarray, got: np.ndarray) -> float:
    """Cosine of the mean-removed values (Pearson's r); 1 for two equal constants, 0 for one constant."""
    r, g = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    return _cosine(r - r.mean(), g - g.mean()) if r.size else 1.0


def is_yolo_head(out: np.ndarray) -> bool:
    """A YOLO head output: last axis ``5 + nc`` (xywh, objectness, class scores), decoded or raw."""
    return out.ndim >= 2 and out.shape[-1] >= 6


def _scores(t: np.ndarray, decoded: bool) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, clipped logits) of the objectness + class columns of ``t`` [rows, 5 + nc]."""
    limit = float(np.log((1 - SCORE_EPS) / SCORE_EPS))
    s = t[:, 4:].astype(np.float64)
    if decoded:
        p = np.clip(s, SCORE_EPS, 1 - SCORE_EPS)
        return s, np.log(p / (1 - p))
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-s)), np.clip(s, -limit, limit)


def matter_rows(ref: np.ndarray, decoded: bool) -> np.ndarray:
    """Indices of the rows of ``ref`` [rows, 5 + nc] that matter (see the module docstring)."""
    p, _ = _scores(ref, decoded)
    conf = p[:, 0] * p[:, 1:].max(1)
    top = np.argsort(-conf, kind="stable")[:TOP_ROWS]
    return np.union1d(np.nonzero(conf > CONF_MATTERS)[0], top)


def head_parts(ref: np.ndarray, got: np.ndarray, *, decoded: bool) -> dict[str, tuple[float, float, float, int]]:
    """Per part of a YOLO head output: (similarity, max abs error, max |ref|, rows); see the module docstring."""
    r, g = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
    rows = matter_rows(r, decoded)
    (pr, lr), (pg, lg) = _scores(r, decoded), _scores(g, decoded)
    box_err, box_max, box_cos = compare(r[rows, :4], g[rows, :4])
    obj_err = float(np.abs(pr[rows, 0] - pg[rows, 0]).max())
    cr, cg = lr[rows, 1:], lg[rows, 1:]
    if cr.shape[1] > 1:  # what decides the class is the logits relative to each other
        cr, cg = cr - cr.mean(1, keepdims=True), cg - cg.mean(1, keepdims=True)
    cls_err = float(np.abs(pr[rows, 1:] - pg[rows, 1:]).max())
    conf_r, conf_g = pr[rows, 0] * pr[rows, 1:].max(1), pg[rows, 0] * pg[rows, 1:].max(1)
    ref_cls = pr[rows, 1:]
    picked = ref_cls[np.arange(len(rows)), pg[rows, 1:].argmax(1)]  # the reference's score of the ONNX's class
    same = float(np.mean(picked >= ref_cls.max(1) - CLASS_TIE))
    n = len(rows)
    return {"boxes": (box_cos, box_err, box_max, n),
            "objectness": (correlation(lr[:, 0], lg[:, 0]), obj_err, 1.0, n),
            "classes": (correlation(cr, cg), cls_err, 1.0, n),
            "top class": (same, float(np.abs(conf_r - conf_g).max()), 1.0, n)}


def measure_output(ref: np.ndarray, got: np.ndarray, *, decoded: bool,
                   layout: str | None = None) -> dict[str, tuple[float, float, float, int | None]]:
    """Part -> (similarity, max abs error, max |ref|, rows): the parts of a YOLO head output in ``layout``
    (None: ``yolov5`` when the last axis can be ``5 + nc``), else one ``all`` entry (cosine over the whole
    tensor)."""
    if layout == LAYOUT_ULTRALYTICS and ref.ndim == 3 and ref.shape[1] >= 5:
        return ultralytics_parts(ref, got)
    if layout == LAYOUT_END2END and ref.ndim == 3 and ref.shape[-1] == 6:
        return end2end_parts(ref, got)
    if layout in (None, LAYOUT_YOLOV5) and is_yolo_head(ref):
        return head_parts(ref, got, decoded=decoded)
    max_abs, ref_max, cos = compare(ref, got)
    return {"all": (cos, max_abs, ref_max, None)}


def _logit(p: np.ndarray) -> np.ndarray:
    """Logits of probabilities, clipped to +-logit(1 - SCORE_EPS) (FP16 saturation)."""
    p = np.clip(p.astype(np.float64), SCORE_EPS, 1 - SCORE_EPS)
    return np.log(p / (1 - p))


def ultralytics_parts(ref: np.ndarray, got: np.ndarray) -> dict[str, tuple[float, float, float, int]]:
    """The parts of an ``[B, 4 + nc, N]`` output (decoded xywh, class probabilities); see the module docstring."""
    r = ref.transpose(0, 2, 1).reshape(-1, ref.shape[1]).astype(np.float64)
    g = got.transpose(0, 2, 1).reshape(-1, got.shape[1]).astype(np.float64)
    pr, pg = r[:, 4:], g[:, 4:]
    conf_r, conf_g = pr.max(1), pg.max(1)
    top = np.argsort(-conf_r, kind="stable")[:TOP_ROWS]
    rows = np.union1d(np.nonzero(conf_r > CONF_MATTERS)[0], top)
    n = len(rows)
    box_err, box_max, box_cos = compare(r[rows, :4], g[rows, :4])
    conf_err = float(np.abs(conf_r[rows] - conf_g[rows]).max())
    cr, cg = _logit(pr[rows]), _logit(pg[rows])
    if cr.shape[1] > 1:  # which class: the logits relative to each other
        cr, cg = cr - cr.mean(1, keepdims=True), cg - cg.mean(1, keepdims=True)
    picked = pr[rows][np.arange(n), pg[rows].argmax(1)]
    same = float(np.mean(picked >= pr[rows].max(1) - CLASS_TIE))
    kept, detections = _top_detections(conf_r.reshape(len(ref), -1), conf_g.reshape(len(got), -1))
    return {"boxes": (box_cos, box_err, box_max, n),
            "confidence": (correlation(_logit(conf_r), _logit(conf_g)), conf_err, 1.0, n),
            "classes": (correlation(cr, cg), float(np.abs(pr[rows] - pg[rows]).max()), 1.0, n),
            "top class": (same, conf_err, 1.0, n),
            "top detections": (kept / detections if detections else 1.0, conf_err, 1.0, detections)}


def _top_detections(conf_r: np.ndarray, conf_g: np.ndarray) -> tuple[int, int]:
    """(kept, total) over the images of ``[B, N]`` confidences: the reference's detections (confidence above
    CONF_MATTERS, its TOP_ROWS best at most) that are among the ONNX's as many best rows, or within CLASS_TIE
    of the reference's own cutoff (a tie at the edge of the set, which either side may keep). Only the
    reference's ties count: an ONNX whose scores are all equal ties everything and keeps nothing in order."""
    kept = total = 0
    for cr, cg in zip(conf_r, conf_g):
        t = min(int((cr > CONF_MATTERS).sum()), TOP_ROWS)
        if not t:
            continue
        ours = np.argsort(-cr, kind="stable")[:t]
        theirs = np.argsort(-cg, kind="stable")[:t]
        ok = np.isin(ours, theirs) | (cr[ours] <= cr[ours[-1]] + CLASS_TIE)
        kept += int(ok.sum())
        total += t
    return kept, total


def _matter(scores: np.ndarray) -> np.ndarray:
    """Indices of the end2end rows that matter (score above CONF_MATTERS, or among the TOP_ROWS best)."""
    order = np.argsort(-scores, kind="stable")
    return np.union1d(np.nonzero(scores > CONF_MATTERS)[0], order[:TOP_ROWS])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every xyxy box of ``a`` with every one of ``b``.

    Corners are ordered first (an untrained head writes x2 < x1: the same inverted box on both sides is still
    the same box) and a zero-area box has IoU 1 with an identical one, 0 with any other.
    """
    def corners(x):
        return np.concatenate([np.minimum(x[:, :2], x[:, 2:4]), np.maximum(x[:, :2], x[:, 2:4])], 1)

    a, b = corners(a[:, :4]), corners(b[:, :4])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    same = np.all(a[:, None, :] == b[None, :, :], -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), same.astype(np.float64))


def match_detections(a: np.ndarray, b: np.ndarray) -> tuple[list[tuple[int, int]], int, int]:
    """Pair the rows of ``a`` that matter (``[K, 6]`` end2end rows) with rows of ``b``, best score first: the
    unpaired row of ``b`` with the largest IoU >= MATCH_IOU, where one of the same class counts CLASS_BONUS
    more (the same box in two classes is two rows), and of the same box (IoU within SAME_BOX) and class
    the closest score.

    Returns (pairs (i in a, j in b), rows of ``a`` that matter, of those the unpaired ones at ``b``'s cutoff:
    score within CLASS_TIE of ``b``'s lowest selected score).
    """
    rows = _matter(a[:, 4])
    rows = rows[np.argsort(-a[rows, 4], kind="stable")]
    iou = _iou(a[rows, :4], b[:, :4]) if len(b) else np.zeros((len(rows), 0))
    free = np.ones(len(b), dtype=bool)
    pairs, at_cut = [], 0
    cut = float(b[:, 4].min()) if len(b) else np.inf
    for k, i in enumerate(rows):
        cand = np.nonzero(free & (iou[k] >= MATCH_IOU))[0]
        if len(cand):
            key = iou[k, cand] + CLASS_BONUS * (b[cand, 5] == a[i, 5])
            best = cand[key >= key.max() - SAME_BOX]
            j = int(best[np.argmin(np.abs(b[best, 4] - a[i, 4]))])
            free[j] = False
            pairs.append((int(i), j))
        elif a[i, 4] <= cut + CLASS_TIE:
            at_cut += 1
    return pairs, len(rows), at_cut


def end2end_parts(ref: np.ndarray, got: np.ndarray) -> dict[str, tuple[float, float, float, int]]:
    """The parts of a ``[B, K, 6]`` end-to-end output, compared as matched pairs; see the module docstring."""
    found = total = 0
    boxes_r, boxes_g, score_r, score_g, cls_r, cls_g = [], [], [], [], [], []
    for r, g in zip(ref.astype(np.float64), got.astype(np.float64)):
        pairs, n, at_cut = match_detections(r, g)
        back, n_back, at_cut_back = match_detections(g, r)
        found += len(pairs) + at_cut + len(back) + at_cut_back
        total += n + n_back
        for i, j in pairs:
            boxes_r.append(r[i, :4])
            boxes_g.append(g[j, :4])
            score_r.append(r[i, 4])
            score_g.append(g[j, 4])
            cls_r.append(r[i, 5])
            cls_g.append(g[j, 5])
    n = len(boxes_r)
    if not n:  # nothing paired: ``detections`` decides (rows left unpaired only as ties of the cutoff pass)
        return {"detections": (found / total if total else 1.0, 0.0, 1.0, total), "boxes": (1.0, 0.0, 0.0, 0),
                "scores": (1.0, 0.0, 1.0, 0), "classes": (1.0, 0.0, 1.0, 0)}
    box_err, box_max, box_cos = compare(np.array(boxes_r), np.array(boxes_g))
    sr, sg = np.array(score_r), np.array(score_g)
    cr, cg = np.array(cls_r), np.array(cls_g)
    return {"detections": (found / total, box_err, box_max, total),
            "boxes": (box_cos, box_err, box_max, n),
            "scores": (correlation(_logit(sr), _logit(sg)), float(np.abs(sr - sg).max()), 1.0, n),
            "classes": (float(np.mean(cr == cg)), float(np.abs(cr - cg).max()), float(max(np.abs(cr).max(), 1.0)), n)}


def model_layout(model, head: str) -> str | None:
    """The output layout of ``model``'s decoded head (its family's ``output_layout``); None for the raw head or
    a model of no known family (then the output's shape decides, as for YOLOv5)."""
    if head != "decoded":
        return None
    from ..models.family import detect_family

    return detect_family(model).output_layout or None


def check_graphs(model, graphs: dict[str, bytes], *, size: int, head: str, quantized: bool,
                 batches: list[int], calib_dir: str | Path | None, layout: str | None = None) -> VerifyReport:
    """Run every ONNX in ``graphs`` (label -> serialized model) at each batch size against the torch model.

    ``layout`` names the output layout whose parts are compared (default: :func:`model_layout`)."""
    layout = layout if layout is not None else model_layout(model, head)
    x_all, source = verification_inputs(size, max(batches), calib_dir)
    report = VerifyReport(source=source)
    sessions = {label: ort_session(data) for label, data in graphs.items()}
    for batch in batches:
        x = x_all[:batch]
        refs = torch_reference(model, x, head=head, quantized=quantized)
        floors = {label: noise_floor(model, x, refs, head=head, quantized=quantized, eps=FLOOR_EPS[label],
                                     layout=layout)
                  for label in sessions}
        for label, sess in sessions.items():
            names = [o.name for o in sess.get_outputs()]
            outs = sess.run(None, {sess.get_inputs()[0].name: x})
            if len(outs) != len(refs):
                raise VerificationError(f"the ONNX has {len(outs)} outputs but the model returns {len(refs)}")
            tol = TOLERANCES[(label, quantized)]
            for name, ref, got, floor in zip(names, refs, outs, floors[label]):
                if ref.shape != got.shape:
                    raise VerificationError(f"output {name!r} has shape {list(got.shape)} in the ONNX but "
                                            f"{list(ref.shape)} in PyTorch at batch {batch}")
                measured = measure_output(ref, got, decoded=head == "decoded", layout=layout)
                measures = LAYOUT_PARTS.get(layout or LAYOUT_YOLOV5, PARTS)
                for part, (sim, max_abs, ref_max, rows) in measured.items():
                    floor_sim, floor_abs = floor[part][:2]
                    limit = tol.limit(ref_max)
                    if limit is not None:  # a chaotic float model moves a few elements by more than 1e-3 x max
                        limit = max(limit, FLOOR_FACTOR * floor_abs)
                    fixed = TOP_CLASS_MIN if measures.get(part) == "agreement" else tol.min_cosine
                    min_sim = min(fixed, 1 - FLOOR_FACTOR * (1 - floor_sim))
                    ok = bool(np.isfinite(max_abs) and np.isfinite(sim)) and sim >= min_sim and (
                        limit is None or max_abs <= limit)
                    report.checks.append(OutputCheck(
                        label, batch, name, max_abs, ref_max, sim, limit, round(min_sim, 6), ok,
                        floor_sim if quantized or label == "fp16" else None, part=part,
                        measure=measures.get(part, "cosine"), rows=rows))
    return report


def noise_floor(model, x: np.ndarray, refs: list[np.ndarray], *, head: str, quantized: bool,
                eps: float, layout: str | None = None) -> list[dict[str, tuple]]:
    """Per output, :func:`measure_output` of the torch outputs on ``x`` against those on ``x`` perturbed by
    ``eps`` (relative): how much rounding alone (int8 flips, FP16, summation order) moves each part."""
    rng = np.random.default_rng(1)
    scale = eps * max(float(np.abs(x).max()), 1e-6)
    bumped = (x + scale * rng.standard_normal(x.shape)).astype(np.float32)
    return [{part: (sim, max_abs) for part, (sim, max_abs, _, _) in
             measure_output(r, p, decoded=head == "decoded", layout=layout).items()}
            for r, p in zip(refs, torch_reference(model, bumped, head=head, quantized=quantized))]


#: ops whose input 1 is a weight that pytorch-quantization quantizes per channel
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: suffixes the export adds to initializer names (FP16 conversion: ``<name>_float16``)
_DTYPE_SUFFIXES = ("_float16", "_float32")


def weight_module_name(initializer: str) -> str | None:
    """The dotted torch module name a weight initializer of a trtqat export belongs to, or None.

    The TorchScript exporter names parameters by their path from the traced module, which is
    :class:`~trtqat.quant.onnx_trace.HeadSelect` (attribute ``model``): ``model.model.22.dfl.conv.weight``
    is module ``model.22.dfl.conv``; the FP16 conversion appends ``_float16``. The one place that maps ONNX
    weight names back to modules.
    """
    for suffix in _DTYPE_SUFFIXES:
        if initializer.endswith(suffix):
            initializer = initializer[: -len(suffix)]
    if not initializer.startswith("model.") or not initializer.endswith(".weight"):
        return None
    return initializer[len("model."):-len(".weight")]


def qdq_param_problems(model, onnx_model, *, rtol: float = 1e-6) -> list[str]:
    """Exact structural check of the Q/DQ parameters against the torch quantizers.

    A Q/DQ node is a weight's when its data input is a constant (through Casts), or, for a DQ, the output of
    such a Q (or an int8 constant); every other one is an activation's. Then:

    - every activation scale must be per-tensor and some enabled activation quantizer's ``amax/127``, and
      every such quantizer must appear;
    - every weight scale must be the ``amax/127`` vector of the weight quantizer of the module the weight
      belongs to (:func:`weight_module_name`; by value among the weight quantizers of the same size when the
      name does not resolve). Its size is the module's output channels, 1 for a single-output-channel conv
      (the DFL integral conv of YOLOv8/YOLO11, a one-class head): the node kind, not the scale size, says
      weight or activation;
    - a conv (any op of ``WEIGHTED_OPS``) whose weights reach it without Q/DQ must be float in the model
      (no enabled weight quantizer: the convs kept float, such as Ultralytics' DFL and head output convs),
      and every enabled weight quantizer must have its Q/DQ in the ONNX.

    End-to-end output comparison cannot see a single wrong scale on a network whose outputs are dominated
    by rounding noise; this can. ``rtol`` 1e-3 for FP16 scales.
    """
    from onnx import numpy_helper

    from .quantizers import is_weight_quantizer, named_quantizers, quant_bound

    acts, weights = [], {}
    for name, q in named_quantizers(model):
        if q._disabled or getattr(q, "_amax", None) is None:
            continue
        amax = q._amax.detach().float().cpu().numpy().ravel() / float(quant_bound(q))
        if is_weight_quantizer(name):
            weights[name.rsplit(".", 1)[0]] = amax
        else:
            acts.append((name, amax))
    graph = onnx_model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    producer = {out: n for n in graph.node for out in n.output}

    def const_source(t: str) -> str | None:
        """The constant ``t`` is (through Cast/Identity nodes), by name; None for a run-time tensor."""
        for _ in range(8):
            if t in consts:
                return t
            node = producer.get(t)
            if node is None or node.op_type not in ("Cast", "Identity"):
                return None
            t = node.input[0]
        return None

    def weight_source(t: str) -> tuple[str | None, object]:
        """(name of the constant weight behind tensor ``t``, the Q/DQ node it passes through or None)."""
        node = producer.get(t)
        while node is not None and node.op_type in ("Cast", "Identity"):
            t = node.input[0]
            node = producer.get(t)
        if node is not None and node.op_type == "DequantizeLinear":
            src = const_source(node.input[0])
            q = producer.get(node.input[0])
            if src is None and q is not None and q.op_type == "QuantizeLinear":
                src = const_source(q.input[0])
            return src, node
        return const_source(t), None

    problems, seen_acts, seen_weights = [], set(), set()
    act_values = np.array([a[0] for _, a in acts], dtype=np.float64)
    weight_qdq: set[str] = set()  # outputs of the weight Q/DQ nodes (checked through the weighted op they feed)
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        src, dq = weight_source(node.input[1])
        if src is None:  # a run-time tensor (attention MatMul): activations on both inputs, checked below
            continue
        module = weight_module_name(src)
        if dq is None:
            if module in weights:
                problems.append(f"{node.name}: weights reach it without Q/DQ but {module} has an enabled weight "
                                "quantizer")
            continue
        weight_qdq.add(dq.output[0])
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            weight_qdq.add(q.output[0])
        for qdq in (q, dq) if q is not None and q.op_type == "QuantizeLinear" else (dq,):
            scale = _scale(qdq, consts)
            if scale is None:
                problems.append(f"{qdq.name}: scale is not a constant")
                continue
            if module is not None and module in weights:
                ok = weights[module].size == scale.size and np.allclose(weights[module], scale, rtol=rtol, atol=0)
                if not ok:
                    problems.append(f"{qdq.name}: {scale.size} weight scale(s) differ from the amax/127 of "
                                    f"{module}._weight_quantizer ({weights[module].size} channels)")
                seen_weights.add(module)
            elif module is not None and module not in weights and _is_module(model, module):
                problems.append(f"{qdq.name}: Q/DQ on the weights of {module}, which is float in the model")
            else:  # a name that does not resolve: by value
                hit = [m for m, w in weights.items() if w.size == scale.size and np.allclose(w, scale, rtol=rtol, atol=0)]
                if not hit:
                    problems.append(f"{qdq.name}: per-channel scale matches no weight quantizer's amax/127")
                seen_weights.update(hit)
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.output[0] in weight_qdq:
            continue
        scale = _scale(node, consts)
        if scale is None:
            problems.append(f"{node.name}: scale is not a constant")
            continue
        if const_source(node.input[0]) is not None:
            continue  # a weight Q/DQ no weighted op reads: nothing to compare it with
        if scale.size != 1:
            problems.append(f"{node.name}: an activation quantized per channel ({scale.size} scales)")
            continue
        hit = np.nonzero(np.isclose(act_values, scale[0], rtol=rtol, atol=0))[0]
        if not len(hit):
            problems.append(f"{node.name}: scale {scale[0]:.6g} matches no activation quantizer's amax/127")
        seen_acts.update(acts[i][0] for i in hit)
    problems += [f"quantizer {name} has no Q/DQ node in the ONNX" for name, _ in acts if name not in seen_acts]
    problems += [f"quantizer {m}._weight_quantizer has no Q/DQ node in the ONNX" for m in weights
                 if m not in seen_weights]
    return problems


def _scale(node, consts: dict) -> np.ndarray | None:
    scale = consts.get(node.input[1]) if len(node.input) > 1 else None
    return None if scale is None else np.asarray(scale, dtype=np.float64).ravel()


def _is_module(model, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def require_passed(report: VerifyReport) -> None:
    """Raise VerificationError naming the worst failing check."""
    failed = [c for c in report.checks if not c.passed]
    if not failed:
        return
    c = min(failed, key=lambda c: c.cosine - c.min_cosine)
    limit = f", limit {c.limit_max_abs:.3g}" if c.limit_max_abs is not None else ""
    part = f" ({c.part})" if c.part != "all" else ""
    raise VerificationError(
        f"ONNX ({c.graph}) and PyTorch disagree on output {c.output!r}{part} at batch {c.batch}: max abs error "
        f"{c.max_abs:.4g}{limit}, {c.measure} {c.cosine:.6f} (minimum {c.min_cosine}"
        + (f", 3x the model's own rounding-noise floor {c.floor_cosine:.6f})" if c.floor_cosine is not None else ")"),
        "The file was not written; re-run with --no-verify to write it anyway, and report the problem")
