"""Issue 27 item 4: lint says what it sees. A graph without Q/DQ is a float model (not "fully fused"), and
parser errors (error-severity PARSE findings) make ``trtqat lint`` exit 1 after its report, as Polygraphy's
``check lint`` does."""
from __future__ import annotations

import json

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from test_parser_checks import _conv_model as _conv_model_unchecked

from trtqat.cli import main
from trtqat.graph.lint import lint_model


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _float_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _conv_model(**kw) -> onnx.ModelProto:
    """The parser-check conv model with a declared output shape, so that onnx.checker's full check passes
    (no PARSE011) and only the finding under test remains."""
    model = _conv_model_unchecked(**kw)
    name = model.graph.output[0].name
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4, 4, 4]))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_float_model_is_named_in_table_and_json(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(_float_model(), path)
    r = _run("lint", path)
    assert r.exit_code == 0, r.output
    first = r.stdout.splitlines()[0]
    assert first.startswith("lint (TensorRT 10): no Q/DQ nodes: a float model; quantize it first (1 compute layers")
    assert "fully fused" not in r.stdout
    s = json.loads(_run("lint", path, "--json").stdout)["summary"]
    assert s["float_model"] is True and s["standalone_qdq"] == 0 and s["parse_errors"] == []


def test_quantized_model_is_not_a_float_model():
    s = lint_model(_conv_model()).summary
    assert s["float_model"] is False and s["parse_errors"] == []


def test_parse_error_exits_1_after_the_report(tmp_path):
    path = tmp_path / "zero_point.onnx"
    onnx.save(_conv_model(zp=np.array(3, np.int8)), path)  # PARSE001: TensorRT is symmetric only
    r = _run("lint", path)
    assert r.exit_code == 1
    assert r.stdout.splitlines()[0].startswith("lint (TensorRT 10): ")  # the prediction is still made
    assert "PARSE001" in r.stdout
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: TensorRT's parser would reject or mis-build ")
    assert err[0].endswith("(PARSE001). Fix the PARSE findings listed above and lint again.")
    j = _run("lint", path, "--json")
    assert j.exit_code == 1
    s = json.loads(j.stdout)["summary"]
    assert s["parse_errors"] == ["PARSE001"] and s["refused"] is False and s["standalone_qdq"] is not None


def test_parse_warning_alone_exits_0(tmp_path):
    path = tmp_path / "uint8_zp.onnx"
    onnx.save(_conv_model(zp=np.array(0, np.uint8)), path)  # PARSE009 is a warning
    r = _run("lint", path, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["summary"]["parse_errors"] == [] and "PARSE009" in {f["rule_id"] for f in data["findings"]}


def test_refused_model_lists_its_parse_errors(tmp_path):
    from test_parser_checks import _fp16_scale_model

    path = tmp_path / "bad_types.onnx"
    onnx.save(_fp16_scale_model(), path)
    r = _run("lint", path, "--json")
    assert r.exit_code == 1
    s = json.loads(r.stdout)["summary"]
    assert s["refused"] is True and {"PARSE010", "PARSE011"} <= set(s["parse_errors"]) and s["float_model"] is False
