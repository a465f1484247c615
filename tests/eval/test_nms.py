"""NMS: the pure-torch fallback equals brute-force greedy NMS; YOLO post-processing shapes and scores."""
import pytest
import torch

from trtqat.data.images import Letterbox
from trtqat.eval import nms as nms_mod
from trtqat.eval.boxes import box_iou, unletterbox, xywh_to_xyxy, xyxy_to_coco, xyxy_to_xywh


def brute_force_nms(boxes, scores, thres):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        if all(float(box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0]) <= thres for j in keep):
            keep.append(i)
    return keep


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


@pytest.mark.parametrize("n,seed", [(0, 0), (1, 1), (7, 2), (60, 3), (120, 4)])
@pytest.mark.parametrize("block", [5, 2048])
@pytest.mark.parametrize("thres", [0.3, 0.65])
def test_fallback_equals_brute_force(n, seed, block, thres):
    boxes, scores = random_boxes(n, seed)
    expected = brute_force_nms(boxes, scores, thres)
    assert nms_mod.nms_fallback(boxes, scores, thres, block=block).tolist() == expected
    assert nms_mod.nms_fallback(boxes, scores, thres, max_keep=4, block=block).tolist() == expected[:4]


def test_chain_suppression_is_greedy_not_fast_nms():
    # A suppresses B, B would suppress C; greedy keeps A and C (Fast NMS would drop C too).
    boxes = torch.tensor([[0., 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms_mod.nms_fallback(boxes, scores, 0.3).tolist() == [0, 2]


def test_nms_uses_fallback_without_torchvision(monkeypatch):
    monkeypatch.setattr(nms_mod, "torchvision_nms_available", lambda: False)
    boxes, scores = random_boxes(40, 9)
    assert nms_mod.nms(boxes, scores, 0.5).tolist() == brute_force_nms(boxes, scores, 0.5)


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0., 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    keep = nms_mod.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5,
                               use_torchvision=False)
    assert keep.tolist() == [0, 1]


def test_non_max_suppression_yolo_layout():
    # one image, 3 anchors, 2 classes: (cx, cy, w, h, obj, p0, p1)
    pred = torch.tensor([[[50., 50, 20, 20, 0.9, 0.9, 0.1],
                          [51., 50, 20, 20, 0.8, 0.9, 0.2],   # duplicate of box 0 (class 0)
                          [150., 150, 10, 10, 0.5, 0.1, 0.8]]])
    out = nms_mod.non_max_suppression(pred, conf_thres=0.3, iou_thres=0.5, multi_label=False, use_torchvision=False)
    assert len(out) == 1 and out[0].shape == (2, 6)
    torch.testing.assert_close(out[0][0], torch.tensor([40., 40, 60, 60, 0.81, 0]))
    torch.testing.assert_close(out[0][1], torch.tensor([145., 145, 155, 155, 0.4, 1]))
    multi = nms_mod.non_max_suppression(pred, conf_thres=0.05, iou_thres=0.5, use_torchvision=False)[0]
    # class 0: box 0 (0.81) suppresses box 1 (0.72); class 1: box 1 (0.16) suppresses box 0 (0.09), box 2 (0.4)
    # stays; box 2 as class 0 scores exactly 0.05, not above the threshold
    assert [(round(r[4], 4), r[5]) for r in multi.tolist()] == [(0.81, 0.0), (0.4, 1.0), (0.16, 1.0)]


def test_box_conversions_and_unletterbox():
    b = torch.tensor([[10., 20, 4, 6]])
    xyxy = xywh_to_xyxy(b)
    assert xyxy.tolist() == [[8, 17, 12, 23]]
    assert xyxy_to_xywh(xyxy).tolist() == b.tolist()
    assert xyxy_to_coco(xyxy).tolist() == [[8, 17, 4, 6]]
    lb = Letterbox(ratio=0.5, pad=(0.0, 40.0), shape=(100, 200))  # 200x100 image into 100x100
    out = unletterbox(torch.tensor([[10., 45, 30, 65], [-5., 0, 200, 200]]), lb)
    assert out.tolist() == [[20, 10, 60, 50], [0, 0, 200, 100]]
