"""One parametrized runner over lint_cases.yaml: each TensorRT op-behaviour rule with its expected outcome."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
import yaml

from trtqat.graph.lint import lint_model

CASES = yaml.safe_load((Path(__file__).parent / "lint_cases.yaml").read_text())


def _floats(n: int) -> str:
    return ",".join(str(v) for v in np.round(np.linspace(-0.5, 0.5, n), 3))


HEADER = (
    "<float s1 = {0.01}, float s2 = {0.02}, float s3 = {0.03}, float s4 = {0.04}, int8 zp0 = {0},"
    f" float[2,2,1,1] w2 = {{{_floats(4)}}}, float[2,4,1,1] w4 = {{{_floats(8)}}},"
    f" float[2,6,1,1] w6 = {{{_floats(12)}}}, float[2] ws = {{0.01,0.01}}, int8[2] wz = {{0,0}},"
    " float lo = {0}, float hi = {6}, float[4] sc = {1,1,2,2}>"
)
MACRO = re.compile(r"^\s*\[(\w+)\]\s*(\w+)\s*=\s*(QDQ|QCONV\d*|FCONV)\((\w+)(?:,\s*(\w+))?\)\s*$")


def _qdq(name: str, x: str, s: str, y: str) -> list[str]:
    return [f"[{name}_q] {name}_qo = QuantizeLinear({x}, {s}, zp0)", f"[{name}_dq] {y} = DequantizeLinear({name}_qo, {s}, zp0)"]


def expand(body: str) -> str:
    """Expand the QDQ / QCONV / FCONV macros of a case body into ONNX textual syntax."""
    lines = []
    for line in body.strip().splitlines():
        m = MACRO.match(line)
        if not m:
            lines.append(line.strip())
            continue
        name, y, macro, x, s = m.groups()
        if macro == "QDQ":
            lines += _qdq(name, x, s, y)
        elif macro == "FCONV":
            lines.append(f"[{name}] {y} = Conv({x}, w2)")
        else:
            w = f"w{macro[5:] or 2}"
            lines += _qdq(f"{name}_in", x, s, f"{name}_in_o")
            lines += [f"[{name}_w_q] {name}_wq = QuantizeLinear <axis=0> ({w}, ws, wz)",
                      f"[{name}_w_dq] {name}_wdq = DequantizeLinear <axis=0> ({name}_wq, ws, wz)",
                      f"[{name}] {y} = Conv({name}_in_o, {name}_wdq)"]
    return "\n  ".join(lines)


def case_model(case: dict) -> onnx.ModelProto:
    text = (f'<ir_version: 8, opset_import: ["" : 13]>\ng (float[1,2,8,8] x) => ({case["outputs"]})\n'
            f"{HEADER}\n{{\n  {expand(case['body'])}\n}}")
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_lint_case(case):
    report = lint_model(case_model(case))
    exp = case["expect"]
    names = sorted(s.name for s in report.standalone)
    if "standalone" in exp:
        assert names == sorted(exp["standalone"]), case["why"]
    if "n_standalone" in exp:
        assert len(names) == exp["n_standalone"], names
    assert report.summary["standalone_qdq"] == len(names)
    layers = {x.name: x for x in report.layers}
    for key, attr, want in (("int8", "precision", "INT8"), ("float", "precision", "float"),
                            ("int8_out", "output", "INT8"), ("float_out", "output", "float")):
        for name in exp.get(key, []):
            assert getattr(layers[name], attr) == want, (name, layers[name], case["why"])
    rules = {s.name: s.rule_id for s in report.standalone}
    for name, rule in exp.get("rules", {}).items():
        assert rules[name] == rule, (name, [s.reason for s in report.standalone if s.name == name])
    for name, fused in exp.get("fused", {}).items():
        assert set(fused) <= set(layers[name].fused)
    found = {f.rule_id for f in report.findings}
    for rule in exp.get("findings", []):
        assert rule in found
    assert not [f for f in report.findings if f.rule_id.startswith("PARSE")]


def test_every_case_checks_the_standalone_set():
    assert all("standalone" in c["expect"] or "n_standalone" in c["expect"] for c in CASES)
