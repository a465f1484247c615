"""Calibration split over the ranks of a torchrun job, with the amax values of a single process.

Why this is exact: a histogram calibrator's result depends on its grid (2048 bins over the first batch's
``|x|`` range, bins of the same width appended when a later batch exceeds it) and on integer counts.
So the ranks agree on the grid first and then add counts:

1. The global batches (``--batch-size`` files each, in the single-process order) are dealt out like
   cards: rank ``r`` takes batches ``r, r + N, r + 2N ...`` and decodes only its own images.
2. Rank 0 runs global batch 0 alone and broadcasts every calibrator's grid (edges, last edge, bin
   count); the other ranks start from it with zero counts. From then on every rank grows the grid by
   the same rule, so all grids are prefixes of the one a single process ends with.
3. The ranks exchange their histograms; each sums the int64 counts (zero-padded to the longest) and
   takes the edges of the rank that grew the grid furthest (the one that saw the largest value). The
   result is the single-process histogram: equal counts wherever every batch was binned on the same
   grid, otherwise differing only for values on a bin boundary (float rounding of ``x * bins / top``).
4. The amax searches are split between the ranks (quantizer ``i`` on rank ``i mod N``) and gathered,
   so every rank loads the same amax values, bit for bit.

Unreadable images make a rank's batches shorter than the single-process ones (that stream refills a
batch from the next file); the amax values then follow a slightly different batching.
"""
from __future__ import annotations

from collections.abc import Callable
from itertools import islice

import numpy as np
import torch

from ..data.images import ImageStream
from .calibrator import FastHistogramCalibrator
from .distributed import DistEnv, all_gather_object, all_reduce_sum, broadcast_object, sync
from .member_histograms import MEMBER_SEP
from .quantizers import is_weight_quantizer, named_quantizers


def rank_stream(stream: ImageStream, env: DistEnv) -> ImageStream | None:
    """This rank's global batches (``rank::world``) as one stream over their files, or None (no batch).

    The files of a rank's batches are consecutive runs of ``batch_size`` files, so re-batching them by
    ``batch_size`` gives back exactly those batches (the last global batch may be shorter and is last)."""
    bs = stream.batch_size
    chunks = [stream.files[b * bs:(b + 1) * bs] for b in range(len(stream))]
    mine = [f for chunk in chunks[env.rank::env.world_size] for f in chunk]
    return ImageStream(mine, size=stream.size, batch_size=bs) if mine else None


def activation_calibrators(model) -> list[tuple[str, FastHistogramCalibrator]]:
    """(name, calibrator) of every histogram-calibrated activation quantizer, in module order, each
    followed by its members' calibrators (``name@member``) while those are tracked."""
    out = []
    for name, q in named_quantizers(model):
        if not is_weight_quantizer(name) and isinstance(q._calibrator, FastHistogramCalibrator):
            out.append((name, q._calibrator))
            out += [(f"{name}{MEMBER_SEP}{m}", c) for m, c in getattr(q._calibrator, "members", {}).items()]
    return out


def collect_sharded(model, stream: ImageStream, env: DistEnv, collect: Callable[..., tuple[int, int]],
                    device, progress: Callable[[int], None] | None = None) -> tuple[int, int, int]:
    """Collect this rank's share of ``stream`` into ``model``'s calibrators, then merge over the ranks.

    ``collect(model, batches, device, progress) -> (batches, images)`` is the single-process collector.
    Returns the global (batches, images, unreadable images); ``stream.skipped``/``used`` are set to the
    global counts too, as a single-process run leaves them.
    """
    mine = rank_stream(stream, env)
    batches = iter(mine) if mine is not None else iter(())
    n_batches = n_images = 0
    if env.is_main:  # global batch 0 defines the grid
        n_batches, n_images = collect(model, islice(batches, 1), device, progress)
    sync(env)
    grids = broadcast_object({name: cal.range_state() for name, cal in activation_calibrators(model)}
                             if env.is_main else None, env)
    if not env.is_main:
        for name, cal in activation_calibrators(model):
            cal.adopt_range(grids.get(name))
    b, i = collect(model, batches, device, progress)
    n_batches, n_images = n_batches + b, n_images + i
    skipped = mine.skipped if mine is not None else 0
    sync(env)
    merge_histograms(model, env)
    n_batches, n_images, skipped = all_reduce_sum([n_batches, n_images, skipped], env)
    stream.skipped, stream.used = skipped, n_images
    return n_batches, n_images, skipped


def merge_histograms(model, env: DistEnv) -> None:
    """Replace every calibrator's histogram by the sum over ranks (exact int64 counts, widest grid)."""
    cals = activation_calibrators(model)
    local = {}
    for name, cal in cals:
        counts, edges = cal.histogram()
        if counts is not None:
            local[name] = (np.asarray(counts, dtype=np.int64), np.asarray(edges), float(cal.max_seen))
    gathered = all_gather_object(local, env)
    for name, cal in cals:
        parts = [g[name] for g in gathered if name in g]
        if not parts:
            cal.reset()
            continue
        widest = max(parts, key=lambda p: (len(p[0]), len(p[1]), float(p[1][-1])))  # first of equals
        total = np.zeros(max(len(p[0]) for p in parts), dtype=np.int64)
        for counts, _, _ in parts:
            total[:len(counts)] += counts
        cal.load_histogram(torch.from_numpy(total), torch.from_numpy(np.array(widest[1])),
                           max(p[2] for p in parts))


def split_amax_search(names: list[str], search: Callable[[str], float | None], env: DistEnv) -> dict[str, float | None]:
    """``search(name)`` for every name, each computed on one rank (``i mod N``), gathered everywhere."""
    mine = {name: search(name) for i, name in enumerate(names) if i % env.world_size == env.rank}
    sync(env)
    out: dict[str, float | None] = {}
    for part in all_gather_object(mine, env):
        out.update(part)
    return out
