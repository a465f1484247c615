"""Export verification sees wrong scores: boxes, objectness and class scores are checked apart.

The issue this pins (found on a real trained YOLOv5n): one cosine over the whole decoded output is
dominated by pixel box coordinates, so reversing every class score still gave 0.9999998, shuffling
objectness 0.9999999 and setting every score to 0.5 0.99999. Here onnxruntime's outputs are corrupted
in exactly those three ways (the ONNX itself is correct) and the verification must fail on the part
that was broken, while the uncorrupted export passes: on the random-weight fixtures under the
noise-floor bound, and on the trained fixtures (``trtqat/demo/trained``) with a fixed, tight bound.
"""
from __future__ import annotations

import numpy as np
import pytest
from export_helpers import SIZE, corrupting
from upstream_modules import restore, upstream_modules

from trtqat.quant import verify

#: random fixtures: yolov5 with the decoded head (the case of the issue), yolov7 with the raw head
RANDOM = {"random-yolov5": ("yolov5", "decoded"), "random-yolov7": ("yolov7", "raw")}
#: the trained fixtures, decoded head (what deployment reads)
TRAINED = {"trained-yolov5": "yolov5", "trained-yolov7": "yolov7"}
TRAINED_SIZE = 320
#: the fixed bounds on the trained fixtures (no noise-floor relaxation), every output: box cosine >= 0.999;
#: objectness and class-score correlation >= 0.995; the same top class on >= 98 % of the rows that matter.
#: Measured: YOLOv5 >= 0.9995 for all three, top class 100 %. The 5600-step YOLOv7, a sharper model, gives an
#: objectness correlation of 0.9979, which is its own stability limit, not an export error: the torch model
#: against itself on a 1e-5-perturbed input scores 0.9976. Near-ties of the 8 shape classes flip under
#: rounding alone (a briefly trained YOLOv5 flipped 1 of its 17 confident rows against itself).
TIGHT = 0.999
TIGHT_SCORES = 0.995
TIGHT_TOP_CLASS = 0.98


@pytest.fixture(scope="session")
def exported(ptq_checkpoint, trained_ptq, tmp_path_factory):
    """Factory ``case -> (model, fp32 ONNX bytes, size, head, calib_dir)``: a static FP32 export without
    verification (the tests run it themselves), cached."""
    from trtqat.models import load_checkpoint
    from trtqat.quant.export import ExportConfig, export_model

    root = tmp_path_factory.mktemp("verify_scores")
    cache: dict = {}

    def get(case: str):
        if case not in cache:
            before = upstream_modules()
            if case in RANDOM:
                family, head = RANDOM[case]
                (ckpt, repo), size, calib = ptq_checkpoint(family), SIZE, None
            else:
                family, head = TRAINED[case], "decoded"
                (ckpt, repo, calib), size = trained_ptq(family), TRAINED_SIZE
            save = root / f"{case}.onnx"
            export_model(ckpt, repo, ExportConfig(size=size, head=head, float_dtype="fp32", verify=False, save=save))
            model = load_checkpoint(ckpt, repo).model.float().eval()
            restore(before)
            cache[case] = (model, save.read_bytes(), size, head, calib)
        return cache[case]

    return get


def _check(exported, case: str, monkeypatch=None, corruption: str | None = None, batches=(1,)) -> verify.VerifyReport:
    model, data, size, head, calib = exported(case)
    if corruption is not None:
        monkeypatch.setattr(verify, "ort_session", corrupting(verify.ort_session, corruption, decoded=head == "decoded"))
    return verify.check_graphs(model, {"fp32": data}, size=size, head=head, quantized=True, batches=list(batches),
                               calib_dir=calib)


def _part(report: verify.VerifyReport, part: str) -> list[verify.OutputCheck]:
    return [c for c in report.checks if c.part == part]


CASES = [*RANDOM, *TRAINED]


