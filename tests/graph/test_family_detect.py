"""The family of an ONNX from its exporter's metadata, else from its structure (a whole block, never one op),
named as the torch side names it (``ultralytics`` with its version ``v8``/``11``/``26``; ``yolov8`` accepted
as an alias), and ``trtqat lint`` saying which it found and from what."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from trtqat.cli import main
from trtqat.graph.family_detect import (
    ALIASES,
    FAMILIES,
    VERSIONS,
    Family,
    canonical_family,
    detect_onnx_family,
    family_from_graph,
    family_from_metadata,
    version_from_metadata,
)
from trtqat.graph.qdq import graph_from_model


def _model(nodes, inits, out_shape, metadata=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    return model


def dfl_head(weights=None, metadata=None) -> onnx.ModelProto:
    """[1, 64, 8, 8] -> [1, 4, 16, 64] -> bins first -> Softmax -> 1x1 conv (weights 0..15) -> distances."""
    w = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1) if weights is None else weights
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="dfl/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="dfl/Transpose", perm=[0, 2, 1, 3]),
             helper.make_node("Softmax", ["t"], ["s"], name="dfl/Softmax", axis=1),
             helper.make_node("Conv", ["s", "w"], ["y"], name="dfl/conv/Conv")]
    return _model(nodes, {"shape": np.array([1, 4, 16, 64], np.int64), "w": w}, [1, 1, 4, 64], metadata)


def classifier_softmax() -> onnx.ModelProto:
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"),
             helper.make_node("Softmax", ["p"], ["y"], name="softmax", axis=1)]
    return _model(nodes, {}, [1, 64, 1, 1])


def cross_stage_split(first_to_concat: bool = True) -> onnx.ModelProto:
    """C2f's cv1 -> Split in two -> a conv on the second chunk -> Concat of both chunks and the conv
    (``first_to_concat=False``: the first chunk goes through a conv too, which no Ultralytics block does)."""
    w1 = np.full((64, 64, 1, 1), 0.01, np.float32)
    wm = np.full((32, 32, 1, 1), 0.01, np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="cv1"),
             helper.make_node("Split", ["c", "sizes"], ["a", "b"], name="split", axis=1),
             helper.make_node("Conv", ["b", "wm"], ["h"], name="m.0")]
    first = "a"
    if not first_to_concat:
        nodes.append(helper.make_node("Conv", ["a", "wm"], ["a2"], name="other"))
        first = "a2"
    nodes.append(helper.make_node("Concat", [first, "b", "h"], ["y"], name="cat", axis=1))
    return _model(nodes, {"w1": w1, "wm": wm, "sizes": np.array([32, 32], np.int64)}, [1, 96, 8, 8])


def pools(kind: str, neck: bool) -> onnx.ModelProto:
    """A 2x2/s2 MaxPool (VGG or a YOLOv7 MP block) or an SPPF chain, with or without an upsample + Concat."""
    if kind == "mp":
        nodes = [helper.make_node("MaxPool", ["x"], ["m"], name="mp", kernel_shape=[2, 2], strides=[2, 2])]
        last, shape = "m", [1, 64, 4, 4]
    else:
        nodes = [helper.make_node("MaxPool", [a], [b], name=b, kernel_shape=[5, 5], pads=[2, 2, 2, 2])
                 for a, b in (("x", "m1"), ("m1", "m2"), ("m2", "m3"))]
        last, shape = "m3", [1, 64, 8, 8]
    inits = {}
    if neck:
        nodes += [helper.make_node("Resize", [last, "", "scales"], ["u"], name="up", mode="nearest"),
                  helper.make_node("Concat", ["u", "u"], ["y"], name="cat", axis=1)]
        inits["scales"] = np.array([1, 1, 2, 2], np.float32)
        shape = [1, 128, shape[2] * 2, shape[3] * 2]
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"], name="out"))
    return _model(nodes, inits, shape)


@pytest.mark.parametrize("build,expected", [
    (lambda: dfl_head(), "ultralytics"),
    (cross_stage_split, "ultralytics"),  # C2f / C3k2 / C2PSA: also YOLO26, which has no DFL
    (lambda: cross_stage_split(first_to_concat=False), "unknown"),
    (lambda: dfl_head(np.ones((1, 16, 1, 1), np.float32)), "unknown"),  # a softmax-weighted sum, not a DFL
    (classifier_softmax, "unknown"),  # a Softmax alone proves nothing
    (lambda: pools("mp", neck=False), "unknown"),  # VGG's 2x2 MaxPool
    (lambda: pools("mp", neck=True), "yolov7"),
    (lambda: pools("sppf", neck=True), "yolov5"),
    (lambda: pools("sppf", neck=False), "unknown"),
])
def test_family_from_structure(build, expected):
    assert family_from_graph(graph_from_model(build())) == expected


@pytest.mark.parametrize("meta,expected", [
    ({"task": "detect", "end2end": "True", "author": "Ultralytics"}, "ultralytics"),
    ({"task": "detect", "names": "{0: 'a'}"}, "ultralytics"),
    ({"trtqat_version": "0.1", "family": "yolov7"}, "yolov7"),
    ({"trtqat_version": "0.1", "family": "ultralytics", "version": "11", "task": "detect"}, "ultralytics"),
    ({"trtqat_version": "0.1", "family": "yolov8"}, "ultralytics"),  # the old name, read as its alias
    ({"family": "yolov7"}, None),  # not trtqat's: not trusted
    ({"stride": "32", "names": "{0: 'a'}"}, None),  # YOLOv5's exporter writes these, and so might others
    ({}, None),
])
def test_family_from_metadata(meta, expected):
    assert family_from_metadata(meta) == expected


@pytest.mark.parametrize("meta,expected", [
    ({"task": "detect", "description": "Ultralytics YOLOv8n model ", "version": "8.4.190"}, "v8"),
    ({"task": "detect", "description": "Ultralytics YOLO11s model trained on coco.yaml"}, "11"),
    ({"end2end": "True", "description": "Ultralytics YOLO26n model "}, "26"),
    ({"task": "detect", "description": "Ultralytics YOLOv5nu model "}, ""),  # a version trtqat has no name for
    ({"task": "detect", "version": "8.4.190"}, ""),  # the package's release, not the model's
    ({"trtqat_version": "0.1", "family": "ultralytics", "version": "26"}, "26"),
    ({"description": "YOLO11n"}, ""),  # no Ultralytics exporter key: not trusted
])
def test_version_from_metadata(meta, expected):
    assert version_from_metadata(meta) == expected


def test_names_and_aliases_match_the_torch_side():
    from trtqat.models import family as torch_family

    assert (torch_family.VERSION_V8, torch_family.VERSION_11, torch_family.VERSION_26) == VERSIONS
    assert torch_family.ULTRALYTICS_PACKAGE in FAMILIES
    assert canonical_family("yolov8") == ("ultralytics", "v8") and canonical_family("yolov7") == ("yolov7", "")
    assert {name for name, _ in ALIASES.values()} <= set(FAMILIES)


def test_metadata_wins_over_structure_and_says_so():
    graph = graph_from_model(pools("sppf", neck=True))
    assert detect_onnx_family(graph, {"task": "detect", "end2end": "False"}) == Family("ultralytics", "metadata")
    assert detect_onnx_family(graph, {"task": "detect", "description": "Ultralytics YOLO11n model "}) == Family(
        "ultralytics", "metadata", "11")
    assert detect_onnx_family(graph) == Family("yolov5", "structure")
    assert detect_onnx_family(graph_from_model(dfl_head()), {}) == Family("ultralytics", "structure", "v8")
    assert detect_onnx_family(graph_from_model(classifier_softmax()), {}) == Family("unknown")
    assert Family("ultralytics", "metadata", "11").label() == "ultralytics 11 (metadata)"
    assert Family("ultralytics", "structure").label() == "ultralytics (structure)"
    assert Family("unknown").label() == "unknown"


def _lint(path, *extra):
    return CliRunner().invoke(main, ["lint", str(path), *extra])


def test_lint_says_which_family_and_from_what(tmp_path):
    ultra = tmp_path / "yolo11n.onnx"
    onnx.save(dfl_head(metadata={"task": "detect", "end2end": "False", "author": "Ultralytics",
                                 "description": "Ultralytics YOLO11n model "}), ultra)
    r = _lint(ultra)
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].endswith("; family: ultralytics 11 (metadata)")
    s = json.loads(_lint(ultra, "--json").stdout)["summary"]
    assert (s["family"], s["family_from"], s["version"]) == ("ultralytics", "metadata", "11")
    bare = tmp_path / "dfl.onnx"
    onnx.save(dfl_head(), bare)  # a DFL and no attention: YOLOv8's head
    assert _lint(bare).stdout.splitlines()[0].endswith("; family: ultralytics v8 (structure)")
    other = tmp_path / "classifier.onnx"
    onnx.save(classifier_softmax(), other)
    first = _lint(other).stdout.splitlines()[0]
    assert "family" not in first
    s = json.loads(_lint(other, "--json").stdout)["summary"]
    assert (s["family"], s["family_from"], s["version"]) == ("unknown", None, None)
