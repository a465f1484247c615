"""Start real processes as ``torchrun`` does: one Python per rank with MASTER_ADDR/PORT, RANK, LOCAL_RANK and
WORLD_SIZE set (gloo on CPU), or ``torchrun`` itself. Each rank gets one intra-op thread: the test machine
has two cores."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "worker.py"


@dataclass
class Ran:
    rank: int
    returncode: int
    stdout: str
    stderr: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    # PYTHONFAULTHANDLER: a rank that aborts in C++ (SIGABRT) prints every thread's Python stack first
    env.update({"OMP_NUM_THREADS": "1", "TRTQAT_DIST_TIMEOUT": "60", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(argvs: list[list[str]], **extra) -> list[subprocess.Popen]:
    """One process per argv (rank = position), joined into one job."""
    port, world = free_port(), len(argvs)
    procs = []
    for rank, argv in enumerate(argvs):
        env = base_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=world,
                       **extra)
        procs.append(subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def single(argv: list[str], **extra) -> subprocess.Popen:
    """A plain single-process run (no torchrun variables)."""
    return subprocess.Popen([sys.executable, *map(str, argv)], cwd=ROOT, env=base_env(**extra), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait(procs: list[subprocess.Popen], timeout: float = 300) -> list[Ran]:
    """Wait for every process; a hang kills them all and fails the test (the point of the fault tests)."""
    deadline = time.monotonic() + timeout
    out = []
    try:
        for rank, p in enumerate(procs):
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append(Ran(rank, p.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"processes still running after {timeout} s (hang)") from None
    return out


def torchrun(args: list[str], nproc: int = 2, **extra) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node N <args>`` (``python -m torch.distributed.run``)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           *map(str, args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=base_env(**extra), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def gloo_abort(stderr: str) -> bool:
    """True when a rank died of SIGABRT from C++ ``std::terminate`` (torch's gloo backend on CPU, not trtqat):
    torchrun reports ``exitcode: -6`` and the rank printed ``terminate called``."""
    return "terminate called" in stderr and "exitcode: -6" in stderr


def worker(mode: str, spec: dict) -> list[str]:
    """The argv of ``worker.py MODE SPEC`` (SPEC as JSON)."""
    import json

    return [str(WORKER), mode, json.dumps(spec, default=str)]


def children(pid: int) -> list[int]:
    """All descendant process ids of ``pid`` (from /proc)."""
    found, todo = [], [pid]
    while todo:
        cur = todo.pop()
        for task in Path(f"/proc/{cur}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def rank_of(pid: int) -> int | None:
    """The RANK variable of a running process, or None."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None
