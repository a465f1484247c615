"""The detector output layouts (:mod:`trtqat.eval.layouts`): metadata, shape decisions, conversions."""
import json

import pytest
import torch

from trtqat.errors import InputError, UsageError
from trtqat.eval.layouts import (
    END2END,
    ULTRALYTICS,
    YOLOV5,
    LayoutHint,
    OutputDecoder,
    check_layout_name,
    engine_hint,
    hint_from_metadata,
    names_count,
    resolve_layout,
    select_end2end,
    square_imgsz,
    with_objectness,
)
from trtqat.eval.nms import non_max_suppression

NAMES8 = str({i: f"c{i}" for i in range(8)})


def test_names_count_reads_dict_list_and_json_literals():
    assert names_count(NAMES8) == 8
    assert names_count("['a', 'b', 'c']") == 3 and names_count('["a", "b"]') == 2
    assert names_count(None) is None and names_count("not a literal") is None and names_count("{}") is None


@pytest.mark.parametrize("meta,expected", [
    ({"stride": "32", "names": NAMES8}, (YOLOV5, 8)),  # YOLOv5 export.py
    ({"trtqat_version": "0.1", "family": "yolov7", "kind": "qat"}, (YOLOV5, None)),  # trtqat export
    ({"task": "detect", "end2end": "False", "names": NAMES8, "imgsz": "[640, 640]"}, (ULTRALYTICS, 8)),
    ({"task": "detect", "end2end": "True", "names": NAMES8}, (END2END, 8)),
    ({"task": "detect", "end2end": "False", "args": "{'nms': True, 'batch': 1}"}, (END2END, None)),  # NMS exported in
    ({"task": "detect", "args": "{'nms': False}"}, (ULTRALYTICS, None)),
    ({"output_layout": "ultralytics", "names": "['a']"}, (ULTRALYTICS, 1)),
    ({"names": NAMES8}, (None, 8)),
    ({}, (None, None)),
])
def test_hint_from_metadata(meta, expected):
    hint = hint_from_metadata(meta, "m.onnx")
    assert (hint.layout, hint.nc) == expected
    assert hint.origin == ("metadata" if expected[0] else "")


def test_metadata_errors():
    with pytest.raises(InputError, match="Ultralytics 'pose' model"):
        hint_from_metadata({"task": "pose", "end2end": "False"}, "m.onnx")
    with pytest.raises(InputError, match="output_layout 'yolox' is none of the detector layouts"):
        hint_from_metadata({"output_layout": "yolox"}, "m.onnx")
    with pytest.raises(UsageError, match="--layout 'v8' is not a detector layout"):
        check_layout_name("v8")


def test_square_imgsz():
    assert square_imgsz({"imgsz": "[640, 640]"}) == 640 and square_imgsz({"imgsz": "320"}) == 320
    assert square_imgsz({"imgsz": "[640, 480]"}) is None and square_imgsz({}) is None


@pytest.mark.parametrize("shape,nc,nc_min,expected", [
    ([1, 25200, 85], None, 1, (YOLOV5, 80)),
    ([1, 84, 8400], None, 1, (ULTRALYTICS, 80)),
    ([1, 300, 6], None, 2, (END2END, None)),  # a 1-class yolov5 is ruled out by the labels' classes
    ([1, 300, 6], 80, 1, (END2END, 80)),
    (["batch", 84, 8400], 80, 1, (ULTRALYTICS, 80)),
    (["batch", 84, "anchors"], 80, 1, (None, 80)),  # a symbolic last dim: only the first batch can tell
    (["batch", 84, "anchors"], None, 1, (None, None)),
    ([-1, 25200, 85], None, 1, (YOLOV5, 80)),  # TensorRT's dynamic batch
])
def test_shape_decides(shape, nc, nc_min, expected):
    assert resolve_layout(shape, LayoutHint(nc=nc), source="out", nc_min=nc_min) == expected


@pytest.mark.parametrize("shape,nc,message", [
    ([1, 300, 6], None, "fits the yolov5 [B, N, 5+nc] and end2end [B, K, 6] layouts alike"),
    ([1, 2095, 84], 8, "none of the detector layouts trtqat reads (yolov5 [B, N, 5+nc], ultralytics [B, 4+nc, N], "
                       "end2end [B, K, 6]) for nc=8"),
    ([1, 100], None, "has shape [1, 100], which is none of the detector layouts"),
])
def test_shape_errors(shape, nc, message):
    with pytest.raises(InputError) as err:
        resolve_layout(shape, LayoutHint(nc=nc), source="output0")
    assert message in err.value.one_line()


