"""Rule files: the shipped policies, extends/merging, the ignore policy, and malformed files (exit 2)."""
from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from trtqat.cli import main
from trtqat.errors import InputError
from trtqat.graph.policy import RULES_DIR, load_policy_file, policy_file
from trtqat.models.family import FamilyInfo
from trtqat.quant.share import load_policy

STABLE = {"TQ001": "qdq.concat-shared-scale", "TQ002": "qdq.maxpool-passthrough",
          "TQ003": "qdq.resize-nearest-passthrough", "TQ004": "qdq.data-movement-passthrough",
          "TQ005": "qdq.residual-add-shared-scale", "TQ006": "qdq.sibling-shared-input",
          "TQ007": "qdq.float-fanout"}
#: the block rules of ultralytics.yaml (quantizers inside C2f/C3k2/C2PSA, PSABlock/SPPF, Attention forwards)
BLOCKS = {"TQ008": "qdq.split-input", "TQ009": "qdq.block-residual-add", "TQ010": "qdq.attention-int8"}


def test_shipped_policies_have_stable_ids_and_reasons():
    for name in ("default", "yolov5", "yolov7"):
        pol = load_policy_file(RULES_DIR / f"{name}.yaml")
        assert {r.id: r.name for r in pol.rules} == STABLE
        assert all(len(r.why) > 40 and "\n" not in r.why for r in pol.rules)
    assert load_policy_file(RULES_DIR / "default.yaml").fanout_mode() == "report"
    assert load_policy_file(RULES_DIR / "yolov5.yaml").fanout_mode() == "quantize-input"
    assert load_policy_file(RULES_DIR / "yolov7.yaml").fanout_mode() == "report"
    assert load_policy_file(RULES_DIR / "default.yaml").rule("TQ001").ops == ("Concat",)


def test_policy_file_by_family(tmp_path):
    assert policy_file("yolov5") == RULES_DIR / "yolov5.yaml"
    assert policy_file("unknown") == RULES_DIR / "default.yaml"
    assert policy_file("yolov7", tmp_path / "x.yaml") == tmp_path / "x.yaml"


@pytest.mark.parametrize("family,detect,pattern", [("yolov5", 24, r"model\.24\.m\..*"),
                                                   ("yolov7", 105, r"model\.105\.m\..*"),
                                                   ("unknown", 9, r"model\.9\.m\..*")])
def test_ignore_resolves_detect_outputs(family, detect, pattern):
    pol = load_policy(FamilyInfo(family, detect, f"model.{detect}", detect + 1))
    assert pol.ignore == (pattern,)
    assert re.match(pattern, f"model.{detect}.m.0") and re.match(pattern, f"model.{detect}.m.2")
    assert not re.match(pattern, f"model.{detect}") and not re.match(pattern, f"model.{detect - 1}.m.0")


