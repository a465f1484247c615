"""Let the process keep and reuse the memory it frees (glibc malloc), so CPU forwards stop page-faulting.

Why: glibc serves every allocation above its mmap threshold (128 KiB, rising to at most 32 MiB) with a
fresh ``mmap`` and unmaps it on ``free``. A CPU forward allocates hundreds of multi-megabyte activation
tensors per batch, so every page of every activation is faulted in again, batch after batch. On the
2-core VMs this project is developed on, the YOLOv7 fixture's float forward (640 px, 32 images) takes
3.2-3.6 s as shipped and 2.0 s once freed memory is kept (``benchmarks/``, PTQ section); the calibration
forward gains the same. This is the same remedy as running PyTorch under jemalloc or tcmalloc, applied
at run time so that it needs no ``LD_PRELOAD``.

Settings (``mallopt``): ``M_MMAP_MAX=0`` (large blocks come from the heap, where they are reused),
``M_TRIM_THRESHOLD=1 GiB`` (freed memory stays mapped unless more than that is free at the top of the
heap), ``M_TOP_PAD=256 MiB`` (the heap grows in large steps; untouched pages cost nothing). When the heap
cannot grow, glibc still falls back to ``mmap``. The cost: memory the run freed is returned to the system
when the process exits rather than at once. Opt out with ``TRTQAT_MALLOC=default``.

Only glibc (Linux) is tuned; elsewhere, or when the C library has no ``mallopt``, this does nothing.
"""
from __future__ import annotations

import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 256 << 20))
OPT_OUT_ENV = "TRTQAT_MALLOC"

_state: bool | None = None  # None: not tried yet; True: tuned; False: left as it was


def tune_allocator() -> bool:
    """Apply the settings once per process; returns whether the allocator is tuned."""
    global _state
    if _state is not None:
        return _state
    _state = False
    if os.environ.get(OPT_OUT_ENV, "").lower() in ("default", "0", "off", "no") or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False  # musl and others: their allocators behave differently; leave them alone
        _state = all(libc.mallopt(param, value) == 1 for param, value in SETTINGS)
    except OSError:
        return False
    return _state
