"""The trtexec driver: frozen specs, a pure command builder per version, a runner that keeps the log.

Why a pure builder: what trtexec accepts depends on the TensorRT version (see :mod:`.versions`), and a
wrong flag fails only on the user's GPU machine. :func:`build_command` and :func:`bench_command` are
pure functions of ``(spec, caps)`` so every version's command is unit-tested here without TensorRT,
and ``--dry-run`` prints exactly what would run.

Why a runner that raises: trtexec's exit code is the only reliable failure signal (its error text goes
to stderr and can be missing from a captured stdout). :func:`run` merges stderr into the log file,
checks the return code, and raises :class:`BuildError` naming the log and its last lines.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, InputError, UsageError
from .log import failure_lines
from .shapes import BatchRange, shape_arg
from .versions import TrtexecCaps, caps_for_version, caps_from_help, parse_version_option

log = logging.getLogger(__name__)

MODES = ("qat", "fp16", "ptq")
ENV_VAR = "TRTQAT_TRTEXEC"
#: where TensorRT's packages put trtexec when it is not on PATH (deb/rpm, JetPack, NGC containers)
_KNOWN_LOCATIONS = ("/usr/src/tensorrt/bin/trtexec", "/opt/tensorrt/bin/trtexec")


@dataclass(frozen=True)
class EngineFiles:
    """The fixed artifact names beside an engine (TREx convention: suffix appended to the full name)."""

    engine: Path

    def _with(self, suffix: str) -> Path:
        return self.engine.with_name(self.engine.name + suffix)

    @property
    def graph_json(self) -> Path:
        """``--exportLayerInfo`` output (detailed profiling verbosity)."""
        return self._with(".graph.json")

    @property
    def profile_json(self) -> Path:
        """``--exportProfile`` output (per-layer times)."""
        return self._with(".profile.json")

    @property
    def build_log(self) -> Path:
        return self._with(".build.log")

    @property
    def build_json(self) -> Path:
        """What trtqat built: mode, input name/shape, batch range, TensorRT version, argv."""
        return self._with(".build.json")

    @property
    def bench_log(self) -> Path:
        return self._with(".bench.log")

    @property
    def bench_json(self) -> Path:
        """Parsed performance summary of the last ``trtqat bench`` (read by ``compare``)."""
        return self._with(".bench.json")


@dataclass(frozen=True)
class BuildSpec:
    """One engine build. ``batch`` is None for a static-shape ONNX (no shape flags are passed)."""

    onnx: Path
    engine: Path
    mode: str = "qat"
    input_name: str | None = None
    feature_dims: tuple[int, ...] = ()
    batch: BatchRange | None = None
    static_batch: int | None = None  #: the fixed batch of a static ONNX (turns qps into images/s)
    calib: Path | None = None
    workspace_mib: int | None = None
    verbose: bool = False
    extra_args: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.calib is not None and self.mode != "ptq":
            raise UsageError(
                "--calib is only used with --mode ptq",
                "Q/DQ (qat) networks carry their own scales; fp16 has no INT8",
            )


@dataclass(frozen=True)
class BenchSpec:
    """One timing run of a built engine.

    ``batch`` is the batch one query processes; ``--shapes`` is passed only when ``input_name`` is set
    (dynamic engines). For a static engine ``batch`` is its fixed batch and no shape flag is needed.
    """

    engine: Path
    input_name: str | None = None
    feature_dims: tuple[int, ...] = ()
    batch: int | None = None
    duration_s: float | None = None
    warmup_ms: int | None = None
    cuda_graph: bool = True
    extra_args: tuple[str, ...] = ()


def _flag(name: str, value=True) -> list[str]:
    """Render one option: None/False -> nothing, True -> ``--name``, anything else -> ``--name=value``."""
    if value is None or value is False:
        return []
    if value is True:
        return [f"--{name}"]
    return [f"--{name}={value}"]


def _precision_flags(spec: BuildSpec, caps: TrtexecCaps) -> list[str]:
    if spec.mode == "ptq" and not caps.calib:
        raise UsageError(
            f"--mode ptq needs implicit INT8 calibration, which TensorRT {caps.label} removed",
            "Build the PTQ baseline with TensorRT 8.6 or 10.x, or export the PTQ checkpoint "
            "to Q/DQ ONNX and use --mode qat",
        )
    if not caps.int8_fp16_flags:
        return []  # 11+: strongly typed, precision comes from the ONNX (Q/DQ and tensor dtypes)
    if spec.mode == "fp16":
        return ["--fp16"]
    # qat: 8.x/10.x need the INT8 flag for explicit Q/DQ, and --fp16 so the float regions are not FP32.
    # ptq: the same flags make TensorRT's implicit INT8 baseline (calibration cache or dummy ranges).
    return ["--int8", "--fp16"]


def build_command(spec: BuildSpec, caps: TrtexecCaps, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argv that builds ``spec`` and exports layer info and profile next to the engine.

    Raises:
        UsageError: the mode cannot be built by this TensorRT version (``ptq`` on 11.x).
    """
    files = EngineFiles(spec.engine)
    cmd = [trtexec, f"--onnx={spec.onnx}", f"--saveEngine={spec.engine}"]
    cmd += _precision_flags(spec, caps)
    if spec.mode == "ptq" and spec.calib is not None:
        cmd += _flag("calib", spec.calib)
    if spec.batch is not None:
        if not spec.input_name:
            raise UsageError("a dynamic-batch build needs the ONNX input name")
        for flag, batch in (
            ("minShapes", spec.batch.min),
            ("optShapes", spec.batch.opt),
            ("maxShapes", spec.batch.max),
            ("shapes", spec.batch.opt),
        ):
            cmd += _flag(flag, shape_arg(spec.input_name, batch, spec.feature_dims))
    if spec.workspace_mib is not None:
        if caps.mem_pool_size:
            cmd += _flag("memPoolSize", f"workspace:{spec.workspace_mib}MiB")
        else:
            cmd += _flag("workspace", spec.workspace_mib)
    if caps.export_layer_info:
        cmd += _flag("profilingVerbosity", "detailed") + _flag("exportLayerInfo", files.graph_json)
    cmd += _flag("exportProfile", files.profile_json)
    cmd += _flag("separateProfileRun", caps.separate_profile_run)
    cmd += _flag("verbose", spec.verbose)
    return cmd + list(spec.extra_args)


