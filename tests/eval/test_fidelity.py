"""Label-free fidelity: cosine / SQNR sums and agreement mAP."""
import math

import pytest
import torch

from trtqat.eval.fidelity import AgreementMeter, FidelityMeter, fidelity_score, flatten_outputs


def test_sqnr_and_cosine_exact():
    ref = torch.full((10,), 1.0)  # signal power 10
    test = ref.clone()
    test[0] += 1.0  # noise power 1 -> 10 dB
    meter = FidelityMeter()
    meter.update((ref, [ref * 2]), (test, [ref * 2]))
    res = meter.result()
    assert list(res) == ["out[0]", "out[1][0]"]
    assert math.isclose(res["out[0]"]["sqnr_db"], 10.0)
    assert math.isclose(res["out[0]"]["cosine"], 11 / math.sqrt(10 * 13))
    assert res["out[1][0]"] == {"cosine": 1.0, "sqnr_db": math.inf}
    assert math.isclose(fidelity_score(res), (10.0 + 200.0) / 2)  # inf capped at 200 dB


def test_fidelity_accumulates_over_batches():
    meter = FidelityMeter()
    meter.update(torch.ones(4), torch.ones(4))
    meter.update(torch.ones(4), torch.zeros(4))
    assert math.isclose(meter.result()["out"]["sqnr_db"], 10 * math.log10(8 / 4))


def test_flatten_outputs_names():
    names = [n for n, _ in flatten_outputs((torch.zeros(1), [torch.zeros(1), torch.zeros(1)]))]
    assert names == ["out[0]", "out[1][0]", "out[1][1]"]


def test_agreement_perfect_partial_and_empty():
    ref = [torch.tensor([[10., 10, 50, 50, 0.9, 0], [60, 60, 100, 100, 0.8, 3], [0, 0, 5, 5, 0.1, 1]])]
    same = AgreementMeter(size=128)
    same.update(ref, ref)
    assert same.result() == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0), "objects": 2}  # 0.1 < gt_conf
    half = AgreementMeter(size=128)
    half.update(ref, [ref[0][:1]])
    assert half.result()["map"] < 0.51 and half.result()["objects"] == 2
    none = AgreementMeter(size=128)
    none.update([ref[0][2:]], [ref[0][2:]])
    assert none.result()["map"] is None
