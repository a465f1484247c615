"""Benchmark 7: scale-out, one process against two (torchrun's variables, gloo on the CPU).

What is timed, in child Pythons started the way ``torchrun --nproc_per_node N`` starts them (clock
started after imports, model preparation and the process group):

- ``calibration``: :func:`trtqat.quant.calibrate.calibrate` on the same images: one process collects every
  batch; two processes each collect their share of the global batches, merge the histograms and split
  the amax search (``trtqat.quant.sharded_calibration``). Histogram(MSE), YOLOv5 fixture.
- ``qat_step``: one optimizer step of the same global batch (``2 x --batch`` images): one process with the
  whole batch, or two DDP ranks with half each (the per-step agreement and the gradient all-reduce
  included), measured between the progress callbacks of :func:`trtqat.quant.qat.train_qat`; the first
  step is a warm-up.

Both main sides get the same cores: one process uses one thread per core, each of the two uses half of
them. A third side, one process on half the threads, separates the effect of splitting the work from
that of torch's intra-op threading (on a busy machine, threads of one process wait for each other).
Sides are interleaved (1 2 1h, 1h 2 1, ...) and medians reported. A CPU gives the two
processes no extra hardware, so the ratio here measures the cost of the scale-out machinery (sharding,
merging, synchronisation) more than a speed-up; on N GPUs every process has its own device.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import Config, Workspace, log, median, ratio

ROOT = Path(__file__).resolve().parents[1]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, spec: dict, threads: int, timeout: float = 1800) -> list[dict]:
    """Run ``world`` worker processes (one job) and return each rank's timings."""
    port = _port()
    with tempfile.TemporaryDirectory(prefix="trtqat-scaleout-") as tmp:
        procs = []
        for rank in range(world):
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
            env.update({"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
            if world > 1:
                env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                            "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
            out = Path(tmp) / f"rank{rank}.json"
            procs.append((subprocess.Popen([sys.executable, "-m", "benchmarks.scaleout", json.dumps({**spec, "out": str(out)})],
                                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out))
        results = []
        for p, out in procs:
            _, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise RuntimeError(f"scale-out worker failed ({p.returncode}): {err[-2000:]}")
            results.append(json.loads(out.read_text()))
    return results


def run(ws: Workspace, cfg: Config) -> dict:
    ckpt, repo = ws.checkpoint("yolov5")
    images = ws.images(cfg.throughput_images)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    steps = max(2, 2 * cfg.qat_steps)
    global_batch = 2 * max(1, cfg.qat_batch // 2)
    spec = {"ckpt": str(ckpt), "repo": str(repo), "images": str(images), "size": cfg.qat_size,
            "calib_batch": cfg.qat_batch, "global_batch": global_batch, "steps": steps, "method": "mse"}
    half = max(1, cores // 2)
    # side -> (processes, threads each): "1" and "2" share all cores; "1_half" is one process on half of them
    sides = {"1": (1, cores), "2": (2, half), "1_half": (1, half)}
    times: dict[str, list[float]] = {f"{k}_{s}": [] for k in ("calib", "step") for s in sides}
    detail: dict[str, list] = {s: [] for s in sides}
    for r in range(cfg.repeats):
        for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            world, threads = sides[side]
            ranks = _launch(world, spec, threads=threads)
            times[f"calib_{side}"].append(max(x["calib_seconds"] for x in ranks))
            times[f"step_{side}"].append(max(x["step_seconds"] for x in ranks))
            detail[side].append(ranks)
            log(f"scaleout: {world} process(es) x {threads} thread(s): calibration {times[f'calib_{side}'][-1]:.2f} s, "
                f"QAT step {times[f'step_{side}'][-1]:.3f} s")
    med = {k: median(v) for k, v in times.items()}
    return {"family": "yolov5", "size": cfg.qat_size, "calib_images": cfg.throughput_images,
            "calib_batch": cfg.qat_batch, "qat_global_batch": global_batch, "qat_timed_steps": steps - 1,
            "cores": cores, "sides": {k: {"processes": w, "threads": t} for k, (w, t) in sides.items()},
            "times": times, "medians": med,
            "calib_speedup_2_over_1": ratio(med["calib_1"], med["calib_2"]),
            "qat_step_speedup_2_over_1": ratio(med["step_1"], med["step_2"]),
            "calib_speedup_2_over_1_half_threads": ratio(med["calib_1_half"], med["calib_2"]),
            "qat_step_speedup_2_over_1_half_threads": ratio(med["step_1_half"], med["step_2"]),
            "ranks": detail, "backend": "gloo (CPU)",
            "note": "2 processes share the same CPU cores as 1: no extra hardware; NCCL/GPU not measured here"}


# ---------------------------------------------------------------- worker (one rank)

def _worker(spec: dict) -> dict:
    import torch

    from trtqat.data.images import find_images, image_stream
    from trtqat.models import load_checkpoint
    from trtqat.quant.calibrate import calibrate
    from trtqat.quant.distributed import dist_env, init_process_group, sync
    from trtqat.quant.ptq import QuantConfig, prepare_quantized
    from trtqat.quant.qat import QatConfig, train_qat

    env = dist_env()
    init_process_group(env)
    model, _, _, _ = prepare_quantized(load_checkpoint(spec["ckpt"], spec["repo"]), QuantConfig())
    stream = image_stream(spec["images"], spec["size"], spec["calib_batch"])  # the same global batches
    sync(env)
    t0 = time.perf_counter()
    res = calibrate(model, stream, method=spec["method"], env=env)
    calib_seconds = time.perf_counter() - t0
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        per_rank = spec["global_batch"] // env.world_size  # the same global batch, split between the ranks
        cfg = QatConfig(epochs=1, iters=spec["steps"], batch_size=per_rank, size=spec["size"], seed=0)
        sync(env)
        stamps.append(time.perf_counter())
        train_qat(model, find_images(spec["images"]), Path(tmp) / "qat.pt", cfg, env=env,
                  progress=lambda n: stamps.append(time.perf_counter()))
    steps = [b - a for a, b in zip(stamps[1:], stamps[2:])]  # after the warm-up step
    return {"rank": env.rank, "world": env.world_size, "threads": torch.get_num_threads(),
            "calib_seconds": calib_seconds, "calib_collect": res.seconds_collect, "calib_amax": res.seconds_amax,
            "calib_batches": res.batches, "calib_images": res.images, "step_seconds": median(steps),
            "steps": steps}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    Path(spec["out"]).write_text(json.dumps(_worker(spec)))