def build_notes(spec: BuildSpec, caps: TrtexecCaps) -> list[str]:
    """Warnings about what this build will and will not give (pure; the CLI prints them)."""
    notes = []
    if caps.always_strongly_typed and spec.mode == "fp16":
        notes.append(
            f"TensorRT {caps.label} builds strongly typed: layers run in the ONNX tensor dtypes, "
            "so an FP32 ONNX gives an FP32 engine; export an FP16 ONNX for an FP16 baseline"
        )
    if spec.mode == "ptq" and spec.calib is None:
        notes.append(
            "--mode ptq without --calib: TensorRT uses placeholder INT8 ranges; the engine is valid "
            "for speed comparisons only, not for accuracy"
        )
    if not caps.export_layer_info:
        notes.append(f"TensorRT {caps.label} cannot export layer info (8.2+); trtqat report will not work")
    return notes


def bench_command(spec: BenchSpec, caps: TrtexecCaps, trtexec: str = "trtexec") -> list[str]:
    """The trtexec argv that times ``spec.engine`` and prints the performance summary."""
    cmd = [trtexec, f"--loadEngine={spec.engine}"]
    if spec.batch is not None and spec.input_name:
        cmd += _flag("shapes", shape_arg(spec.input_name, spec.batch, spec.feature_dims))
    if spec.duration_s is not None:
        cmd += _flag("duration", _num(spec.duration_s))
    if spec.warmup_ms is not None:
        cmd += _flag("warmUp", spec.warmup_ms)
    cmd += _flag("useCudaGraph", spec.cuda_graph and caps.cuda_graph)
    return cmd + list(spec.extra_args)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def format_command(cmd: Sequence[str]) -> str:
    """The argv as one shell-pasteable line (what ``--dry-run`` prints)."""
    return shlex.join(str(c) for c in cmd)


