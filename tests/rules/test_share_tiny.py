"""Discovery and application on a tiny torch model: graph identity, restoration, one shared object."""
from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from trtqat.errors import InputError
from trtqat.graph.policy import RULES_DIR, load_policy_file
from trtqat.quant.calibrate import calibrate
from trtqat.quant.quantizers import named_quantizers, quantizer_aliases
from trtqat.quant.replace import replace_modules
from trtqat.quant.share import apply_groups, apply_rules, discover

SIZE = 16


class Tiny(torch.nn.Module):
    """c1 -> {c2, pool} -> concat -> c3, and a float ``head`` conv also reading c1's output."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 4, 1)
        self.c2 = torch.nn.Conv2d(4, 4, 1)
        self.pool = torch.nn.MaxPool2d(3, 1, 1)
        self.c3 = torch.nn.Conv2d(8, 4, 1)
        self.head = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a = self.c1(x)
        return self.c3(torch.cat([self.c2(a), self.pool(a)], 1)), self.head(a)


def _model():
    torch.manual_seed(0)
    model = Tiny().eval()
    replace_modules(model, ("head",))
    return model


def _policy(mode="report", path=None):
    """default.yaml (or ``path``) resolved as for a model whose detect output layer is ``head``."""
    pol = load_policy_file(path or RULES_DIR / "default.yaml")
    rules = tuple(dataclasses.replace(r, mode=mode) if r.kind == "float-fanout" else r for r in pol.rules)
    return dataclasses.replace(pol, rules=rules).resolve(("head",))


def test_discover_maps_q_nodes_to_quantizers_and_restores_the_model():
    model = _model()
    before = [(n, id(q)) for n, q in named_quantizers(model)]
    result = discover(model, _policy(), size=SIZE)
    assert [g.to_dict()["members"] for g in result.groups] == [["c2", "pool", "c3"]]
    g = result.groups[0]
    assert (g.rule, g.rule_name, g.rules) == ("TQ001", "qdq.concat-shared-scale", ("TQ001", "TQ002", "TQ006"))
    assert sorted(op.rsplit("/", 1)[-1] for op in g.ops) == ["Concat", "MaxPool"]
    assert [(f.float_readers, f.converted) for f in result.fanouts] == [(("head",), ())]
    # nothing left behind: no fingerprint amax, no probe, same quantizer objects
    assert [(n, id(q)) for n, q in named_quantizers(model)] == before
    assert not any(hasattr(q, "_amax") for _, q in named_quantizers(model))
    assert type(model.head) is torch.nn.Conv2d


def test_apply_shares_one_object_calibrated_on_the_union():
    model = _model()
    groups = apply_rules(model, _policy("quantize-input"), size=SIZE)
    assert [list(g.members) for g in groups] == [["c2", "pool", "c3", "head"]]
    assert groups[0].converted == ("head",)
    shared = model.c2._input_quantizer
    assert model.pool._input_quantizer is shared and model.c3._input_quantizer is shared
    assert model.head._input_quantizer is shared and type(model.head).__name__ == "QuantConv2d"
    assert model.c1._input_quantizer is not shared
    assert sorted(quantizer_aliases(model)[id(shared)]) == ["c2._input_quantizer", "c3._input_quantizer",
                                                            "head._input_quantizer", "pool._input_quantizer"]
    calibrate(model, [torch.rand(2, 3, SIZE, SIZE) for _ in range(2)], method="max")
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)
    assert again.c3._input_quantizer is again.head._input_quantizer
    assert float(again.c3._input_quantizer._amax) == float(shared._amax) > 0


def test_group_rule_merges_named_members(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("extends: default\nrules:\n  - {id: TQ101, name: user.tie, kind: group, members: [c1, c3], "
                 "why: test}\n")
    model = _model()
    result = discover(model, _policy(path=f), size=SIZE)
    assert [(list(g.members), g.rules) for g in result.groups] == [
        (["c1", "c2", "pool", "c3"], ("TQ001", "TQ002", "TQ101", "TQ006"))]
    apply_groups(model, result)
    assert model.c1._input_quantizer is model.c3._input_quantizer


def test_group_rule_with_unknown_member_names_file_and_key(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("extends: default\nrules:\n  - {id: TQ101, name: user.tie, kind: group, members: [c1, head], "
                 "why: test}\n")
    with pytest.raises(InputError) as err:
        discover(_model(), _policy(path=f), size=SIZE)
    assert str(f) in err.value.message and "members" in err.value.message and "'head'" in err.value.message


def test_quantize_input_never_converts_an_explicitly_ignored_layer(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("extends: default\nignore: ['head']\n")
    model = _model()
    groups = apply_rules(model, _policy("quantize-input", path=f), size=SIZE)
    assert [list(g.members) for g in groups] == [["c2", "pool", "c3"]]
    assert type(model.head) is torch.nn.Conv2d
