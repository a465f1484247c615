"""qdq helpers: loading, Q/DQ discovery, constant parameters, maps, equal-scale merging."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from qdq_builders import QdqBuilder

from trtqat.errors import InputError
from trtqat.graph import qdq


def _siblings(scale_b: float | None = None):
    b = QdqBuilder()
    a = b.conv("x", "c1", 2, 2, 1, bn=False, act=None)
    b.conv(a, "c2", 2, 2, 1, bn=False, act=None)
    xin = b.qdq(a, "c3_in", scale=scale_b)
    y = b.node("Relu", [xin], "r")
    return b.model([("x", [1, 2, 4, 4])], [(y, [1, 2, 4, 4]), ("c2_out", [1, 2, 4, 4])])


def test_load_graph_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        qdq.load_graph(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\xffnot onnx at all")
    with pytest.raises(InputError):
        qdq.load_graph(bad)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="no graph nodes"):
        qdq.load_graph(empty)


def test_load_graph_roundtrip(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_siblings(), path)
    g = qdq.load_graph(path)
    assert qdq.opset_of(g) == 13
    assert [n.name for n in qdq.qdq_nodes(g)][:2] == ["c1_in_q", "c1_in_dq"]


def test_params_maps_and_dq_input():
    g = qdq.graph_from_model(_siblings())
    nodes = {n.name: n for n in g.nodes}
    p = qdq.read_qparams(nodes["c1_w_dq"])
    assert p.per_channel and p.axis == 0 and p.scale.shape == (2,)
    assert not qdq.read_qparams(nodes["c1_in_q"]).per_channel
    assert qdq.is_weight_qdq(nodes["c1_w_q"]) and qdq.is_weight_qdq(nodes["c1_w_dq"])
    assert not qdq.is_weight_qdq(nodes["c1_in_dq"])
    assert qdq.dq_input_of(nodes["c1"], 0).name == "c1_in_dq"
    assert qdq.dq_input_of(nodes["c1"], 1).name == "c1_w_dq"
    assert qdq.producer_map(g)["c1_out"].name == "c1"
    assert [n.name for n in qdq.consumer_map(g)["c1_out"]] == ["c2_in_q", "c3_in_q"]


def test_constant_node_scale_is_constant():
    b = QdqBuilder()
    s = b.node("Constant", [], "cs", value=onnx.numpy_helper.from_array(np.array(0.5, np.float32)))
    q = b.node("QuantizeLinear", ["x", s], "q")
    model = b.model([("x", [2])], [(q, None)], check=False)
    node = {n.name: n for n in qdq.graph_from_model(model).nodes}["q"]
    assert float(qdq.read_qparams(node).scale) == 0.5


@pytest.mark.parametrize("scale_b,merged", [(None, {"c2_in_q": ["c3_in_q"]}), (0.5, {})])
def test_merge_equal_scale_qs(scale_b, merged):
    g = qdq.graph_from_model(_siblings(scale_b))
    assert qdq.merge_equal_scale_qs(g) == merged
    g.cleanup()
    names = [n.name for n in g.nodes]
    assert ("c3_in_q" in names) == (not merged)
    if merged:  # the DQ of the dropped Q now reads the kept Q
        dq = next(n for n in g.nodes if n.name == "c3_in_dq")
        assert dq.inputs[0].inputs[0].name == "c2_in_q"
