"""Histograms of absolute activation values in numpy, binned exactly as the torch calibrator bins them.

Why: ``trtqat optimize --calib`` collects activations through onnxruntime (numpy arrays), ``trtqat
quantize`` through PyTorch (:class:`trtqat.quant.calibrator.FastHistogramCalibrator`, which bins like
pytorch-quantization's ``HistogramCalibrator`` with ``torch.histc``). Both feed the same amax search
(:mod:`trtqat.calib.amax`), so the histograms have to be the same too: same bins, same counts, same
edges for the same data. The bin definition (tests/calib/test_histogram.py checks it against the torch
calibrator on the same batches):

- first batch: ``bins`` (2048) equal bins over ``[0, max|x|]``, edges ``torch.linspace(0, max, bins + 1)``
  in float32 (computed here the way torch's CPU kernel computes it: from the start for the first half,
  from the end for the second);
- a later batch beyond the range: bins of the same width are appended up to the new max
  (``torch.arange(0, max + width, width)``; the counts are the same, an edge may differ by one float32
  ulp, see :func:`torch_arange_f32`);
- the bin of ``v = |x|`` is ``int((v * bins) / top)`` in float32 arithmetic, ``v == top`` in the last bin,
  values above ``top`` are not counted (``histc``).
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_BINS = 2048


def torch_linspace_f32(end: float, steps: int) -> np.ndarray:
    """``torch.linspace(0, end, steps)`` on CPU in float32, bit for bit (checked against torch in the tests).

    torch computes ``step = (end - start) / (steps - 1)`` in double and fills the first half as
    ``start + i * step`` and the second as ``end - (steps - 1 - i) * step``, rounding each to float32.
    """
    end64 = float(np.float32(end))
    if steps == 1:
        return np.array([0.0], np.float32)
    step = end64 / (steps - 1)
    i = np.arange(steps, dtype=np.float64)
    half = steps // 2
    out = np.empty(steps, np.float64)
    out[:half] = i[:half] * step
    out[half:] = end64 - (steps - 1 - i[half:]) * step
    return out.astype(np.float32)


def torch_arange_f32(end: float, step: float) -> np.ndarray:
    """``torch.arange(0, end, step)`` for float32 ``end``/``step``: the same size (computed in double, as
    torch does) and values ``i * step`` rounded to float32. torch's vectorised CPU kernel rounds some
    values differently depending on the SIMD width, so an edge may differ from torch's by one float32 ulp
    (only after a range extension; the first batch's edges are exact)."""
    end64, step64 = float(np.float32(end)), float(np.float32(step))
    n = int(math.ceil(end64 / step64))
    return (np.arange(n, dtype=np.float64) * step64).astype(np.float32)


def abs_counts(x: np.ndarray, bins: int, top: float) -> np.ndarray:
    """int64 counts of ``|x|`` in ``bins`` equal bins over ``[0, top]``, as ``torch.histc`` bins float32."""
    v = np.abs(np.asarray(x, dtype=np.float32).reshape(-1))
    top32 = np.float32(top)
    if not top32 > 0 or not np.isfinite(top32):
        counts = np.zeros(bins, np.int64)
        counts[0] = int(np.count_nonzero(v <= top32)) if np.isfinite(top32) else 0
        return counts
    if bins & (bins - 1) == 0:
        pos = v / np.float32(top32 / np.float32(bins))  # (v * 2**k) / top == v / (top / 2**k) exactly
    else:
        pos = (v * np.float32(bins)) / top32
    idx = pos.astype(np.int64)  # truncation toward zero, as histc's static_cast
    idx = idx[v <= top32]
    counts = np.bincount(idx, minlength=bins + 1).astype(np.int64)
    counts[bins - 1] += counts[bins]  # |x| == top: histc's last bin includes its right edge
    return counts[:bins]


class AbsHistogram:
    """A running histogram of ``|x|`` over many batches, grown exactly as the torch calibrator grows it.

    Feed every tensor of a scale-sharing group into one instance: that is what the torch path does with
    one shared quantizer (its calibrator sees each member's input in turn).
    """

    def __init__(self, bins: int = DEFAULT_BINS):
        self.initial_bins = bins
        self.bins = bins
        self.counts: np.ndarray | None = None
        self.edges: np.ndarray | None = None
        self.max_seen = 0.0

    def collect(self, x: np.ndarray) -> None:
        """Add the absolute values of ``x`` (any shape, any float dtype; binned as float32)."""
        x = np.asarray(x, dtype=np.float32)
        m = np.float32(np.max(np.abs(x))) if x.size else np.float32(0)
        self.max_seen = max(self.max_seen, float(m))
        if self.counts is None:
            self.counts = abs_counts(x, self.bins, float(m))
            self.edges = torch_linspace_f32(float(m), self.bins + 1)
            return
        top = float(self.edges[-1])
        if float(m) > top:
            width = np.float32(self.edges[1] - self.edges[0])
            self.bins = int(math.ceil(float(np.float32(m / width))))
            self.edges = torch_arange_f32(float(np.float32(m + width)), float(width))
            top = float(self.edges[-1])
        counts = abs_counts(x, self.bins, top)
        counts[: self.counts.size] += self.counts
        self.counts = counts

    def histogram(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(counts, edges) for :func:`trtqat.calib.amax.histogram_amax`, or (None, None) before any data."""
        return self.counts, self.edges
