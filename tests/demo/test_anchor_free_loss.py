"""The anchor-free (YOLOv8 / YOLO11 / YOLO26) loss: decode convention, task-aligned assignment, and that
minimising it on a free prediction tensor recovers the ground truth (a fast check that the loss is right)."""
from __future__ import annotations

import math

import pytest
import torch

from trtqat.demo.anchor_free_loss import (
    PARTS,
    AnchorFreeLoss,
    TaskAlignedAssigner,
    decode,
    distribution_focal_loss,
    make_anchors,
    pairwise_iou,
    xywh_to_xyxy,
)

NC = 8  # the shapes dataset's classes
SIZE = 128
STRIDES = (8, 16, 32)
SHAPES = [(SIZE // s, SIZE // s) for s in STRIDES]  # 16x16, 8x8, 4x4: 336 anchors
# one image, two separated boxes: image, class, cx, cy, w, h (input pixels, as DetectionLoss takes them)
TARGETS = torch.tensor([[0, 2, 40.0, 44.0, 36.0, 28.0], [0, 5, 92.0, 84.0, 48.0, 56.0]])


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_maps(reg_max: int, seed: int, batch: int = 1, requires_grad: bool = False) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(batch, 4 * reg_max + NC, h, w, generator=g) for h, w in SHAPES]
    return [torch.nn.Parameter(m) for m in maps] if requires_grad else maps


def encode_distance(d: torch.Tensor, reg_max: int) -> torch.Tensor:
    """Bin logits whose softmax expectation is exactly ``d`` (two bins, the rest zero probability)."""
    if reg_max == 1:
        return d[..., None]
    k = d.floor().long()
    f = d - k
    logits = torch.full((*d.shape, reg_max), -1e4)
    logits.scatter_(-1, k[..., None], (1 - f).clamp(min=1e-12).log()[..., None])
    logits.scatter_(-1, (k + 1)[..., None], f.clamp(min=1e-12).log()[..., None])
    return logits


def perfect_maps(targets: torch.Tensor, reg_max: int, lit: str = "centre", batch: int = 1) -> list[torch.Tensor]:
    """Logits built from the targets: every anchor inside a box regresses exactly that box; the class logit
    of the box's class is high at the anchor nearest its centre (``lit="centre"``) or at every anchor inside
    it (``"all"``), and low everywhere else."""
    anchors, stride = make_anchors(SHAPES, STRIDES)
    n = anchors.shape[0]
    flat = torch.zeros(batch, 4 * reg_max + NC, n)
    flat[:, 4 * reg_max:] = -12.0
    for img, cls, cx, cy, w, h in targets.tolist():
        b, c = int(img), int(cls)
        x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        inside = (anchors[:, 0] > x1) & (anchors[:, 0] < x2) & (anchors[:, 1] > y1) & (anchors[:, 1] < y2)
        idx = inside.nonzero()[:, 0]
        a, s = anchors[idx], stride[idx]
        dist = torch.cat((a[:, :1] - x1, a[:, 1:] - y1, x2 - a[:, :1], y2 - a[:, 1:]), 1) / s
        assert dist.max() < reg_max - 1 or reg_max == 1
        flat[b, : 4 * reg_max, idx] = encode_distance(dist, reg_max).flatten(1).T
        if lit == "all":
            flat[b, 4 * reg_max + c, idx] = 12.0
        else:
            centre = ((anchors - torch.tensor([cx, cy])) ** 2).sum(1).argmin()
            flat[b, 4 * reg_max + c, centre] = 12.0
    maps, start = [], 0
    for h, w in SHAPES:
        maps.append(flat[:, :, start:start + h * w].reshape(batch, -1, h, w))
        start += h * w
    return maps


def gt_xyxy(targets: torch.Tensor = TARGETS) -> torch.Tensor:
    return xywh_to_xyxy(targets[:, 2:6])


# ----------------------------------------------------------------------------------------------- decode


def test_anchor_points_are_cell_centres_row_major_levels_in_order():
    anchors, stride = make_anchors(SHAPES, STRIDES)
    assert anchors.shape == (336, 2) and stride.shape == (336, 1)
    assert anchors[0].tolist() == [4.0, 4.0] and anchors[1].tolist() == [12.0, 4.0]  # next column first
    assert anchors[16].tolist() == [4.0, 12.0]
    assert anchors[256].tolist() == [8.0, 8.0] and stride[256].item() == 16  # P4 starts after 16*16
    assert anchors[-1].tolist() == [112.0, 112.0] and stride[-1].item() == 32


@pytest.mark.parametrize("reg_max", [16, 1])
def test_decode_of_perfect_logits_gives_back_the_boxes(reg_max):
    out = decode(perfect_maps(TARGETS, reg_max, lit="all"), reg_max, STRIDES)
    assert out.shape == (1, 4 + NC, 336)
    anchors, _ = make_anchors(SHAPES, STRIDES)
    for cls, cx, cy, w, h in TARGETS[:, 1:].tolist():
        inside = ((anchors[:, 0] - cx).abs() < w / 2) & ((anchors[:, 1] - cy).abs() < h / 2)
        boxes = out[0, :4, inside].T
        assert inside.sum() > 10
        torch.testing.assert_close(boxes, torch.tensor([cx, cy, w, h]).expand_as(boxes), atol=1e-3, rtol=0)
        scores = out[0, 4:, inside]
        assert (scores[int(cls)] > 0.99).all() and (scores.sum(0) - scores[int(cls)] < 1e-4).all()


def test_decode_reg_max_1_is_the_raw_distance_without_activation():
    maps = [torch.zeros(1, 4 + NC, h, w) for h, w in SHAPES]
    maps[0][0, :4, 0, 0] = torch.tensor([-0.5, 1.0, 2.0, 0.25])  # negative left distance stays negative
    out = decode(maps, reg_max=1)
    # anchor (4, 4), stride 8: x1 = 4 + 4 = 8, x2 = 4 + 16 = 20, y1 = 4 - 8 = -4, y2 = 4 + 2 = 6
    torch.testing.assert_close(out[0, :4, 0], torch.tensor([14.0, 1.0, 12.0, 10.0]))
    torch.testing.assert_close(out[0, :4, 1], torch.tensor([12.0, 4.0, 0.0, 0.0]))  # zero distances: a point
    torch.testing.assert_close(out[0, 4:], torch.full((NC, 336), 0.5))


def test_decode_reg_max_16_is_the_expectation_over_bins_side_major():
    maps = [torch.zeros(1, 64 + NC, h, w) for h, w in SHAPES]
    maps[2][0, :64, 0, 0] = -1e4
    for side, bin_ in enumerate((1, 2, 3, 4)):  # left 1, top 2, right 3, bottom 4 strides
        maps[2][0, side * 16 + bin_, 0, 0] = 0.0
    out = decode(maps, reg_max=16)
    # first P5 anchor (16, 16), stride 32: x1 = -16, y1 = -48, x2 = 112, y2 = 144
    torch.testing.assert_close(out[0, :4, 256 + 64], torch.tensor([48.0, 48.0, 128.0, 192.0]))
    # uniform bins: 7.5 strides each side
    torch.testing.assert_close(out[0, :4, 0], torch.tensor([4.0, 4.0, 120.0, 120.0]))


# --------------------------------------------------------------------------------------------- assigner


def assign(topk: int, targets: torch.Tensor = TARGETS, batch: int = 1, seed: int = 0, pred_boxes=None):
    """Assignment of random scores and jittered predicted boxes (each anchor predicts a box near the
    nearest ground truth, so IoUs are varied and mostly non-zero)."""
    from trtqat.demo.anchor_free_loss import targets_to_padded

    g = torch.Generator().manual_seed(seed)
    anchors, _ = make_anchors(SHAPES, STRIDES)
    labels, boxes, mask = targets_to_padded(targets, batch)
    n = anchors.shape[0]
    scores = torch.rand(batch, n, NC, generator=g)
    if pred_boxes is None and not targets.shape[0]:
        pred_boxes = torch.rand(batch, n, 4, generator=g) * SIZE
    if pred_boxes is None:
        gt = gt_xyxy(targets)
        near = ((anchors[:, None] - targets[None, :, 2:4]) ** 2).sum(-1).argmin(1)
        pred_boxes = (gt[near] + torch.randn(n, 4, generator=g) * 6)[None].expand(batch, n, 4)
    a = TaskAlignedAssigner(topk=topk)(scores, pred_boxes, anchors, labels, boxes, mask)
    return a, anchors, scores, pred_boxes, labels, boxes, mask


@pytest.mark.parametrize("topk", [10, 1])
def test_assigner_positives_lie_inside_their_box_and_respect_topk(topk):
    a, anchors, scores, pred, labels, boxes, _ = assign(topk)
    gt = boxes[0]
    assert a.fg.shape == (1, 336) and a.scores.shape == (1, 336, NC)
    for j in range(2):
        pos = a.fg[0] & (a.gt_index[0] == j)
        assert pos.sum() == topk  # separated boxes, each with more than 10 anchors inside
        pa = anchors[pos]
        assert ((pa > gt[j, :2]) & (pa < gt[j, 2:])).all()
        torch.testing.assert_close(a.boxes[0, pos], gt[j].expand(int(pos.sum()), 4))
        # the positives are the candidates of highest alignment s^0.5 * u^6
        inside = ((anchors > gt[j, :2]) & (anchors < gt[j, 2:])).all(1)
        iou = pairwise_iou(gt[None, j:j + 1], pred[:1])[0, 0]
        metric = scores[0, :, labels[0, j]].sqrt() * iou ** 6
        metric[~inside] = -1
        assert set(metric.topk(topk).indices.tolist()) == set(pos.nonzero()[:, 0].tolist())
        # soft targets: only at the box's class; the best positive gets the best IoU among the positives
        t = a.scores[0, pos]
        assert (t[:, [c for c in range(NC) if c != labels[0, j]]] == 0).all()
        torch.testing.assert_close(t[:, labels[0, j]].max(), iou[pos].max())
        norm = metric[pos] * iou[pos].max() / metric[pos].max()
        torch.testing.assert_close(t[:, labels[0, j]], norm)
    assert (a.scores[0, ~a.fg[0]] == 0).all()


def test_one_to_one_assigns_exactly_one_anchor_per_box_across_images():
    targets = torch.tensor([[0, 2, 40.0, 44.0, 36.0, 28.0], [0, 5, 92.0, 84.0, 48.0, 56.0],
                            [1, 7, 64.0, 60.0, 30.0, 70.0]])
    a, anchors, *_ = assign(1, targets, batch=2)
    assert a.fg[0].sum() == 2 and a.fg[1].sum() == 1
    assert sorted(a.gt_index[0, a.fg[0]].tolist()) == [0, 1] and a.gt_index[1, a.fg[1]].tolist() == [0]
    # image 1 is trained on its own box only (padded slot 1 of image 1 is not a box)
    (only,) = a.fg[1].nonzero()[:, 0].tolist()
    assert ((anchors[only] - torch.tensor([64.0, 60.0])).abs() < torch.tensor([15.0, 35.0])).all()
    assert a.scores[1, only].argmax() == 7


def test_an_anchor_claimed_by_two_boxes_keeps_the_one_it_overlaps_most():
    # two overlapping boxes, top-k above their anchor counts so every anchor inside both is claimed by both;
    # every anchor predicts box A exactly, so the shared anchors go to A
    targets = torch.tensor([[0, 1, 56.0, 56.0, 64.0, 64.0], [0, 3, 72.0, 72.0, 64.0, 64.0]])
    gt = gt_xyxy(targets)
    pred = gt[0].expand(1, 336, 4)
    a, anchors, *_ = assign(200, targets, pred_boxes=pred)
    shared = ((anchors > gt[1, :2]) & (anchors < gt[0, 2:])).all(1)  # inside both
    assert shared.sum() > 10
    assert a.fg[0, shared].all() and (a.gt_index[0, shared] == 0).all()
    assert (a.gt_index[0, a.fg[0] & ~shared] == 1).any()  # B keeps the anchors only it contains


def test_no_boxes_means_no_positives_and_a_finite_loss():
    a, *_ = assign(10, torch.zeros(0, 6))
    assert not a.fg.any() and (a.scores == 0).all()
    preds = random_maps(16, 0, requires_grad=True)
    total, parts = AnchorFreeLoss(NC)(preds, torch.zeros(0, 6))
    total.backward()
    assert torch.isfinite(total) and parts[0] == 0 and parts[2] == 0 and parts[1] > 0
    assert all(p.grad is not None for p in preds)


# ------------------------------------------------------------------------------------------------- loss


@pytest.mark.parametrize("reg_max", [16, 1])
def test_perfect_predictions_give_a_much_lower_loss_than_random_ones(reg_max):
    loss = AnchorFreeLoss(NC, STRIDES, reg_max=reg_max)
    perfect, p_parts = loss(perfect_maps(TARGETS, reg_max), TARGETS)
    rand, r_parts = loss(random_maps(reg_max, 1), TARGETS)
    assert perfect < rand / 50, (p_parts, r_parts)
    assert (p_parts <= r_parts).all() and p_parts[0] < 1e-3  # CIoU 1 at every positive
    assert r_parts[0] > 0.5
    if reg_max == 1:
        assert p_parts[2] == 0 and r_parts[2] == 0  # no DFL term
    else:
        assert r_parts[2] > 2 * p_parts[2] > 0  # DFL's floor is the two-bin target's entropy
    # the one-to-one branch of perfect predictions (one lit anchor per box): the lit anchor is the positive
    both, b_parts = loss({"one2many": perfect_maps(TARGETS, reg_max), "one2one": perfect_maps(TARGETS, reg_max)},
                         TARGETS)
    o2o = loss.branch_loss(perfect_maps(TARGETS, reg_max), TARGETS, loss.assigners["one2one"])
    torch.testing.assert_close(b_parts, p_parts + o2o)
    assert o2o[1] < 0.01 and o2o[0] < 1e-3


def test_dfl_is_minimal_at_the_two_bin_interpolation():
    target = torch.tensor([3.25, 0.0, 14.5])
    best = encode_distance(target, 16)
    floor = distribution_focal_loss(best, target)
    entropy = torch.tensor([-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), 0.0, math.log(2)])
    torch.testing.assert_close(floor, entropy, atol=1e-5, rtol=0)
    for _ in range(5):
        other = best + torch.randn(3, 16) * 0.5
        assert (distribution_focal_loss(other, target) >= floor - 1e-6).all()
    exp = torch.softmax(best, -1) @ torch.arange(16.0)
    torch.testing.assert_close(exp, target)