def test_declared_layout_is_checked_against_the_shape():
    assert resolve_layout([1, 13, 100], LayoutHint(ULTRALYTICS, "metadata", 9), source="o") == (ULTRALYTICS, 9)
    with pytest.raises(InputError) as err:
        resolve_layout([1, 12, 100], LayoutHint(ULTRALYTICS, "metadata", 9), source="o")
    assert err.value.one_line() == ("o has shape [1, 12, 100], which is not the ultralytics layout [B, 4+nc, N] for "
                                    "nc=9 (layout from the file's metadata). Pass the layout the model writes with "
                                    "--layout (yolov5, ultralytics, end2end), or fix the file's metadata.")


def test_end2end_selection_runs_no_nms():
    """Two heavily overlapping boxes of one class both stay (the model selected them); the threshold and
    max_det apply, best first."""
    pred = torch.tensor([[[10, 10, 50, 50, 0.9, 3], [11, 11, 51, 51, 0.8, 3], [0, 0, 5, 5, 0.0005, 1],
                          [60, 60, 90, 90, 0.95, 0], [0, 0, 0, 0, 0.0, 0]]], dtype=torch.float32)
    out = select_end2end(pred, 0.001, 300)[0]
    assert out[:, 4].tolist() == pytest.approx([0.95, 0.9, 0.8])
    assert select_end2end(pred, 0.001, 2)[0].shape == (2, 6)


def test_ultralytics_conversion_scores_by_class_score():
    """Objectness 1: each box scores its class score, through the one NMS (same result as NMS on boxes and
    class scores directly)."""
    g = torch.Generator().manual_seed(0)
    n, nc = 200, 3
    xy = torch.rand(1, 2, n, generator=g) * 100
    wh = torch.rand(1, 2, n, generator=g) * 30 + 5
    scores = torch.rand(1, nc, n, generator=g)
    pred = torch.cat((xy, wh, scores), 1)  # [1, 4+nc, N]
    converted = with_objectness(pred)
    assert converted.shape == (1, n, 5 + nc) and torch.equal(converted[0, :, 4], torch.ones(n))
    assert torch.equal(converted[0, :, 5:], scores[0].T)
    dets = non_max_suppression(converted, 0.25, 0.65)[0]
    assert dets.shape[0] > 0 and (dets[:, 4] > 0.25).all()
    # every kept score is one of the raw class scores of its box
    raw = set(scores.flatten().tolist())
    assert all(s in raw for s in dets[:, 4].tolist())


def test_decoder_checks_values_on_the_first_batch():
    dec = OutputDecoder(LayoutHint(END2END, "--layout", 4), source="o")
    bad = torch.tensor([[[0, 0, 10, 10, 0.9, 4.0]]])
    with pytest.raises(InputError, match=r"class column values from 4 to 4, not class ids in \[0, 4\)"):
        dec.settle(bad)
    dec = OutputDecoder(LayoutHint(YOLOV5, "model", None), source="o")
    dec.settle(torch.zeros(2, 50, 9))
    assert dec.layout == YOLOV5 and dec.nc == 4
    with pytest.raises(InputError, match="not the yolov5 layout"):
        dec.settle(torch.zeros(2, 50, 11))  # a later batch in another shape: checked every time (nc=4 now)


def test_engine_layout_from_its_build_record(tmp_path):
    """An engine built by trtqat build: the ONNX named in <engine>.build.json gives the layout."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph)
    model.metadata_props.add(key="task", value="detect")
    model.metadata_props.add(key="end2end", value="True")
    model.metadata_props.add(key="names", value=NAMES8)
    src = tmp_path / "yolo26n.onnx"
    onnx.save(model, str(src))
    engine = tmp_path / "yolo26n.engine"
    engine.write_bytes(b"plan")
    assert engine_hint(engine) == LayoutHint()  # no build record: the engine's shape decides
    (tmp_path / "yolo26n.engine.build.json").write_text(json.dumps({"onnx": str(src)}))
    assert engine_hint(engine) == LayoutHint(END2END, "metadata", 8)
    src.unlink()  # the ONNX is gone: back to the shape
    assert engine_hint(engine) == LayoutHint()
