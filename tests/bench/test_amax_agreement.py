"""``benchmarks.ptq.compare_amax``: the PTQ benchmark's "amax within one bin of the reference flow" counts
each flow's amax in its own bins, so a grid that is 1e-5 wider (the two flows run other convolution kernels)
is not read as a disagreement, while a search two bins off still is."""
from benchmarks.ptq import compare_amax

WIDTH = 0.004


def test_same_bin_on_grids_1e5_apart_is_agreement():
    ours, theirs = {"q": 4000.5 * WIDTH * (1 + 1e-5)}, {"q": 4000.5 * WIDTH}
    agreement = compare_amax(ours, theirs, {"q": WIDTH * (1 + 1e-5)}, {"q": WIDTH})
    assert agreement["max_diff_bins"] < 1e-6 and agreement["within_one_bin"]
    # counted in the reference's bins alone, the same choice reads as 0.04 bins, a neighbour as 1.04
    assert abs(ours["q"] - theirs["q"]) / WIDTH > 0.039


def test_neighbouring_bin_agrees_and_two_bins_do_not():
    widths = {"q": WIDTH}
    assert compare_amax({"q": 101.5 * WIDTH}, {"q": 100.5 * WIDTH}, widths, widths)["within_one_bin"]
    far = compare_amax({"q": 102.5 * WIDTH}, {"q": 100.5 * WIDTH}, widths, widths)
    assert not far["within_one_bin"] and abs(far["max_diff_bins"] - 2) < 1e-6


def test_a_quantizer_missing_from_one_flow_fails():
    widths = {"a": WIDTH, "b": WIDTH}
    got = compare_amax({"a": 1.0}, {"a": 1.0, "b": 2.0}, widths, widths)
    assert got["same_names"] is False and not got["within_one_bin"]


def test_shared_quantizers_are_counted_not_compared():
    widths = {"a": WIDTH, "s": WIDTH}
    got = compare_amax({"a": 1.0, "s": 2.0}, {"a": 1.0, "s": 1.0}, widths, widths, shared=["s"])
    assert got["within_one_bin"] and got["compared"] == 1 and got["shared_not_compared"] == 1