def test_gradients_reach_box_and_class_channels_and_total_is_batch_scaled():
    preds = random_maps(16, 2, batch=2, requires_grad=True)
    targets = torch.cat((TARGETS, torch.tensor([[1, 7, 64.0, 60.0, 30.0, 70.0]])))
    total, parts = AnchorFreeLoss(NC)(preds, targets)
    assert parts.shape == (3,) and len(PARTS) == 3 and not parts.requires_grad
    torch.testing.assert_close(total.detach(), parts.sum() * 2)
    total.backward()
    g = torch.cat([p.grad.flatten(2) for p in preds], 2)  # [B, C, N]
    assert (g[:, 64:] != 0).all()  # every class logit of every anchor is trained
    box_grad = (g[:, :64] != 0).any(1)  # anchors whose box moves: the positives
    assert 0 < box_grad[0].sum() <= 20 and 0 < box_grad[1].sum() <= 10


def fit(reg_max: int, one2one: bool, steps: int = 300):
    """Adam on a free prediction tensor (one image, two boxes); returns the decoded branches."""
    torch.manual_seed(0)
    branches = {"one2many": random_maps(reg_max, 3, requires_grad=True)}
    if one2one:
        branches["one2one"] = random_maps(reg_max, 4, requires_grad=True)
    loss = AnchorFreeLoss(NC, STRIDES, reg_max=reg_max)
    opt = torch.optim.Adam([p for maps in branches.values() for p in maps], lr=0.05)
    first = None
    for _ in range(steps):
        total, parts = loss(branches if one2one else branches["one2many"], TARGETS)
        first = parts if first is None else first
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    assert (parts[:2] < first[:2] / 10).all(), (first, parts)
    with torch.no_grad():
        return {k: decode(maps, reg_max, STRIDES)[0] for k, maps in branches.items()}


