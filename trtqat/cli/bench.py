"""``trtqat bench``: time an engine with trtexec and parse its performance summary."""

from __future__ import annotations

import click

from .options import json_option, trtexec_options
from .output import emit_json, print_table, say

_ROWS = (
    ("Latency", "latency"),
    ("GPU Compute Time", "gpu_compute"),
    ("Enqueue Time", "enqueue"),
    ("H2D Latency", "h2d"),
    ("D2H Latency", "d2h"),
    ("End-to-End Host Latency", "end_to_end"),
)


@click.command(name="bench")
@click.option("--engine", type=click.Path(dir_okay=False), default=None, help="Engine built by trtqat build.")
@click.option("--batch", type=int, default=None, help="Batch per query (default: the build's opt batch).")
@click.option("--duration", type=float, default=None, help="Seconds to time (trtexec --duration).")
@click.option("--warmup", "warmup_ms", type=int, default=None, help="Warm-up in ms (trtexec --warmUp).")
@click.option("--no-cuda-graph", is_flag=True, help="Do not pass --useCudaGraph (8.x/10.x).")
@trtexec_options
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Parse an existing trtexec log instead of running trtexec.",
)
@json_option
def bench(
    engine,
    batch,
    duration,
    warmup_ms,
    no_cuda_graph,
    trtexec_path,
    trt_version,
    extra,
    log_file,
    dry_run,
    as_json,
):
    """Benchmark ENGINE and print throughput, latency, GPU compute and enqueue statistics.

    Throughput is trtexec's qps: inferences (queries) per second, each over the whole batch, so
    images/s = qps x batch; both are reported. The result is stored as ENGINE.bench.json for
    trtqat compare.

    JSON (--json): {"engine", "batch", "trt_version", "throughput_qps", "images_per_s", "command",
    "summary": {"latency"|"gpu_compute"|"enqueue"|"h2d"|"d2h"|"end_to_end": {"min","max","mean","median",
    "p90",...}, "total_host_walltime_s", "total_gpu_compute_s", "warnings"}}.
    """
    from pathlib import Path

    from ..errors import InputError, UsageError
    from ..trt.engine import BenchResult, bench_engine, bench_spec_for
    from ..trt.log import parse_log
    from ..trt.trtexec import bench_command, format_command, resolve_trtexec

    if log_file:
        path = Path(log_file)
        if not path.is_file():
            raise InputError(f"log file not found: {path}")
        parsed = parse_log(path.read_text(errors="replace"))
        if parsed.summary is None:
            raise InputError(
                f"no performance summary in {path}",
                "Expected a trtexec console log containing '=== Performance summary ==='",
            )
        version = ".".join(map(str, parsed.version)) if parsed.version else None
        result = BenchResult(engine or str(path), batch or 1, version, [], parsed.summary)
    else:
        if not engine:
            raise UsageError("bench needs --engine ENGINE (or --log FILE to parse an existing log)")
        spec = bench_spec_for(
            engine,
            batch=batch,
            duration_s=duration,
            warmup_ms=warmup_ms,
            cuda_graph=not no_cuda_graph,
            extra_args=tuple(extra),
        )
        exe, caps = resolve_trtexec(trtexec_path, trt_version, dry_run=dry_run)
        if dry_run:
            click.echo(format_command(bench_command(spec, caps, exe)))
            return
        if spec.batch is None:
            say(f"Note: no {engine}.build.json (engine not built by trtqat build): images/s assumes batch 1")
        say(f"Benchmarking {engine} with TensorRT {caps.label} ...")
        result = bench_engine(spec, caps, exe)
    if as_json:
        emit_json(result.to_dict())
        return
    _print(result)


def _print(result) -> None:
    s = result.summary
    say(
        f"{result.engine}: {s.throughput_qps:g} qps x batch {result.batch} = {result.images_per_s:g} images/s"
        + (f" (TensorRT {result.trt_version})" if result.trt_version else "")
    )
    pcts = sorted({p for _, key in _ROWS if getattr(s, key) for p in getattr(s, key).percentiles})
    cols = ["metric (ms)", "min", "mean", "median", *[f"p{p:g}" for p in pcts], "max"]
    rows = []
    for label, key in _ROWS:
        st = getattr(s, key)
        if st is not None:
            rows.append([label, st.min, st.mean, st.median, *[st.percentiles.get(p) for p in pcts], st.max])
    print_table(None, cols, rows, justify=["left"] + ["right"] * (len(cols) - 1))
    for warning in s.warnings:
        say(f"trtexec warning: {warning}")