@pytest.mark.parametrize("case", CASES)
def test_correct_export_passes_every_part(exported, case):
    report = _check(exported, case)
    assert report.passed, [(c.output, c.part, c.cosine, c.min_cosine) for c in report.checks if not c.passed]
    outputs = {c.output for c in report.checks}
    assert {c.part for c in report.checks} == set(verify.PARTS)
    assert len(report.checks) == 4 * len(outputs)
    if case in TRAINED:  # tight and fixed
        for c in report.checks:
            bound = {"top class": TIGHT_TOP_CLASS, "objectness": TIGHT_SCORES, "classes": TIGHT_SCORES}.get(c.part, TIGHT)
            assert c.cosine >= bound, (c.output, c.part, c.cosine)


@pytest.mark.parametrize("case", CASES)
def test_reversed_class_scores_fail(exported, case, monkeypatch):
    report = _check(exported, case, monkeypatch, "reverse")
    assert not report.passed
    assert all(not c.passed for c in _part(report, "classes"))
    assert max(c.cosine for c in _part(report, "classes")) < 0.5
    assert all(c.passed for c in _part(report, "objectness"))  # only the classes were touched


@pytest.mark.parametrize("case", CASES)
def test_shuffled_objectness_fails(exported, case, monkeypatch):
    report = _check(exported, case, monkeypatch, "shuffle")
    assert not report.passed
    assert all(not c.passed for c in _part(report, "objectness"))
    assert max(c.cosine for c in _part(report, "objectness")) < 0.5
    assert all(c.passed for c in _part(report, "classes"))


@pytest.mark.parametrize("case", CASES)
def test_all_scores_half_fail(exported, case, monkeypatch):
    report = _check(exported, case, monkeypatch, "half")
    assert not report.passed
    for part in ("objectness", "classes"):  # a constant has no correlation with anything
        assert all(not c.passed and c.cosine == 0.0 for c in _part(report, part))
    assert all(c.passed for c in _part(report, "boxes"))


def test_corrupted_export_exits_1_naming_the_part(ptq_checkpoint, tmp_path, monkeypatch):
    from export_helpers import run_cli

    monkeypatch.setattr(verify, "ort_session", corrupting(verify.ort_session, "reverse", decoded=True))
    ckpt, repo = ptq_checkpoint("yolov5")
    res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--float-dtype", "fp32", "--save", tmp_path / "v.onnx")
    assert res.exit_code == 1
    assert "disagree on output 'output' (classes)" in res.stderr and "correlation" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_boxes_and_max_errors_only_on_rows_that_matter():
    """A low-confidence row far off (the 7-38 px 'max error' of the issue) does not count; a confident one does."""
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 320, (1, 500, 4)), np.full((1, 500, 1), 0.01),
                          rng.uniform(0, 0.2, (1, 500, 8))], -1)
    ref[0, :5, 4], ref[0, :5, 5] = 0.9, 0.95  # five confident rows
    ref[0, 400, 5:] = 0.001  # the least confident row
    got = ref.copy()
    got[0, 400, :4] += 30  # a background row (not in the top 100) moves 30 px
    parts = verify.measure_output(ref, got, decoded=True)
    assert parts["boxes"][1] == 0.0 and parts["boxes"][3] == verify.TOP_ROWS
    got[0, 2, :4] += 30  # a confident row moves 30 px
    assert verify.measure_output(ref, got, decoded=True)["boxes"][1] == pytest.approx(30)


def test_class_ties_count_as_the_same_top_class():
    ref = np.zeros((1, 200, 8))
    ref[..., 4], ref[..., 5], ref[..., 6], ref[..., 7] = 0.9, 0.8, 0.8 - 1e-5, 0.1  # classes 0, 1 tied
    got = ref.copy()
    got[..., 5], got[..., 6] = 0.8 - 1e-5, 0.8  # the ONNX picks the other one of the tie
    assert verify.measure_output(ref, got, decoded=True)["top class"][0] == 1.0
    got[..., 7] = 0.85  # now a real change of class (the reference scores class 2 at 0.1)
    assert verify.measure_output(ref, got, decoded=True)["top class"][0] == 0.0


def test_non_head_outputs_are_compared_whole():
    ref = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert list(verify.measure_output(ref, ref, decoded=True)) == ["all"]