def check_detections(out: torch.Tensor, one2one: bool):
    boxes, scores = xywh_to_xyxy(out[:4].T), out[4:].T
    best, cls = scores.max(1)
    iou = pairwise_iou(gt_xyxy()[None], boxes[None])[0]  # [2, N]
    for j, label in enumerate(TARGETS[:, 1].long().tolist()):
        i = torch.where(iou[j] > 0.5, best, torch.zeros_like(best)).argmax()  # the box's top detection
        assert best[i] > 0.5 and cls[i] == label and iou[j, i] > 0.9, (j, best[i], cls[i], iou[j, i])
    confident = best > 0.5
    assert (iou[:, confident].max(0).values > 0.8).all()  # no confident false positive
    if one2one:  # NMS-free: one confident detection per box
        assert confident.sum() == 2 and set(iou[:, confident].argmax(0).tolist()) == {0, 1}


@pytest.mark.parametrize("reg_max", [16, 1])
def test_minimising_the_loss_recovers_the_boxes_and_classes(reg_max):
    out = fit(reg_max, one2one=False)
    check_detections(out["one2many"], one2one=False)


def test_yolo26_dual_branch_one_to_one_learns_a_single_detection_per_box():
    out = fit(1, one2one=True)
    check_detections(out["one2many"], one2one=False)
    check_detections(out["one2one"], one2one=True)


