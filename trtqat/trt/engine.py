"""Build and benchmark engines end to end: specs from user options, run trtexec, write the side files.

Why side files: a benchmark or a report is only comparable if one knows how the engine was built and
at which batch it was timed. ``build`` writes ``<engine>.build.json`` (mode, input, batch range,
TensorRT version, argv); ``bench`` reads it to pass the right ``--shapes`` and writes
``<engine>.bench.json``, which ``compare`` reads instead of re-running anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .._io import write_json
from ..errors import BuildError, InputError, UsageError
from .log import PerfSummary, parse_log
from .shapes import BatchRange, read_onnx_input
from .trtexec import BenchSpec, BuildSpec, EngineFiles, bench_command, build_command, run
from .versions import TrtexecCaps


def build_spec_from_onnx(
    onnx: str | Path,
    engine: str | Path,
    *,
    mode: str = "qat",
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
    calib: str | Path | None = None,
    workspace_mib: int | None = None,
    verbose: bool = False,
    extra_args: tuple[str, ...] = (),
) -> BuildSpec:
    """Make a :class:`BuildSpec`, reading the input name and shape from the ONNX.

    A dynamic batch gets min/opt/max shapes (defaults 1/max/max); a static ONNX gets none, and asking
    for batch sizes other than its fixed batch is a usage error (re-export with ``--dynamic``).
    """
    inp = read_onnx_input(onnx)
    asked = (min_batch, opt_batch, max_batch)
    if calib is not None and not Path(calib).is_file():
        raise InputError(
            f"calibration cache not found: {calib}",
            "Pass the cache written by a previous TensorRT INT8 calibration, or omit --calib",
        )
    if inp.dynamic_batch:
        batch: BatchRange | None = BatchRange.from_options(*asked)
        feature_dims = inp.feature_dims()
    else:
        fixed = inp.dims[0] if inp.dims else None
        wrong = [b for b in asked if b is not None and b != fixed]
        if wrong:
            raise UsageError(
                f"ONNX input '{inp.name}' has a fixed batch of {fixed}; cannot build for batch {wrong[0]}",
                "Re-export the model with a dynamic batch (trtqat export --dynamic)",
            )
        batch, feature_dims = None, ()
    return BuildSpec(
        onnx=Path(onnx),
        engine=Path(engine),
        mode=mode,
        input_name=inp.name if batch else None,
        feature_dims=feature_dims,
        batch=batch,
        static_batch=None if batch else (inp.dims[0] if inp.dims else None),
        calib=Path(calib) if calib else None,
        workspace_mib=workspace_mib,
        verbose=verbose,
        extra_args=tuple(extra_args),
    )


@dataclass(frozen=True)
class BuildResult:
    engine: Path
    command: list[str]
    files: EngineFiles
    summary: PerfSummary | None  #: the short timing run trtexec does after building (indicative only)


def build_engine(spec: BuildSpec, caps: TrtexecCaps, trtexec: str) -> BuildResult:
    """Run the build; raise :class:`BuildError` on failure; write ``<engine>.build.json``."""
    files = EngineFiles(spec.engine)
    cmd = build_command(spec, caps, trtexec)
    text = run(cmd, files.build_log, what="build")
    if not spec.engine.is_file():
        raise BuildError(
            f"trtexec reported success but wrote no engine at {spec.engine}", f"See the log {files.build_log}"
        )
    meta = {
        "onnx": str(spec.onnx),
        "engine": str(spec.engine),
        "mode": spec.mode,
        "input": {"name": spec.input_name, "feature_dims": list(spec.feature_dims)}
        if spec.input_name
        else None,
        "batch": {"min": spec.batch.min, "opt": spec.batch.opt, "max": spec.batch.max}
        if spec.batch
        else None,
        "static_batch": spec.static_batch,
        "trt_version": caps.label,
        "command": cmd,
    }
    write_json(files.build_json, meta)
    return BuildResult(spec.engine, cmd, files, parse_log(text).summary)


def read_build_meta(engine: str | Path) -> dict | None:
    """The ``<engine>.build.json`` written by :func:`build_engine`, or None."""
    path = EngineFiles(Path(engine)).build_json
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} is not valid JSON ({exc.msg})", "Delete it or rebuild the engine with trtqat build"
        ) from exc


def bench_spec_for(
    engine: str | Path,
    *,
    batch: int | None = None,
    duration_s: float | None = None,
    warmup_ms: int | None = None,
    cuda_graph: bool = True,
    extra_args: tuple[str, ...] = (),
) -> BenchSpec:
    """A :class:`BenchSpec` whose ``--shapes`` come from the engine's build record.

    Dynamic engines are timed at ``batch`` (default: the build's opt batch), which must lie inside the
    built min..max range. Engines trtqat did not build are run as they are (``--batch`` then needs
    the input given through ``extra_args``).
    """
    engine = Path(engine)
    if not engine.is_file():
        raise InputError(f"engine not found: {engine}", "Build it first with trtqat build")
    meta = read_build_meta(engine)
    if meta and meta.get("batch") and meta.get("input"):
        rng = meta["batch"]
        run_batch = batch or rng["opt"]
        if not rng["min"] <= run_batch <= rng["max"]:
            raise UsageError(
                f"--batch {run_batch} is outside the engine's built range {rng['min']}..{rng['max']}",
                "Rebuild with a larger --max-batch",
            )
        return BenchSpec(
            engine,
            meta["input"]["name"],
            tuple(meta["input"]["feature_dims"]),
            run_batch,
            duration_s,
            warmup_ms,
            cuda_graph,
            tuple(extra_args),
        )
    static = (meta or {}).get("static_batch")
    if batch is not None and batch != static:
        if meta:
            raise UsageError(
                f"the engine was built for a fixed batch of {static}; cannot run batch {batch}",
                "Re-export with a dynamic batch and rebuild",
            )
        raise UsageError(
            f"--batch needs {EngineFiles(engine).build_json} (written by trtqat build) to know "
            "the input name and shape",
            "Rebuild with trtqat build",
        )
    return BenchSpec(engine, None, (), static or batch, duration_s, warmup_ms, cuda_graph, tuple(extra_args))


@dataclass(frozen=True)
class BenchResult:
    """A parsed benchmark: the summary plus what is needed to turn qps into images/s."""

    engine: str
    batch: int
    trt_version: str | None
    command: list[str]
    summary: PerfSummary

    @property
    def images_per_s(self) -> float:
        return self.summary.images_per_s(self.batch)

    def to_dict(self) -> dict:
        return {
            "engine": self.engine,
            "batch": self.batch,
            "trt_version": self.trt_version,
            "throughput_qps": self.summary.throughput_qps,
            "images_per_s": self.images_per_s,
            "command": list(self.command),
            "summary": self.summary.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchResult:
        return cls(
            data["engine"],
            int(data["batch"]),
            data.get("trt_version"),
            list(data.get("command", [])),
            PerfSummary.from_dict(data["summary"]),
        )


def bench_engine(spec: BenchSpec, caps: TrtexecCaps, trtexec: str) -> BenchResult:
    """Run the benchmark, parse its summary, and store it as ``<engine>.bench.json``."""
    files = EngineFiles(spec.engine)
    cmd = bench_command(spec, caps, trtexec)
    text = run(cmd, files.bench_log, what="benchmark")
    summary = parse_log(text).summary
    if summary is None:
        raise InputError(
            f"no performance summary in {files.bench_log}",
            "trtexec printed no '=== Performance summary ==='; check the log",
        )
    result = BenchResult(str(spec.engine), spec.batch or 1, caps.label, cmd, summary)
    write_json(files.bench_json, result.to_dict())
    return result


def read_bench(engine: str | Path) -> BenchResult | None:
    """The stored ``<engine>.bench.json`` or None; malformed files name themselves."""
    path = EngineFiles(Path(engine)).bench_json
    if not path.is_file():
        return None
    try:
        return BenchResult.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(
            f"{path} is not a trtqat bench result ({type(exc).__name__}: {exc})",
            "Re-run trtqat bench on the engine",
        ) from exc
