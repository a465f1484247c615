"""A histogram calibrator that collects what pytorch-quantization's does, with less work.

Why: calibration cost on CPU is dominated by per-quantizer passes over every activation tensor. The
reference ``HistogramCalibrator.collect`` scans each tensor for its min, takes ``abs`` into a fresh tensor,
scans for the max and then bins with ``torch.histc`` (about 5 ns per element on one CPU core). Here:

- the max of ``|x|`` comes from one ``aminmax`` scan of ``x`` (no ``abs`` pass, no min-then-max);
- on CPU the binning is ``bincount`` of the bin index, computed in place in reused scratch buffers
  (a fresh multi-megabyte tensor per call costs page faults). The index is exactly histc's:
  ``int((|x| * bins) / top)`` in float32, the value ``top`` itself in the last bin. Counts are exact
  integers; histc counts in float32, which stops counting at 2**24 per bin, the only case where the two
  differ. About 2.5x faster than histc. A range that does not cover the tensor (float rounding of the
  extended edges), a zero or non-finite range, and CUDA (where histc is one fused kernel) use histc;
- the same tensor is often collected more than once per forward: sibling layers reading one tensor, and
  the members of a scale-sharing group (one shared calibrator) that read it. The binning of a tensor is a
  pure function of (tensor, number of bins, range), so the increment is computed once and re-added from a
  small cache keyed by tensor identity (weak reference + version counter: a freed or modified tensor never
  hits);
- the true running max is recorded (for ``--calib-method max``).

The binning (2048 bins on the first batch, bins of the same width appended when a later batch exceeds
the range) is kept identical so amax values match the reference flow.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import torch
from pytorch_quantization.calib import HistogramCalibrator

_CACHE_SIZE = 16


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """A 1-D view of ``x``'s elements in memory order (a copy only for a strided tensor).

    Histograms do not depend on element order, so a channels-last activation is read as it lies."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


class _Scratch:
    """Reused buffers, one per (dtype, device), grown as needed: the float32 bin positions and the
    int16/int32 bin indices of :func:`linear_histogram`, the ``|x|`` of its histc path."""

    def __init__(self):
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(self, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        buf = self.buffers.get((dtype, device))
        if buf is None or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype, device=device)
            self.buffers[(dtype, device)] = buf
        return buf[:n]

    def clear(self) -> None:
        self.buffers.clear()


def abs_max(x: torch.Tensor) -> torch.Tensor:
    """``max(|x|)`` as a 0-d float32 tensor, from one ``aminmax`` pass."""
    lo, hi = torch.aminmax(flat_view(x))  # a channels-last tensor as it lies: no contiguous copy
    return torch.maximum(hi, -lo).float()


def linear_histogram(x: torch.Tensor, bins: int, top: float, x_max: float,
                     scratch: _Scratch) -> torch.Tensor:
    """Counts (int64) of ``|x|`` in ``bins`` equal bins over ``[0, top]``, binned exactly as ``torch.histc``."""
    top_f, max_f = float(top), float(x_max)
    flat = flat_view(x)
    if x.is_cuda or not (0.0 < top_f < float("inf")) or max_f > top_f or bins >= 2 ** 31 - 1:
        ax = torch.abs(flat, out=scratch.get(flat.numel(), torch.float32, flat.device)) if flat.dtype == torch.float32 \
            else flat.float().abs()
        return torch.histc(ax, bins=bins, min=0, max=top_f).long()
    f = scratch.get(flat.numel(), torch.float32, flat.device)
    if flat.dtype != torch.float32:  # histc bins the float32 values
        flat = f.copy_(flat)
    if bins & (bins - 1) == 0 and top_f > 1e-30:
        # bins = 2**k: (x * bins) / top == x / (top / bins) exactly (scaling by 2**k is exact), one pass
        torch.div(flat, torch.tensor(top_f / bins, dtype=torch.float32), out=f)
    else:
        torch.mul(flat, bins, out=f)
        f.div_(torch.tensor(top_f, dtype=torch.float32))  # (x * bins) / top, float32, as histc rounds it
    idx = scratch.get(flat.numel(), torch.int16 if bins < 2 ** 15 - 1 else torch.int32, flat.device)
    idx.copy_(f)  # truncation toward zero, as histc's static_cast; trunc(-v) == -trunc(v), so the
    idx.abs_()  # sign is dropped on the (narrower) integers instead of an abs pass over the floats
    counts = parallel_bincount(idx, bins + 1)
    counts[bins - 1] += counts[bins]  # |x| == top: histc's last bin includes its right edge
    return counts[:bins]