def flat_branch(maps: list[torch.Tensor], reg_max: int) -> dict:
    """The same logits as the flattened dict newer Ultralytics heads (and trtqat's fixture) return."""
    x = torch.cat([m.flatten(2) for m in maps], 2)
    return {"boxes": x[:, : 4 * reg_max], "scores": x[:, 4 * reg_max:], "feats": [m[:, :1] for m in maps]}


@pytest.mark.parametrize("reg_max", [16, 1])
def test_flattened_dict_branches_are_the_same_predictions(reg_max):
    maps, other = random_maps(reg_max, 5), random_maps(reg_max, 6)
    loss = AnchorFreeLoss(NC, reg_max=reg_max)
    torch.testing.assert_close(decode(flat_branch(maps, reg_max), reg_max), decode(maps, reg_max))
    ref_total, ref_parts = loss(maps, TARGETS)
    total, parts = loss(flat_branch(maps, reg_max), TARGETS)
    torch.testing.assert_close((total, parts), (ref_total, ref_parts))
    dual_ref = loss({"one2many": maps, "one2one": other}, TARGETS)
    dual = loss({"one2many": flat_branch(maps, reg_max), "one2one": flat_branch(other, reg_max)}, TARGETS)
    torch.testing.assert_close(dual, dual_ref)
    assert dual_ref[0] > ref_total


def test_bad_inputs_are_refused():
    loss = AnchorFreeLoss(NC, reg_max=16)
    with pytest.raises(ValueError, match="channels"):
        loss(random_maps(1, 0), TARGETS)
    with pytest.raises(ValueError, match="levels"):
        loss(random_maps(16, 0)[:2], TARGETS)
    with pytest.raises(ValueError, match="branches"):
        loss({"one2few": random_maps(16, 0)}, TARGETS)
    with pytest.raises(ValueError, match="missing"):
        loss({"boxes": torch.zeros(1, 64, 336), "scores": torch.zeros(1, NC, 336)}, TARGETS)
    with pytest.raises(ValueError, match="different count"):
        loss(flat_branch(random_maps(16, 0), 16) | {"feats": [torch.zeros(1, 1, 8, 8)] * 3}, TARGETS)
    with pytest.raises(ValueError, match="image indices"):
        loss(random_maps(16, 0), torch.tensor([[1, 0, 10.0, 10.0, 5.0, 5.0]]))
