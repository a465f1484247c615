"""Per-member histograms of shared quantizers during calibration, for one balanced amax per group.

A quantizer shared by the scale-sharing rules is one object: its calibrator sees every member's input in
turn and keeps one merged histogram. The MSE of a merged histogram weighs absolute error, so the member
with the widest range decides the scale and a member with a tenth of that range keeps a handful of int8
levels. :func:`trtqat.calib.amax.balanced_mse_amax` weighs each member's error relative to its own power
instead; it needs each member's histogram, which this module collects:

- :func:`member_histograms` (a context manager around collection and the amax search) gives every shared
  activation calibrator one child calibrator per name the quantizer is reachable under (``cal.members``:
  each member's histogram is the one it would collect unshared, as each Q node's in ``trtqat optimize``)
  and puts a forward pre-hook on each module holding it that queues the module's names for the calls to
  come, in attribute order (a quantized residual Add holds it twice and calls input 0, then input 1);
- :class:`~trtqat.quant.calibrator.FastHistogramCalibrator` bins each input into the merged histogram
  (what pytorch-quantization keeps) and into the named member's;
- on exit the hooks and children are removed, so nothing of it reaches a checkpoint.

The children are ordinary calibrators, listed by
:func:`~trtqat.quant.sharded_calibration.activation_calibrators` after their parent, so sharded
calibration gives them rank 0's grid and merges their counts like any other.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .calibrator import FastHistogramCalibrator
from .quantizers import is_weight_quantizer, quantizer_aliases

#: separates a shared calibrator's name from its member's in calibrator listings
MEMBER_SEP = "@"


def _owner_name(quantizer_name: str) -> str:
    return quantizer_name.rsplit(".", 1)[0]


@contextlib.contextmanager
def member_histograms(model) -> Iterator[int]:
    """Collect per-member histograms for every shared activation quantizer of ``model`` while inside.

    Yields the number of shared quantizers tracked. Hooks and child calibrators are removed on exit, even
    on error."""
    modules = dict(model.named_modules())
    handles, tracked = [], []
    try:
        for names in quantizer_aliases(model).values():
            if len(names) < 2 or is_weight_quantizer(names[0]):
                continue
            cal = model.get_submodule(names[0])._calibrator
            if not isinstance(cal, FastHistogramCalibrator):
                continue
            cal.members = {n: FastHistogramCalibrator(cal._num_bits, cal._axis, cal._unsigned, cal._initial_bins)
                           for n in names}
            tracked.append(cal)
            by_owner: dict[str, list[str]] = {}
            for n in names:
                by_owner.setdefault(_owner_name(n), []).append(n)
            for owner, aliases in by_owner.items():
                handles.append(modules[owner].register_forward_pre_hook(_naming(cal, aliases)))
                handles.append(modules[owner].register_forward_hook(_naming(cal, [])))
        yield len(tracked)
    finally:
        for h in handles:
            h.remove()
        for cal in tracked:  # gone, not emptied: checkpoints pickle calibrators
            cal.__dict__.pop("members", None)
            cal.__dict__.pop("member_queue", None)


def _naming(cal: FastHistogramCalibrator, aliases: list[str]):
    """A hook that hands ``cal`` the member names its next calls belong to (empty: none)."""
    def hook(module, *args):
        cal.member_queue = list(aliases)
    return hook