_pool: tuple[int, object] | None = None  # (workers, ThreadPoolExecutor), made on first use
_PARALLEL_MIN = 1 << 20


def parallel_bincount(idx: torch.Tensor, length: int) -> torch.Tensor:
    """``torch.bincount(idx, minlength=length)`` split over torch's CPU threads.

    Why: bincount runs on one core (plus a min and a max pass over its input) while everything else in
    calibration uses all of them; it releases the GIL, so one chunk per thread halves it on two cores."""
    global _pool
    k = torch.get_num_threads()
    n = idx.numel()
    if k < 2 or n < _PARALLEL_MIN:
        return torch.bincount(idx, minlength=length)
    if _pool is None or _pool[0] != k:
        from concurrent.futures import ThreadPoolExecutor

        _pool = (k, ThreadPoolExecutor(k, thread_name_prefix="trtqat-bincount"))
    parts = [idx[i * n // k:(i + 1) * n // k] for i in range(k)]
    counts = list(_pool[1].map(lambda p: torch.bincount(p, minlength=length), parts))
    total = counts[0]
    for c in counts[1:]:
        total += c
    return total


class _TensorCache:
    """Per-tensor results of recent collects: max and histogram increments per (bins, range)."""

    def __init__(self, size: int = _CACHE_SIZE):
        self.size = size
        self.entries: OrderedDict[int, tuple] = OrderedDict()  # id -> (weakref, version, x_max, {key: hist})
        self.scratch = _Scratch()

    def lookup(self, x: torch.Tensor):
        entry = self.entries.get(id(x))
        if entry is None:
            return None
        ref, version, x_max, hists = entry
        if ref() is not x or x._version != version:
            del self.entries[id(x)]
            return None
        self.entries.move_to_end(id(x))
        return x_max, hists

    def store(self, x: torch.Tensor, x_max: torch.Tensor) -> dict:
        hists: dict = {}
        try:
            ref = weakref.ref(x)
        except TypeError:  # pragma: no cover - tensors support weak references
            return hists
        self.entries[id(x)] = (ref, x._version, x_max, hists)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return hists

    def clear(self) -> None:
        self.entries.clear()
        self.scratch.clear()


_cache = _TensorCache()


def release_buffers() -> None:
    """Drop the shared scratch buffers and tensor cache (call when calibration is over)."""
    _cache.clear()


class FastHistogramCalibrator(HistogramCalibrator):
    """Drop-in for ``HistogramCalibrator`` (torch_hist mode) on CPU and CUDA; counts are int64."""

    def __init__(self, num_bits: int = 8, axis=None, unsigned: bool = False, num_bins: int = 2048):
        super().__init__(num_bits, axis, unsigned, num_bins=num_bins, torch_hist=True)
        self.max_seen = 0.0
        self._top: float | None = None  # the last bin edge, on the host
        self._initial_bins = num_bins

    @torch.no_grad()
    def collect(self, inputs: torch.Tensor) -> None:
        """Bin ``inputs`` into the histogram, and into the running member's when a shared quantizer's
        members are tracked (:mod:`trtqat.quant.member_histograms`; the tensor is binned once for both)."""
        self._collect(inputs)
        queue = getattr(self, "member_queue", None)
        if queue:  # the running module's next name (its last one for any further call)
            self.members[queue.pop(0) if len(queue) > 1 else queue[0]]._collect(inputs)

    def _collect(self, inputs: torch.Tensor) -> None:
        """One device-to-host copy per tensor (its max): on CUDA every other step is queued, so the
        forward does not stall on each quantizer (the reference synchronizes about five times)."""
        x = inputs.detach()  # a new object per call: the cache is keyed by ``inputs`` itself
        cached = _cache.lookup(inputs)
        if cached is None:
            x_max = abs_max(x).cpu()  # the bookkeeping below runs on CPU scalars, as the reference's values
            hists = _cache.store(inputs, x_max)
        else:
            x_max, hists = cached
        m = float(x_max)
        self.max_seen = max(self.max_seen, m)

        def binned(bins: int, top: float) -> torch.Tensor:
            key = (bins, top)
            if key not in hists:
                hists[key] = linear_histogram(x, bins, top, m, _cache.scratch)
            return hists[key]

        if self._calib_bin_edges is None and self._calib_hist is None:
            self._calib_hist = binned(self._num_bins, m).clone()
            self._calib_bin_edges = torch.linspace(0, x_max, self._num_bins + 1)
            self._top = m
            return
        top = getattr(self, "_top", None)
        if top is None:
            top = self._top = float(self._calib_bin_edges[-1])
        if m > top:
            width = self._calib_bin_edges[1].cpu() - self._calib_bin_edges[0].cpu()
            self._num_bins = int((x_max / width).ceil().item())
            self._calib_bin_edges = torch.arange(0, x_max + width, width, device=x.device)
            top = self._top = float(self._calib_bin_edges[-1])
        hist = binned(self._num_bins, top).clone()
        hist[: self._calib_hist.numel()] += self._calib_hist.to(hist.device)  # seeded ranks start on the CPU
        self._calib_hist = hist

    def reset(self) -> None:
        """Forget everything collected, the bin count too.

        pytorch-quantization's ``reset`` keeps ``_num_bins``, which a range extension has grown: the next
        calibration then starts with that many bins over its first batch's range (narrower bins), grows
        them again, and so on geometrically (seen on a GPU: a 137 GiB ``arange`` after a few repeats)."""
        super().reset()
        self._num_bins = getattr(self, "_initial_bins", 2048)
        self.max_seen = 0.0
        self._top = None

    def range_state(self) -> tuple | None:
        """The binning (edges as float32 numpy, last edge, bin count) after what was collected, or None.

        Sharded calibration gives this state of rank 0 after the first global batch to every rank
        (:meth:`adopt_range`), so all ranks bin on the grid a single process would use."""
        if self._calib_bin_edges is None:
            return None
        return self._calib_bin_edges.cpu().numpy().copy(), float(self._top), int(self._num_bins)

    def adopt_range(self, state: tuple | None) -> None:
        """Start from ``state`` (see :meth:`range_state`) with zero counts; None keeps the usual start."""
        self.reset()
        if state is None:
            return
        edges, top, bins = state
        self._calib_bin_edges = torch.from_numpy(edges.copy())
        self._top, self._num_bins = top, bins
        self._calib_hist = torch.zeros(bins, dtype=torch.int64)

    def load_histogram(self, counts, edges, max_seen: float) -> None:
        """Replace the collected state by a merged one (exact int64 counts)."""
        self._calib_hist = torch.as_tensor(counts, dtype=torch.int64).clone()
        self._calib_bin_edges = torch.as_tensor(edges).clone()
        self._num_bins = int(self._calib_hist.numel())
        self._top = float(self._calib_bin_edges[-1])
        self.max_seen = float(max_seen)

    def histogram(self):
        """(counts int64 numpy, edges numpy) as the reference's compute_amax converts them, or (None, None)."""
        if self._calib_hist is None:
            return None, None
        return (self._calib_hist.cpu().numpy(), self._calib_bin_edges.cpu().numpy())
