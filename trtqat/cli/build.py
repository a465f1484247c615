"""``trtqat build``: build a TensorRT engine with trtexec, with layer info, profile and log beside it."""

from __future__ import annotations

import time

import click

from .options import json_option, trtexec_options
from .output import emit_json, say


@click.command(name="build")
@click.argument("onnx", type=click.Path(dir_okay=False))
@click.option(
    "--save",
    "engine",
    type=click.Path(dir_okay=False),
    default=None,
    help="Engine file to write (default: the ONNX path with .engine).",
)
@click.option(
    "--mode",
    type=click.Choice(["qat", "fp16", "ptq"]),
    default="qat",
    show_default=True,
    help="qat: Q/DQ ONNX (explicit INT8); fp16: float baseline; ptq: TensorRT's implicit INT8.",
)
@click.option(
    "--calib",
    type=click.Path(dir_okay=False),
    default=None,
    help="Calibration cache for --mode ptq (TensorRT 8.x/10.x only).",
)
@click.option("--min-batch", type=int, default=None, help="Smallest batch of the profile (dynamic ONNX).")
@click.option("--opt-batch", type=int, default=None, help="Batch TensorRT tunes for (default: --max-batch).")
@click.option("--max-batch", type=int, default=None, help="Largest batch of the profile (default 1).")
@click.option("--workspace", "workspace_mib", type=int, default=None, help="Builder workspace in MiB.")
@trtexec_options
@click.option("--verbose-trtexec", is_flag=True, help="Pass --verbose to trtexec (large logs).")
@json_option
def build(
    onnx,
    engine,
    mode,
    calib,
    min_batch,
    opt_batch,
    max_batch,
    workspace_mib,
    trtexec_path,
    trt_version,
    extra,
    verbose_trtexec,
    dry_run,
    as_json,
):
    """Build ONNX into an engine with trtexec.

    Flags follow the TensorRT version: 8.x/10.x get --int8 --fp16 for Q/DQ networks and
    --memPoolSize; 11.x builds strongly typed without precision flags. A dynamic-batch ONNX gets
    min/opt/max shapes. Written beside the engine: ENGINE.graph.json (--exportLayerInfo, detailed),
    ENGINE.profile.json (--exportProfile), ENGINE.build.log and ENGINE.build.json.

    JSON (--json): {"engine", "command", "trt_version", "files": {...}, "notes", "throughput_qps"}.
    """
    from pathlib import Path

    from ..trt.engine import build_engine, build_spec_from_onnx
    from ..trt.trtexec import EngineFiles, build_command, build_notes, format_command, resolve_trtexec

    engine = engine or str(Path(onnx).with_suffix(".engine"))
    spec = build_spec_from_onnx(
        onnx,
        engine,
        mode=mode,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        calib=calib,
        workspace_mib=workspace_mib,
        verbose=verbose_trtexec,
        extra_args=tuple(extra),
    )
    path, caps = resolve_trtexec(trtexec_path, trt_version, dry_run=dry_run)
    cmd = build_command(spec, caps, path)
    notes = build_notes(spec, caps)
    for note in notes:
        say(f"Note: {note}")
    if dry_run:
        if as_json:
            emit_json({"engine": engine, "command": cmd, "trt_version": caps.label, "notes": notes})
        else:
            click.echo(format_command(cmd))
        return
    files = EngineFiles(Path(engine))
    say(f"Building {engine} with TensorRT {caps.label} (log: {files.build_log}) ...")
    start = time.monotonic()
    result = build_engine(spec, caps, path)
    seconds = time.monotonic() - start
    qps = result.summary.throughput_qps if result.summary else None
    if as_json:
        emit_json(
            {
                "engine": engine,
                "command": cmd,
                "trt_version": caps.label,
                "seconds": round(seconds, 2),
                "files": {
                    "layer_info": str(files.graph_json),
                    "profile": str(files.profile_json),
                    "log": str(files.build_log),
                    "build": str(files.build_json),
                },
                "notes": notes,
                "throughput_qps": qps,
            }
        )
        return
    say(f"Built {engine} in {seconds:.1f} s; layer info {files.graph_json}, profile {files.profile_json}")
    if qps is not None:
        say(f"Build-run throughput {qps:g} qps (indicative; run trtqat bench --engine {engine} to measure)")