def test_extends_merges_rules_by_id_and_concatenates_ignore(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("extends: yolov7\nignore_detect_outputs: false\nignore: ['model\\.0\\..*']\nrules:\n"
                 "  - {id: TQ004, enabled: false}\n"
                 "  - {id: TQ101, name: user.tie, kind: group, members: [model.6.conv, model.7.conv], why: test}\n")
    pol = load_policy_file(f)
    assert pol.sources == (str(RULES_DIR / "default.yaml"), str(RULES_DIR / "yolov7.yaml"), str(f))
    assert not pol.rule("TQ004").enabled and pol.rule("TQ004").ops  # fields not set are inherited
    assert pol.rule("TQ101").members == ("model.6.conv", "model.7.conv")
    assert pol.resolve((r"model\.105\.m\..*",)).ignore == (r"model\.0\..*",)  # detect outputs turned off


BAD = {
    "unknown-top-key": ("extends: default\nignores: []\n", "key 'ignores' is unknown", "Allowed keys: extends"),
    "unknown-rule-key": ("rules:\n  - {id: TQ001, name: a.b, kind: align, ops: [Concat], why: x, op: [Concat]}\n",
                         "key 'rules[0] (TQ001).op' is unknown", "Allowed keys: id, name, kind, why, enabled, ops"),
    "bad-op": ("rules:\n  - {id: TQ001, name: a.b, kind: align, ops: [Concatt], why: x}\n",
               "key 'rules[0] (TQ001).ops' lists 'Concatt'", "Allowed values: "),
    "non-commuting-op": ("rules:\n  - {id: TQ001, name: a.b, kind: align, ops: [Conv], why: x}\n",
                         "which is not an op TensorRT moves Q/DQ across", "MaxPool"),
    "bad-regex": ("ignore: ['model\\.(24']\n", "key 'ignore[0]' is not a valid regular expression",
                  "Allowed values: Python regexes"),
    "bad-kind": ("rules:\n  - {id: TQ001, name: a.b, kind: share, why: x}\n", "key 'rules[0] (TQ001).kind'",
                 "Allowed values: align, residual-add, siblings, float-fanout, group"),
    "bad-mode": ("extends: default\nrules:\n  - {id: TQ007, mode: quantise}\n", "key 'rules[0] (TQ007).mode'",
                 "Allowed values: report, quantize-input"),
    "bad-id": ("rules:\n  - {id: tq1, name: a.b, kind: siblings, why: x}\n", "key 'rules[0] (tq1).id'", "TQ001"),
    "duplicate-id": (("rules:\n  - {id: TQ001, name: a.b, kind: siblings, why: x}\n"
                      "  - {id: TQ001, name: a.c, kind: siblings, why: x}\n"), "key 'rules[1].id' repeats", "own id"),
    "missing-why": ("rules:\n  - {id: TQ001, name: a.b, kind: siblings}\n", "key 'rules[0] (TQ001).why'", "why"),
    "not-yaml": ("rules: [\n", "is not valid YAML", "Fix the YAML"),
    "bad-block-mode": ("rules:\n  - {id: TQ008, name: a.b, kind: block, mode: split, blocks: [C2f], why: x}\n",
                       "key 'rules[0] (TQ008).mode' is 'split'", "Allowed values: split-input, residual-add, attention"),
    "unknown-block": ("rules:\n  - {id: TQ008, name: a.b, kind: block, mode: split-input, blocks: [C2fAttn], why: x}\n",
                      "lists 'C2fAttn', which mode 'split-input' cannot quantize", "Allowed values: C2f, C3k2, C2PSA"),
    "block-without-blocks": ("rules:\n  - {id: TQ008, name: a.b, kind: block, mode: attention, why: x}\n",
                             "key 'rules[0] (TQ008).blocks' must be a non-empty list", "Allowed values: "),
    "extends-missing": ("extends: nothere.yaml\n", "key 'extends' names 'nothere.yaml', which does not exist",
                        "Allowed values: a shipped policy"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_rule_file_exits_2_naming_file_and_key(tmp_path, case):
    text, problem, hint = BAD[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    with pytest.raises(InputError) as err:
        load_policy_file(f)
    assert problem in err.value.message and hint in (err.value.hint or "")
    result = CliRunner().invoke(main, ["rules", "--list", "--rules", str(f)])
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and case in result.output and "Traceback" not in result.output


def test_extends_loop_names_the_chain(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: ./a.yaml\n")
    result = CliRunner().invoke(main, ["rules", "--list", "--rules", str(tmp_path / "a.yaml")])
    assert result.exit_code == 2
    assert "key 'extends' forms a loop" in result.output and "a.yaml -> " in result.output


def test_list_prints_every_rule_and_family_settings():
    result = CliRunner().invoke(main, ["rules", "--list", "--json"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.output)
    assert [(r["id"], r["name"]) for r in data["rules"]] == list({**STABLE, **BLOCKS}.items())
    fanout = data["rules"][6]["settings"]
    assert fanout == {"default": "report", "yolov5": "quantize-input", "yolov7": "report", "ultralytics": "report"}
    assert [r["settings"] for r in data["rules"][7:]] == [{"ultralytics": "split-input"},
                                                          {"ultralytics": "residual-add"}, {"ultralytics": "attention"}]
    assert data["rules"][7]["blocks"] == ["C2f", "C3k2", "C2PSA"] and data["rules"][7]["kind"] == "block"
    assert {(o["file"], o["id"]) for o in data["overrides"]} == {("yolov5", "TQ007"), ("yolov7", "TQ007"),
                                                                  ("ultralytics", "TQ007"),
                                                                  *(("ultralytics", i) for i in BLOCKS)}
    text = CliRunner().invoke(main, ["rules", "--list"]).output
    assert all(i in text and n in text for i, n in {**STABLE, **BLOCKS}.items())


def test_rules_without_checkpoint_is_a_usage_error():
    result = CliRunner().invoke(main, ["rules"])
    assert result.exit_code == 2 and "missing argument CKPT" in result.output


def test_rule_overrides_from_the_command_line():
    from trtqat.errors import UsageError

    pol = load_policy_file(RULES_DIR / "yolov5.yaml")
    assert pol.with_overrides(["TQ007=report"]).fanout_mode() == "report"
    assert pol.with_overrides(["TQ007=off"]).active("float-fanout") == []
    assert pol.with_overrides(["TQ007=off", "TQ007=quantize-input"]).fanout_mode() == "quantize-input"
    off = pol.with_overrides([" TQ004 = off "])
    assert not off.rule("TQ004").enabled and off.rule("TQ001").enabled
    assert pol.with_overrides([]) == pol and pol.fanout_mode() == "quantize-input"  # the original is untouched
    for bad, message in (("TQ007", "is not ID=SETTING"), ("TQ099=on", "no rule 'TQ099'"),
                         ("TQ001=report", "'report' is not a setting of TQ001 (align)"),
                         ("TQ007=maybe", "Allowed values: on, off, report, quantize-input")):
        with pytest.raises(UsageError) as err:
            pol.with_overrides([bad])
        assert message in err.value.one_line()


def test_block_rules_switch_on_and_off_only():
    from trtqat.errors import UsageError

    pol = load_policy_file(RULES_DIR / "ultralytics.yaml")
    assert [(r.id, r.mode, r.blocks) for r in pol.active("block")] == [
        ("TQ008", "split-input", ("C2f", "C3k2", "C2PSA")), ("TQ009", "residual-add", ("PSABlock", "SPPF")),
        ("TQ010", "attention", ("Attention",))]
    assert [r.id for r in pol.with_overrides(["TQ010=off"]).active("block")] == ["TQ008", "TQ009"]
    with pytest.raises(UsageError) as err:
        pol.with_overrides(["TQ010=report"])
    assert "Allowed values: on, off" in err.value.one_line()
    assert pol.fanout_mode() == "report"  # a block rule's mode is not a fan-out mode


def test_float_reason_names_the_pattern_and_its_source():
    pol = load_policy(FamilyInfo("yolov5", 24, "model.24", 25))
    assert pol.float_reason("model.24.m.2") == r"detect output conv (model\.24\.m\..*: ignore_detect_outputs of yolov5.yaml)"
    assert pol.float_reason("model.24.m.2", [r"model\.24\."]) == r"--ignore-policy model\.24\."
    assert pol.float_reason("model.24.m.2", family_ignore=False) == "no ignore pattern matches"