#: "top" detections: confidence at least this (deployment threshold 0.25); between 0.25 and TOP_CONF a
#: detection may flip class between near-tied shapes or cross 0.25 under int8 rounding alone
TOP_CONF = 0.5
#: confidence of a matched detection may move this much at least (the floor below raises it when the torch
#: model itself moves more)
CONF_TOL = 0.05
#: seeded 1e-5 input nudges that measure the torch model's own instability (the floor of the comparison). On the
#: trained YOLOv7 the largest confidence move was 0.071 over 8 seeds and 0.112 over 16, the same over 32 and 48
NUDGES = 48
#: how far past the floor the ONNX may go. The floor is the worst of NUDGES draws of the torch model's own
#: instability; the ONNX (onnxruntime's kernels against torch's) is one more draw of the same kind, so it may
#: land just outside. Measured on this machine's kernels, AVX2-only kernels and one thread (each setting
#: calibrates and exports anew): floor IoU 0.892-0.908 (YOLOv5) and 0.893-0.895 (YOLOv7), ONNX worst IoU
#: 0.887-0.936 and 0.898-0.905, at most 0.014 under the floor; confidence floor 0.05-0.108, ONNX at most
#: 0.0007 over it. The margins are about twice the largest excess seen.
IOU_MARGIN = 0.03
CONF_MARGIN = 0.02
#: the typical (median) confident detection keeps its box: a systematic error (a shifted decode, a wrong
#: scale on a layer) moves every box, rounding flips move a few. Measured: YOLOv5 >= 0.99 in all settings; the
#: 5600-step YOLOv7, sharper, 0.9715 (this machine's kernels, one thread) and 0.976 (AVX2-only), so the bound
#: sits 0.02 under that; a 1 px shift of every 25 px box (IoU 0.92) still fails it
MEDIAN_IOU = 0.95


def _class_iou(a, b) -> np.ndarray | None:
    """IoU of every detection of ``a`` with every one of ``b`` (x1, y1, x2, y2, conf, class), 0 across
    classes; None when either is empty."""
    from trtqat.eval.boxes import box_iou

    return (box_iou(a[:, :4], b[:, :4]) * (a[:, 5:6] == b[:, 5][None])).numpy() if len(a) and len(b) else None


def _matched(a, b, *, min_conf: float, conf_tol: float = CONF_TOL, min_iou: float = 0.9) -> list[str]:
    """Detections of ``a`` with confidence >= ``min_conf`` that have no detection of ``b`` of the same class
    at IoU >= ``min_iou`` and confidence within ``conf_tol`` (one to one)."""
    missing, free = [], np.ones(len(b), dtype=bool)
    iou = _class_iou(a, b)
    for i in range(len(a)):
        if float(a[i, 4]) < min_conf:
            continue
        ok = np.nonzero(free & (iou[i] >= min_iou) & (np.abs(b[:, 4].numpy() - float(a[i, 4])) <= conf_tol))[0] \
            if iou is not None else []
        if len(ok):
            free[ok[0]] = False
        else:
            near = int(np.argmax(iou[i])) if iou is not None else None
            missing.append(f"class {int(a[i, 5])} conf {float(a[i, 4]):.3f} (best same-class match: "
                           + ("none" if near is None else f"IoU {iou[i, near]:.3f} conf {float(b[near, 4]):.3f}") + ")")
    return missing


