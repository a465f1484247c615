"""One parametrized runner over tests/rules/cases/<RULE>.yaml: each scale-sharing rule on small graphs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from onnx_cases import case_model

from trtqat.graph.policy import RULES_DIR, load_policy_file
from trtqat.graph.qdq import graph_from_model
from trtqat.graph.scale_groups import find_scale_sets

CASES_DIR = Path(__file__).parent / "cases"
FILES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(CASES_DIR.glob("*.yaml"))}
CASES = [(data["rule"], case) for data in FILES.values() for case in data["cases"]]
DEFAULT = load_policy_file(RULES_DIR / "default.yaml")


def _policy(case: dict):
    rules = []
    for r in DEFAULT.rules:
        if r.id in case.get("disable", ()):
            r = dataclasses.replace(r, enabled=False)
        if r.kind == "float-fanout" and "mode" in case:
            r = dataclasses.replace(r, mode=case["mode"])
        rules.append(r)
    return dataclasses.replace(DEFAULT, rules=tuple(rules))


@pytest.mark.parametrize("rule_id,case", CASES, ids=[f"{r}-{c['id']}" for r, c in CASES])
def test_rule_case(rule_id, case):
    graph = graph_from_model(case_model(case["outputs"], case["body"]))
    found = find_scale_sets(graph, _policy(case), probes=case.get("probes"))
    got = sorted((sorted(s.q_nodes), list(s.rules)) for s in found.sets)
    want = sorted((sorted(g["q"]), g["rules"]) for g in case["expect"]["groups"])
    assert got == want, case["why"]
    for g in case["expect"]["groups"]:
        if "ops" in g:
            assert next(s.ops for s in found.sets if sorted(s.q_nodes) == sorted(g["q"])) == tuple(g["ops"])
    if "fanouts" in case["expect"]:
        fans = sorted((f.tensor, list(f.float_readers), list(f.converted)) for f in found.fanouts)
        assert fans == sorted((f["tensor"], f["float"], f["converted"]) for f in case["expect"]["fanouts"])
    for s in found.sets:  # every set names the ops that tied it, or is a pure sibling/fan-out set
        assert s.ops or set(s.rules) <= {"TQ006", "TQ007"}


def test_every_rule_has_a_case():
    shipped = {r.id for name in ("default", "yolov5", "yolov7")
               for r in load_policy_file(RULES_DIR / f"{name}.yaml").rules if r.kind != "group"}
    covered = {rule_id for rule_id, _ in CASES}
    assert shipped == covered
    fired = {r for _, c in CASES for g in c["expect"]["groups"] for r in g["rules"]}
    assert shipped - {"TQ007"} <= fired  # TQ007 also shows through its fan-out expectations


def test_case_files_are_named_by_rule():
    assert {stem: data["rule"] for stem, data in FILES.items()} == {stem: stem for stem in FILES}
