"""The numpy histogram (onnxruntime path) against the torch calibrator (quantize path) on the same data:
same counts, same edges, same amax for every method. One bin definition serves both paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trtqat.calib.amax import METHODS, histogram_amax
from trtqat.calib.histogram import AbsHistogram, abs_counts, torch_linspace_f32
from trtqat.quant.calibrator import FastHistogramCalibrator


def _batches(seed: int, growth: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = [1.0, 2.5, 1.7, 6.0] if growth else [3.0, 1.0, 2.0, 0.5]
    return [(rng.standard_normal((2, 8, 16, 16)) * s).astype(np.float32) for s in scales]


def _both(batches: list[np.ndarray]):
    calib = FastHistogramCalibrator()
    hist = AbsHistogram()
    for b in batches:
        calib.collect(torch.from_numpy(b))
        hist.collect(b)
    return calib, hist


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("growth", [False, True])
def test_numpy_histogram_equals_the_torch_calibrator(seed, growth):
    calib, hist = _both(_batches(seed, growth))
    t_counts, t_edges = calib.histogram()
    counts, edges = hist.histogram()
    np.testing.assert_array_equal(counts, t_counts)
    assert counts.sum() == sum(b.size for b in _batches(seed, growth))
    if growth:  # range extensions happened: torch.arange's vectorised rounding may differ by one ulp
        assert len(counts) > 2048
        np.testing.assert_allclose(edges, t_edges, rtol=2e-7, atol=0)
    else:
        np.testing.assert_array_equal(edges, t_edges)
    assert hist.max_seen == pytest.approx(calib.max_seen, rel=0)
    for method in METHODS if (seed, growth) == (0, False) else ("mse", "percentile", "max"):  # entropy: slow
        a = histogram_amax(method, counts, edges)
        b = histogram_amax(method, t_counts, t_edges)
        assert a == pytest.approx(b, rel=1e-6), method


def test_first_batch_edges_are_torch_linspace_bit_for_bit():
    rng = np.random.default_rng(0)
    for top in rng.random(200) * 10.0 ** rng.uniform(-3, 3, 200):
        expected = torch.linspace(0, torch.tensor(np.float32(top)), 2049).numpy()
        np.testing.assert_array_equal(torch_linspace_f32(float(np.float32(top)), 2049), expected)


def test_abs_counts_edge_cases():
    x = np.array([0.0, -1.0, 1.0, 0.5, 2.0], np.float32)
    counts = abs_counts(x, 4, 1.0)  # 2.0 is above the range: not counted, as histc
    assert counts.tolist() == [1, 0, 1, 2]
    assert abs_counts(np.zeros(5, np.float32), 8, 0.0).tolist() == [5, 0, 0, 0, 0, 0, 0, 0]