@pytest.mark.parametrize("family", ["yolov5", "yolov7"])
def test_trained_export_gives_identical_top_detections(exported, family):
    """The deployed detections of the Q/DQ ONNX are those of the PyTorch model: after NMS at confidence
    0.25, every detection with confidence >= 0.5 of either has its twin in the other (same class), and the
    twins are no further apart than the torch model's own detections move on 1e-5-perturbed inputs (the
    worst of NUDGES seeds; at least IoU 0.9 and CONF_TOL), give or take IOU_MARGIN / CONF_MARGIN; the
    median twin IoU is at least MEDIAN_IOU.

    Why a floor and a margin: int8 roundings flip with the kernels a CPU runs, so the ONNX and the torch
    model differ by a draw of the same instability the nudges sample (see IOU_MARGIN). A fixed bound or
    the bare floor made the verdict depend on the machine (YOLOv5 at IoU 0.887 against a floor of 0.892
    with AVX2-only kernels)."""
    import torch

    from trtqat.eval.nms import non_max_suppression

    model, data, size, head, calib = exported(f"trained-{family}")
    x, _ = verify.verification_inputs(size, 8, calib)
    ref = verify.torch_reference(model, x, head=head, quantized=True)[0]
    floor_refs = [verify.torch_reference(model, x + np.random.default_rng(seed).normal(0, 1e-5, x.shape)
                                         .astype(np.float32), head=head, quantized=True)[0] for seed in range(NUDGES)]
    sess = verify.ort_session(data)  # a static export: batch 1
    got = np.concatenate([sess.run(None, {"images": x[i:i + 1]})[0] for i in range(len(x))])
    ref_d, got_d, *floors_d = [non_max_suppression(torch.from_numpy(o), conf_thres=0.25, iou_thres=0.45,
                                                   multi_label=False) for o in (ref, got, *floor_refs)]
    assert sum(int((d[:, 4] >= TOP_CONF).sum()) for d in ref_d) >= 8  # objects in view, found confidently

    def unmatched(a_dets, b_dets, tol: float, min_iou: float) -> list[str]:
        return [m for a, b in zip(a_dets, b_dets) for m in
                _matched(a, b, min_conf=TOP_CONF, conf_tol=tol, min_iou=min_iou)
                + _matched(b, a, min_conf=TOP_CONF, conf_tol=tol, min_iou=min_iou)]

    # objects the torch model itself finds or loses depending on the nudge (a confident box with no
    # same-class twin at IoU >= 0.5 under some nudge, either way) are not compared: the ONNX may do either
    shaky = _unstable_objects(ref_d, floors_d)
    unstable = sum(_distinct(objects) for objects in shaky)
    # objects whose box NMS picks between near-tied candidates (either may be kept: a rounding flip decides)
    ties = _nms_ties(ref, ref_d)
    tied = sum(_distinct(objects) for objects in ties)
    shaky = [_stack(a, b) for a, b in zip(shaky, ties)]
    ref_d, got_d, *floors_d = [_without(d, shaky) for d in (ref_d, got_d, *floors_d)]
    # the model's own instability: how far its confident detections move under a 1e-5 nudge of the input
    # (same-class twin); the ONNX may move them no further, and never less strictly than CONF_TOL / IoU 0.9
    shifts = [_shift(a, b) for floor_d in floors_d for a, b in zip(ref_d, floor_d)]
    conf_tol = max([CONF_TOL] + [c for c, _ in shifts]) + CONF_MARGIN
    min_iou = min([0.9] + [u for _, u in shifts]) - IOU_MARGIN
    onnx_misses = unmatched(ref_d, got_d, conf_tol, min_iou)
    median_iou = _median_twin_iou(ref_d, got_d)
    print(f"{family}: confidence tolerance {conf_tol:.3f}, IoU >= {min_iou:.3f}; unstable objects {unstable}, "
          f"NMS ties {tied}; "
          f"ONNX misses {len(onnx_misses)}; median twin IoU {median_iou:.4f}")
    assert onnx_misses == [], (conf_tol, min_iou, onnx_misses)
    assert median_iou >= MEDIAN_IOU, median_iou
    assert unstable <= 2 and tied <= 2, (unstable, tied)  # a handful of borderline objects, not a model that flickers


def _unstable_objects(ref_d: list, floors_d: list) -> list:
    """Per image, the objects the torch model finds under some nudges and not others (None: none): a
    confident (>= TOP_CONF) detection of the reference with no same-class twin at IoU >= 0.5 in a nudged
    output, or one of a nudged output with none in the reference. On the trained YOLOv7 one box at
    confidence 0.525 vanished under 6 of 12 nudges, and the ONNX lost that same box."""
    import torch

    out = []
    for i, ref in enumerate(ref_d):
        shaky = []
        for floor in (f[i] for f in floors_d):
            for a, b in ((ref, floor), (floor, ref)):
                iou = _class_iou(a, b)
                shaky += [a[j] for j in range(len(a)) if float(a[j, 4]) >= TOP_CONF and (iou is None or iou[j].max() < 0.5)]
        out.append(torch.stack(shaky) if shaky else None)
    return out