def find_trtexec(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> str:
    """Locate trtexec: ``--trtexec PATH``, then ``$TRTQAT_TRTEXEC``, then PATH, then TensorRT's usual dirs.

    Raises:
        InputError: not found, or the given path is not an executable file.
    """
    env = os.environ if env is None else env
    for source, value in (("--trtexec", explicit), (ENV_VAR, env.get(ENV_VAR))):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise InputError(
                    f"{source} {value} is not an executable file",
                    f"Point --trtexec or {ENV_VAR} at TensorRT's bin/trtexec",
                )
            return str(path)
    found = shutil.which("trtexec", path=env.get("PATH"))
    if found:
        return found
    for candidate in _KNOWN_LOCATIONS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise InputError(
        "trtexec not found on PATH", f"Install TensorRT, or pass --trtexec /path/to/trtexec, or set {ENV_VAR}"
    )


def detect_caps(trtexec: str, timeout: float = 60.0) -> TrtexecCaps:
    """Ask trtexec for its version (``--version``, then ``--help``) and pick the capability row.

    Both print the ``[TensorRT vNNNN]`` banner in every release; the exit code is ignored because
    versions without ``--version`` print the help and exit non-zero.
    """
    for arg in ("--version", "--help"):
        try:
            proc = subprocess.run(
                [trtexec, arg],
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise InputError(
                f"cannot run {trtexec} ({exc.strerror or exc})",
                f"Point --trtexec or {ENV_VAR} at TensorRT's bin/trtexec",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"{trtexec} {arg} did not answer within {timeout:.0f} s") from exc
        caps = caps_from_help(proc.stdout)
        if caps is not None:
            return caps
    raise InputError(
        f"could not tell the TensorRT version of {trtexec} from --version/--help",
        "Pass --trt-version (e.g. 10.16) to choose the flags",
    )


def resolve_trtexec(
    explicit: str | None = None,
    trt_version: str | None = None,
    *,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> tuple[str, TrtexecCaps]:
    """The trtexec to run and its capability row, from ``--trtexec``/``--trt-version``/env/PATH.

    ``--trt-version`` skips asking trtexec; with ``--dry-run`` it also allows a missing trtexec, so a
    command can be prepared on a machine without TensorRT (argv[0] is then ``--trtexec`` or "trtexec").
    """
    if trt_version:
        caps = caps_for_version(parse_version_option(trt_version))
        try:
            return find_trtexec(explicit, env), caps
        except InputError:
            if not dry_run:
                raise
            return str(explicit or "trtexec"), caps
    path = find_trtexec(explicit, env)
    return path, detect_caps(path)


def run(
    cmd: Sequence[str], log_path: str | os.PathLike, *, what: str = "build", timeout: float | None = None
) -> str:
    """Run trtexec with stdout and stderr merged into ``log_path``; return the log text.

    The log is written to a hidden partial file and renamed into place when trtexec ends (also on
    failure, since the log is what explains it).

    Raises:
        InputError: the executable cannot be started.
        BuildError: trtexec exited non-zero or timed out; names the log and its last lines.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    partial = log_path.with_name(f".{log_path.name}.partial")
    log.info("running: %s", format_command(cmd))
    try:
        with open(partial, "wb") as fh:
            proc = subprocess.run(
                [str(c) for c in cmd], check=False, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout
            )
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(
            f"cannot run {cmd[0]} ({exc.strerror or exc})",
            f"Point --trtexec or {ENV_VAR} at TensorRT's bin/trtexec",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        os.replace(partial, log_path)
        raise BuildError(f"trtexec {what} timed out after {timeout:.0f} s; log: {log_path}") from exc
    os.replace(partial, log_path)
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        lines = failure_lines(text)
        raise BuildError(
            f"trtexec {what} failed with exit code {proc.returncode}; log: {log_path}",
            "Last lines of the log:\n  " + "\n  ".join(lines),
        )
    return text
