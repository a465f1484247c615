"""Several processes under ``torchrun``: what each one is, how they talk, and how they fail together.

Why one module: every multi-process rule of trtqat lives here, so calibration and QAT read as their
single-process recipes plus a few calls. Everything is a no-op for a single process (``WORLD_SIZE``
absent or 1).

- **Environment**: ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` from torchrun (:func:`dist_env`); the process
  group is gloo on CPU, NCCL on CUDA, with a timeout (``TRTQAT_DIST_TIMEOUT`` seconds, default 1800) so a
  lost peer never hangs the others forever.
- **Failing together**: a rank that raises (a bad image folder on one node, an exception in one rank's
  step) must stop every rank with one error line. Every collective phase begins with :func:`sync`, a
  one-integer all-reduce; a rank whose local work failed calls ``sync(env, error)`` instead, which matches
  the others' next ``sync``, so every rank learns who failed and why and raises :class:`RankFailure`.
  Rank 0 prints the failing rank's message; the other ranks exit with the same code, silently.
- **Signals**: torchrun stops the surviving ranks with SIGTERM when one dies; that becomes an exception
  here, so ``finally`` blocks run and no temporary file is left behind.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..errors import TrtqatError, UsageError
from .device import resolve_device

#: seconds a collective may wait for the other ranks (``TRTQAT_DIST_TIMEOUT`` overrides)
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DistEnv:
    """What ``torchrun`` tells this process (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(environ: dict | None = None) -> DistEnv:
    """Parse the torchrun environment; single-process when ``WORLD_SIZE`` is absent or 1."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UsageError(f"bad torchrun environment ({exc})", "WORLD_SIZE, RANK and LOCAL_RANK must be integers") from exc
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UsageError(f"bad torchrun environment: RANK={rank} LOCAL_RANK={local} WORLD_SIZE={world}",
                         "Launch with torchrun --nproc_per_node N")
    return DistEnv(rank=rank, local_rank=local, world_size=world)


def shard(items: Sequence, env: DistEnv) -> list:
    """This rank's slice of ``items`` (``items[rank::world]``, DistributedSampler style)."""
    return list(items[env.rank::env.world_size])


def timeout_seconds(environ: dict | None = None) -> float:
    """The process-group timeout: ``TRTQAT_DIST_TIMEOUT`` seconds, else :data:`DEFAULT_TIMEOUT_S`."""
    raw = (os.environ if environ is None else environ).get("TRTQAT_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else float(DEFAULT_TIMEOUT_S)
    except ValueError as exc:
        raise UsageError(f"TRTQAT_DIST_TIMEOUT={raw!r} is not a number", "Give seconds, e.g. 600") from exc
    if value <= 0:
        raise UsageError(f"TRTQAT_DIST_TIMEOUT must be positive, got {raw}")
    return value


class Terminated(KeyboardInterrupt):
    """SIGTERM (torchrun stopping the surviving ranks): unwinds like Ctrl-C, so partial files are removed."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised by the multi-process tests
    raise Terminated()


def init_process_group(env: DistEnv) -> None:
    """Join the torchrun job (gloo on CPU, NCCL when CUDA is present) once; no-op for one process."""
    if not env.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(env.local_rank)
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_seconds()))
    except (ValueError, RuntimeError) as exc:  # no MASTER_ADDR/PORT, the rendezvous timed out ...
        raise UsageError(f"rank {env.rank} of {env.world_size} could not join the torchrun job "
                         f"({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})",
                         "Launch with torchrun --nproc_per_node N, or unset WORLD_SIZE for one process") from exc
    with contextlib.suppress(ValueError):  # only possible from the main thread
        signal.signal(signal.SIGTERM, _on_sigterm)


def setup_device(requested: str | None, env: DistEnv) -> torch.device:
    """This process's device: ``requested`` alone, or ``cuda:LOCAL_RANK`` (CPU with gloo) under torchrun."""
    if not env.distributed:
        return resolve_device(requested)
    init_process_group(env)
    if torch.cuda.is_available() and (requested is None or torch.device(requested).type == "cuda"):
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def wrap_ddp(student, env: DistEnv, device: torch.device):
    """The student as a DDP replica when distributed, else unchanged.

    No buffer sync in the forward (``forward_sync_buffers=False``, ``broadcast_buffers=False`` before torch
    2.13): the only buffers are the amax values (the model is fused, there is no BatchNorm statistic),
    identical on every rank (learned ones are written from parameters updated with all-reduced gradients,
    :mod:`~trtqat.quant.learned_amax`); a sync would put a collective in each forward, and a rank failing
    before its forward could not be told apart from a slow one.
    """
    if not env.distributed:
        return student
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
               inspect.signature(DistributedDataParallel.__init__).parameters else {"broadcast_buffers": False})
    return DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


# ---------------------------------------------------------------- collectives

def _dist():
    import torch.distributed as dist

    return dist


def _comm_device() -> torch.device:
    """Where collective tensors live: the current GPU for NCCL, the CPU for gloo."""
    dist = _dist()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def active(env: DistEnv) -> bool:
    """True when this process is one of several in an initialised process group."""
    return env.distributed and _dist().is_available() and _dist().is_initialized()


def broadcast_object(obj, env: DistEnv, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled)."""
    if not active(env):
        return obj
    box = [obj if env.rank == src else None]
    _dist().broadcast_object_list(box, src=src, device=_comm_device() if _dist().get_backend() == "nccl" else None)
    return box[0]


def all_gather_object(obj, env: DistEnv) -> list:
    """Every rank's ``obj``, in rank order (pickled)."""
    if not active(env):
        return [obj]
    out = [None] * env.world_size
    _dist().all_gather_object(out, obj)
    return out


def all_reduce_sum(values: Sequence[int], env: DistEnv) -> list[int]:
    """Element-wise integer sums over ranks (exact: int64)."""
    if not active(env):
        return [int(v) for v in values]
    t = torch.tensor([int(v) for v in values], dtype=torch.int64, device=_comm_device())
    _dist().all_reduce(t)
    return [int(v) for v in t.cpu().tolist()]


class RankFailure(TrtqatError):
    """A rank failed; raised on every rank. ``report`` is True on the one rank that prints it (rank 0)."""

    def __init__(self, message: str, hint: str | None, exit_code: int, report: bool, failed: list[int]):
        super().__init__(message, hint)
        self.exit_code = exit_code
        self.report = report
        self.failed = failed


def _describe(error: BaseException) -> tuple[str, str | None, int]:
    if isinstance(error, TrtqatError):
        return error.message, error.hint, error.exit_code
    return f"{type(error).__name__}: {error}", None, 1


def sync(env: DistEnv, error: BaseException | None = None) -> None:
    """A collective every rank calls at the same point; raises :class:`RankFailure` on all if any failed.

    Healthy ranks call ``sync(env)`` before each collective phase; a rank whose local work raised calls
    ``sync(env, error)`` (via :func:`ranks_fail_together`), which meets the others' next ``sync``. The
    message of the lowest failing rank is what rank 0 prints: ``rank R of N: <message>``.
    """
    if not active(env):
        if error is not None:
            raise error
        return
    dist = _dist()
    flag = torch.tensor([0 if error is None else 1], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if int(flag.item()) == 0:
        return
    reports = all_gather_object(None if error is None else _describe(error), env)
    failed = [r for r, rep in enumerate(reports) if rep is not None]
    message, hint, code = reports[failed[0]]
    others = f" (ranks {', '.join(map(str, failed))} failed)" if len(failed) > 1 else ""
    with contextlib.suppress(ValueError):  # exiting now: torchrun's SIGTERM must not cut rank 0's report
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise RankFailure(f"rank {failed[0]} of {env.world_size}: {message}{others}", hint, code,
                      report=env.is_main, failed=failed) from error


def _lost_contact(error: BaseException) -> bool:
    dist = _dist()
    kinds = tuple(k for k in (getattr(dist, "DistError", None),) if k is not None)
    text = str(error).lower()
    return isinstance(error, kinds) or any(s in text for s in ("connection closed", "connection reset", "timed out",
                                                                 "gloo", "nccl", "broken pipe"))


def _lost(env: DistEnv, exc: BaseException) -> RankFailure:
    """The one line for a peer that vanished (killed, crashed outside trtqat) or stopped answering."""
    detail = re.sub(r"\[[^\]]*/[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    detail = detail.split(". ")[0][:160]
    if "timed out" in detail.lower() or "timeout" in detail.lower():
        what = f"no answer from another rank within TRTQAT_DIST_TIMEOUT={timeout_seconds():g} s"
    else:
        what = "the connection to another rank closed (it stopped)"
    # printed by every rank that sees it: rank 0 may be the one that is gone
    return RankFailure(f"rank {env.rank} of {env.world_size}: {what} ({detail})",
                       "See the other rank's message, or the launcher's report", 1, report=True, failed=[])


@contextlib.contextmanager
def ranks_fail_together(env: DistEnv) -> Iterator[None]:
    """Run a multi-process job so that a failure on any rank ends every rank with one error line.

    On success a last :func:`sync` keeps the ranks together until rank 0 has finished its own work
    (evaluation, summary file), so a failure there still reaches the others. On an exception: a
    :class:`RankFailure` passes through; a lost peer (closed connection, timeout) becomes one
    :class:`RankFailure` naming the timeout; anything else is announced with ``sync(env, error)``.
    Ctrl-C and SIGTERM propagate unchanged (the peers may be gone).
    """
    if not env.distributed:
        yield
        return
    init_process_group(env)
    try:
        try:
            yield
        except RankFailure:
            raise
        except Exception as exc:
            if _lost_contact(exc):
                raise _lost(env, exc) from exc
            sync(env, exc)
            raise
        sync(env)
    finally:
        # tear the group down before the interpreter does: a gloo group still alive at exit, whose peer
        # has already closed its sockets, can abort the process (SIGABRT instead of the exit code; seen
        # once in the bad-image-folder fault test under load)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def fingerprint(tensors: Sequence[torch.Tensor]) -> str:
    """A digest of the exact bytes of ``tensors`` (lockstep check: equal on every rank or diverged)."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_lockstep(tensors: Sequence[torch.Tensor], env: DistEnv, what: str) -> bool | None:
    """Raise when the ranks' ``tensors`` differ (DDP must keep replicas bit-identical); True when checked,
    None for a single process (nothing to compare)."""
    if not active(env):
        return None
    digests = all_gather_object(fingerprint(tensors), env)
    if len(set(digests)) != 1:
        raise AssertionError(f"ranks diverged: {what} differ between ranks ({digests})")
    return True