#: NMS candidates of one object within this confidence of the kept box are a tie: int8 roundings move
#: confidences by more than that (see CONF_TOL), so either box may be the one kept. On the 5600-step YOLOv7 a
#: box at 0.885 kept by PyTorch had a runner-up at 0.884, 3 px away (IoU 0.74); onnxruntime kept the
#: runner-up, which 48 nudges of 1e-5 never did
TIE_CONF = 0.01


def _nms_ties(raw, kept_d: list) -> list:
    """Per image, the confident kept detections (``non_max_suppression`` rows) that have a near-tied rival in
    the decoded output ``raw`` ``[B, N, 5+nc]``: a same-class candidate NMS suppressed for them (IoU >= 0.45)
    that is another box (IoU < 0.9) with a confidence within TIE_CONF."""
    import torch

    from trtqat.eval.boxes import box_iou, xywh_to_xyxy

    out = []
    for pred, kept in zip(torch.as_tensor(np.asarray(raw)), kept_d):
        conf, cls = (pred[:, 5:] * pred[:, 4:5]).max(1)
        boxes = xywh_to_xyxy(pred[:, :4])
        tied = []
        for k in kept:
            if float(k[4]) < TOP_CONF:
                continue
            iou = box_iou(k[None, :4], boxes)[0]
            rival = (cls == int(k[5])) & (conf >= float(k[4]) - TIE_CONF) & (iou >= 0.45) & (iou < 0.9)
            if bool(rival.any()):
                tied.append(k)
        out.append(torch.stack(tied) if tied else None)
    return out


def _stack(a, b):
    """Two images' object lists (None: none) as one."""
    import torch

    return a if b is None else b if a is None else torch.cat([a, b])


def _distinct(objects) -> int:
    """How many objects (class, centre to 8 px) the detections of one image are."""
    if objects is None:
        return 0
    return len({(int(t[5]), round(float(t[0] + t[2]) / 16), round(float(t[1] + t[3]) / 16)) for t in objects})


def _without(dets_d: list, objects_d: list) -> list:
    """Per image, the detections that overlap none of that image's ``objects`` (same class, IoU >= 0.5)."""
    import torch

    return [d if objects is None else d[torch.from_numpy(~_near(d, objects))] for d, objects in zip(dets_d, objects_d)]


def _near(dets, objects) -> np.ndarray:
    """Which of ``dets`` overlap one of ``objects`` (same class, IoU >= 0.5)."""
    return (_class_iou(dets, objects) >= 0.5).any(axis=1) if len(dets) else np.zeros(0, bool)


def _median_twin_iou(a_dets: list, b_dets: list) -> float:
    """Median IoU of every confident (>= TOP_CONF) detection of ``a`` with its best same-class twin in ``b``
    (0 when it has none)."""
    ious = []
    for a, b in zip(a_dets, b_dets):
        iou = _class_iou(a, b)
        ious += [float(iou[i].max()) if iou is not None else 0.0 for i in range(len(a)) if float(a[i, 4]) >= TOP_CONF]
    return float(np.median(ious)) if ious else 0.0


def _shift(a, b) -> tuple[float, float]:
    """How far detections of ``a`` (>= TOP_CONF) move to their best same-class twin in ``b``: the largest
    confidence change and the smallest IoU (twins at IoU >= 0.5 only; (0, 1) when there are none)."""
    iou = _class_iou(a, b)
    if iou is None:
        return 0.0, 1.0
    pairs = [(abs(float(a[i, 4]) - float(b[int(np.argmax(iou[i])), 4])), float(iou[i].max())) for i in range(len(a))
             if float(a[i, 4]) >= TOP_CONF and iou[i].max() >= 0.5]
    return max((c for c, _ in pairs), default=0.0), min((u for _, u in pairs), default=1.0)
