"""Constant-output "oracle" detectors: ONNX files (and a torch module) whose output holds the exact ground truth
of a labelled folder, written in one of the detector layouts ``trtqat eval`` reads.

The boxes come from the ground truth ``trtqat eval`` itself scores against (:func:`trtqat.eval.labels.
load_ground_truth`), mapped into network-input pixels through the letterbox of :mod:`trtqat.data.images`,
so a correct reading of any layout scores mAP@0.5:0.95 = 1.0. The output depends on the input only through
``0 * ReduceSum(images)`` (exactly 0): onnxruntime runs a real graph, and every batch of ``len(files)``
images gets the whole constant (evaluate with ``--batch-size`` = the number of images, one batch).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

NAMES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
NC = len(NAMES)
ANCHORS = 64  # N of the yolov5 / ultralytics oracles (> 4 + nc, as in any real detector)
KEEP = 32  # K of the end2end oracle (>= the most objects in one image)


def input_pixel_truth(files: list[Path], size: int, ann: Path | None = None) -> list[list[tuple]]:
    """Per image ``(class, x1, y1, x2, y2)`` of the ground truth, in pixels of the letterboxed input."""
    from trtqat.data.images import letterbox, read_rgb
    from trtqat.eval.labels import load_ground_truth

    gt = load_ground_truth(files, ann, NC)
    out = []
    for f in files:
        _, lb = letterbox(read_rgb(f), size)
        image_id = gt.image_ids[str(f)]
        rows = []
        for a in gt.coco["annotations"]:
            if a["image_id"] != image_id:
                continue
            x, y, w, h = a["bbox"]
            left, top = lb.pad
            rows.append((gt.class_to_category.index(a["category_id"]), x * lb.ratio + left, y * lb.ratio + top,
                         (x + w) * lb.ratio + left, (y + h) * lb.ratio + top))
        out.append(rows)
    return out


def layout_array(truth: list[list[tuple]], layout: str) -> np.ndarray:
    """The oracle output of ``truth`` in ``layout`` (empty slots: zero scores)."""
    n = len(truth)
    if layout == "end2end":
        out = np.zeros((n, KEEP, 6), np.float32)
        for i, rows in enumerate(truth):
            for k, (c, x1, y1, x2, y2) in enumerate(rows):
                out[i, k] = (x1, y1, x2, y2, 1.0, c)
        return out
    out = np.zeros((n, ANCHORS, 5 + NC), np.float32)
    for i, rows in enumerate(truth):
        for k, (c, x1, y1, x2, y2) in enumerate(rows):
            out[i, k, :5] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 1.0)
            out[i, k, 5 + c] = 1.0
    if layout == "yolov5":
        return out
    assert layout == "ultralytics", layout
    return np.ascontiguousarray(np.concatenate((out[..., :4], out[..., 5:]), -1).transpose(0, 2, 1))


def ultralytics_metadata(size: int, batch: int, end2end: bool) -> dict[str, str]:
    """What the Ultralytics exporter writes (keys and value formats as ``str()`` of its Python values)."""
    names = {i: n for i, n in enumerate(NAMES)}
    return {"description": "oracle detector", "author": "trtqat tests", "version": "8.3.0", "stride": "32",
            "task": "detect", "batch": str(batch), "imgsz": str([size, size]), "names": str(names),
            "args": str({"batch": batch, "half": False, "dynamic": False, "simplify": True, "opset": None,
                         "nms": False}),
            "channels": "3", "end2end": str(end2end)}


def yolov5_metadata() -> dict[str, str]:
    """What YOLOv5's export.py writes."""
    return {"stride": "32", "names": str({i: n for i, n in enumerate(NAMES)})}


def oracle_onnx(path: Path, array: np.ndarray, size: int, *, metadata: dict[str, str] | None = None,
                dynamic: bool = False, output_dims: list | None = None) -> Path:
    """An ONNX graph ``images [B, 3, S, S] -> output0 = array + 0 * ReduceSum(images)`` with ``metadata``.

    ``dynamic``: symbolic batch, height, width and output dims (``output_dims`` names them; default
    ``["batch", <dim 1>, "anchors"]``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = array.shape[0]
    in_dims = ["batch", 3, "height", "width"] if dynamic else [n, 3, size, size]
    out_dims = output_dims or (["batch", array.shape[1], "anchors"] if dynamic else list(array.shape))
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["truth", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "oracle",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_dims)],
        initializer=[numpy_helper.from_array(array.astype(np.float32), "truth"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
