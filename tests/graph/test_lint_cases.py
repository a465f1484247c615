"""One parametrized runner over lint_cases.yaml: each TensorRT op-behaviour rule with its expected outcome."""
from __future__ import annotations

from pathlib import Path

import onnx
import onnx_cases
import pytest
import yaml

from trtqat.graph.lint import lint_model

CASES = yaml.safe_load((Path(__file__).parent / "lint_cases.yaml").read_text())


def case_model(case: dict) -> onnx.ModelProto:
    """The case's body (ONNX textual syntax with the QDQ/QCONV/FCONV macros of tests/onnx_cases.py)."""
    return onnx_cases.case_model(case["outputs"], case["body"])


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
    assert not [f for f in report.findings if f.rule_id.startswith("PARSE") and f.rule_id not in exp.get("findings", [])]


def test_every_case_checks_the_standalone_set():
    assert all("standalone" in c["expect"] or "n_standalone" in c["expect"] for c in CASES)
