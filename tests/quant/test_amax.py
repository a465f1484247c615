"""Amax search equals pytorch-quantization's definitions (run on CPU)."""
import numpy as np
import pytest
import torch
from pytorch_quantization.calib import histogram as ref
from pytorch_quantization.tensor_quant import fake_tensor_quant

from trtqat.calib.amax import entropy_amax, histogram_amax, mse_amax, percentile_amax
from trtqat.quant.calibrator import FastHistogramCalibrator


def reference_mse(counts, edges, num_bits=8, unsigned=False, stride=1, start_bin=128):
    """pytorch-quantization 2.1.3 _compute_amax_mse, minus its .cuda() calls."""
    counts = torch.from_numpy(counts[:]).float()
    edges = torch.from_numpy(edges[:]).float()
    centers = (edges[1:] + edges[:-1]) / 2
    mses, arguments = [], []
    for i in range(start_bin, len(centers), stride):
        amax = centers[i]
        quant_centers = fake_tensor_quant(centers, amax, num_bits, unsigned)
        mses.append(((quant_centers - centers) ** 2 * counts).mean())
        arguments.append(i)
    return float(centers[arguments[int(np.argmin(mses))]])


def collected(seed: int, kind: str):
    torch.manual_seed(seed)
    cal = FastHistogramCalibrator()
    for b in range(3):
        if kind == "silu":
            x = torch.nn.functional.silu(torch.randn(4, 8, 16, 16) * (1 + b))
        elif kind == "heavy":
            x = torch.distributions.StudentT(3.0).sample((4, 8, 16, 16)).clamp(-40, 40)
        else:
            x = torch.rand(4, 8, 16, 16) * 6
        cal.collect(x)
    return cal.histogram()


CASES = [(0, "silu"), (1, "heavy"), (2, "uniform")]


def small(counts, edges, nbins=320):
    """The reference searches are Python loops (entropy is O(bins^2)): compare on the first bins only."""
    return counts[:nbins].copy(), edges[:nbins + 1].copy()


@pytest.mark.parametrize("seed,kind", CASES)
def test_mse_matches_reference_within_one_bin(seed, kind):
    counts, edges = small(*collected(seed, kind), nbins=640)  # the reference loop is slow: keep it short
    ours = mse_amax(counts, edges)
    theirs = reference_mse(counts, edges)
    width = float(edges[1] - edges[0])
    assert abs(ours - theirs) <= width + 1e-7


@pytest.mark.parametrize("seed,kind", CASES)
def test_entropy_matches_reference(seed, kind):
    counts, edges = small(*collected(seed, kind))
    theirs = float(ref._compute_amax_entropy(counts.copy(), edges, 8, False, 1, 128))
    assert entropy_amax(counts, edges) == pytest.approx(theirs, abs=float(edges[1] - edges[0]))


@pytest.mark.parametrize("pct", [99.0, 99.9, 99.99, 100.0])
def test_percentile_matches_reference(pct):
    counts, edges = collected(3, "heavy")
    theirs = float(ref._compute_amax_percentile(counts, edges, pct))
    assert percentile_amax(counts, edges, pct) == pytest.approx(theirs, rel=1e-6)


def test_histogram_collection_identical_to_reference():
    torch.manual_seed(0)
    ours, theirs = FastHistogramCalibrator(), ref.HistogramCalibrator(8, None, False)
    for scale in (1.0, 3.0, 0.5, 7.0):  # growing range re-bins
        x = torch.randn(2, 4, 8, 8) * scale
        ours.collect(x)
        theirs.collect(x)
    assert torch.equal(ours._calib_hist, theirs._calib_hist)
    assert torch.equal(ours._calib_bin_edges, theirs._calib_bin_edges)
    assert ours.max_seen == pytest.approx(float(theirs._calib_bin_edges[-1]), rel=0.01)


def test_max_method_is_the_largest_value_seen():
    cal = FastHistogramCalibrator()
    cal.collect(torch.tensor([0.5, -3.25, 1.0]))
    cal.collect(torch.tensor([2.0, 0.0]))
    assert cal.max_seen == 3.25


def test_mse_on_hand_made_histogram():
    """Mass near 1.0 plus a lone outlier at 100: MSE clips below the outlier (trading its error for
    resolution), max keeps it."""
    edges = np.linspace(0, 100, 2049, dtype=np.float32)
    counts = np.zeros(2048, dtype=np.int64)
    counts[20] = 100000  # ~1.0
    counts[-1] = 1
    amax = mse_amax(counts, edges)
    assert amax == pytest.approx(reference_mse(counts, edges))
    assert 6.0 < amax < 90
    assert histogram_amax("max", counts, edges) == pytest.approx(100.0)


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="unknown calibration method"):
        histogram_amax("kl", np.ones(4), np.linspace(0, 1, 5))


def test_reset_restores_the_bin_count():
    """A second calibration after reset() is the same as the first (pytorch-quantization's reset keeps
    the grown bin count, so repeated calibrations drift to ever narrower bins)."""
    cal = FastHistogramCalibrator()
    runs = []
    for _ in range(3):
        for scale in (1.0, 4.0):  # the second batch extends the range: more bins
            cal.collect(torch.linspace(-scale, scale, 1001))
        runs.append((cal._calib_hist.clone(), cal._calib_bin_edges.clone(), cal._num_bins))
        cal.reset()
    assert runs[0][2] > 2048
    for hist, edges, bins in runs[1:]:
        assert bins == runs[0][2] and torch.equal(hist, runs[0][0]) and torch.equal(edges, runs[0][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("bins,stretch", [(2048, 1.0), (2048, 1.37), (2999, 1.0), (4096, 1.01)])
def test_cpu_binning_is_histc_exactly(dtype, bins, stretch):
    """The bincount path (power-of-two bins: one division; other counts: multiply then divide) puts
    every value in histc's bin, signs, the exact top value and bin edges included."""
    from trtqat.quant.calibrator import _Scratch, abs_max, linear_histogram, parallel_bincount

    g = torch.Generator().manual_seed(bins)
    x = torch.cat([torch.randn(2_500_000, generator=g) * 3, torch.linspace(-1, 1, 4097) * 3]).to(dtype)
    m = float(abs_max(x))
    top = float(torch.tensor(m * stretch))
    ours = linear_histogram(x, bins, top, m, _Scratch())
    assert ours.dtype == torch.int64 and int(ours.sum()) == x.numel()
    assert torch.equal(ours.float(), torch.histc(x.float().abs(), bins=bins, min=0, max=top))
    idx = torch.randint(0, 100, (3_000_000,), generator=g, dtype=torch.int16)
    assert torch.equal(parallel_bincount(idx, 101), torch.bincount(idx, minlength=101))
