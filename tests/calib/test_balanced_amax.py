"""``balanced_mse_amax``: one amax for tensors that share a scale, each member's error relative to its own
power. Checked against a direct fake-quant of the samples, not against the histogram code itself."""
import numpy as np

from trtqat.calib.amax import balanced_mse_amax, mse_amax
from trtqat.calib.histogram import AbsHistogram


def _hist(x: np.ndarray):
    h = AbsHistogram()
    h.collect(x)
    return h.histogram()


def _relative_mse(x: np.ndarray, amax: float) -> float:
    scale = 127.0 / amax
    q = np.clip(np.rint(x * scale), -127, 127) / scale
    return float(np.mean((q - x) ** 2) / np.mean(x ** 2))


def _members(seed: int = 0):
    rng = np.random.default_rng(seed)
    wide = rng.standard_normal(200_000).astype(np.float32) * 4.0
    narrow = rng.standard_normal(200_000).astype(np.float32) * 0.3
    return wide, narrow


def test_one_member_is_the_plain_mse_search():
    wide, _ = _members()
    assert balanced_mse_amax([_hist(wide)]) == mse_amax(*_hist(wide))


def test_a_narrow_member_gets_a_finer_grid_and_less_total_relative_error():
    wide, narrow = _members()
    merged = mse_amax(*_hist(np.concatenate([wide, narrow])))  # what one shared histogram gives
    balanced = balanced_mse_amax([_hist(wide), _hist(narrow)])
    assert balanced < 0.9 * merged  # the wide member is clipped harder so the narrow one keeps levels
    total = lambda a: _relative_mse(wide, a) + _relative_mse(narrow, a)  # noqa: E731
    assert total(balanced) < 0.8 * total(merged)


def test_a_member_counts_once_however_many_values_it_has():
    wide, narrow = _members()
    once = balanced_mse_amax([_hist(wide), _hist(narrow)])
    assert balanced_mse_amax([_hist(wide), _hist(np.tile(narrow, 5))]) == once
    # while in a merged histogram five times the narrow values pull the amax down
    assert mse_amax(*_hist(np.concatenate([wide, np.tile(narrow, 5)]))) != mse_amax(*_hist(np.concatenate([wide, narrow])))


def test_empty_members_are_ignored():
    wide, _ = _members()
    assert balanced_mse_amax([(None, None), _hist(wide)]) == mse_amax(*_hist(wide))
    assert balanced_mse_amax([(None, None)]) is None


def test_one_tensor_read_by_several_members_counts_once():
    wide, narrow = _members()
    assert balanced_mse_amax([_hist(wide), _hist(narrow), _hist(narrow), _hist(narrow)]) == \
        balanced_mse_amax([_hist(wide), _hist(narrow)])
