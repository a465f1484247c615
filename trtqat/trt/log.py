"""Parse trtexec console output: version, pass/fail, errors, and the performance summary.

Why scrape the console at all: the performance summary (throughput, latency percentiles) has no JSON
export in any trtexec version, so this is the one place trtqat reads text. The grammar differs by
version and the parser accepts all of them:

- every logger line is ``[MM/DD/YYYY-HH:MM:SS] [S] message``; an empty info line is ``[..] [I] ``
  (8.x) or ``[..] [I]`` (10.16: no trailing space);
- 8.0-8.2 print a single ``percentile(99%)`` and an extra ``End-to-End Host Latency:`` line;
  8.5+ print one percentile per ``--percentile`` entry (default 90, 95, 99);
- numbers use C++ default formatting (``1.2e-05``, ``inf``).

``[W]``/``[E]`` lines go to stderr in trtexec, so a log captured without ``2>&1`` can end in
``&&&& FAILED`` with no error text at all; :func:`failure_lines` says so instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from .versions import Version, parse_version

NUM = r"(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan)"
_LINE = re.compile(r"^\[(\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d)\] \[([IWEVF])\] ?(.*)$")
_STAT = re.compile(rf"(min|max|mean|median|percentile\(({NUM})%\)) = ({NUM}) ms")
_SCALAR = re.compile(rf"^({NUM}) (qps|s|ms)$")
_RESULT = re.compile(r"^&&&& (PASSED|FAILED|RUNNING)\b")

#: summary keys as printed -> attribute names of :class:`PerfSummary`
_STAT_KEYS = {
    "Latency": "latency",
    "End-to-End Host Latency": "end_to_end",
    "Enqueue Time": "enqueue",
    "H2D Latency": "h2d",
    "GPU Compute Time": "gpu_compute",
    "D2H Latency": "d2h",
}
_SCALAR_KEYS = {
    "Throughput": "throughput_qps",
    "Total Host Walltime": "total_host_walltime_s",
    "Total GPU Compute Time": "total_gpu_compute_s",
}


@dataclass(frozen=True)
class Stats:
    """One ``min = .. ms, max = .., mean = .., median = .., percentile(P%) = ..`` line, in ms."""

    min: float
    max: float
    mean: float
    median: float
    percentiles: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"min": self.min, "max": self.max, "mean": self.mean, "median": self.median}
        out.update({f"p{_pct_label(p)}": v for p, v in sorted(self.percentiles.items())})
        return out


def _pct_label(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


@dataclass(frozen=True)
class PerfSummary:
    """The ``=== Performance summary ===`` block.

    ``throughput_qps`` is queries (inferences) per second: one query is one execution of the engine
    on the whole ``--shapes`` batch, so images/s = qps x batch (:meth:`images_per_s`).
    """

    throughput_qps: float
    latency: Stats | None = None
    gpu_compute: Stats | None = None
    enqueue: Stats | None = None
    h2d: Stats | None = None
    d2h: Stats | None = None
    end_to_end: Stats | None = None  # 8.0-8.2 only
    total_host_walltime_s: float | None = None
    total_gpu_compute_s: float | None = None
    warnings: tuple[str, ...] = ()

    def images_per_s(self, batch: int) -> float:
        return self.throughput_qps * batch

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in _STAT_KEYS.values():
            stats = getattr(self, key)
            out[key] = stats.to_dict() if stats is not None else None
        out["warnings"] = list(self.warnings)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> PerfSummary:
        kwargs = dict(data)
        for key in _STAT_KEYS.values():
            if kwargs.get(key) is not None:
                kwargs[key] = _stats_from_dict(kwargs[key])
        kwargs["warnings"] = tuple(kwargs.get("warnings") or ())
        return cls(**{k: v for k, v in kwargs.items() if k in cls.__dataclass_fields__})


def _stats_from_dict(d: dict) -> Stats:
    pcts = {float(k[1:]): v for k, v in d.items() if k.startswith("p") and k[1:].replace(".", "").isdigit()}
    return Stats(d["min"], d["max"], d["mean"], d["median"], pcts)


@dataclass(frozen=True)
class TrtexecLog:
    """What trtqat needs from one trtexec console log."""

    version: Version | None
    result: str | None  #: "PASSED", "FAILED", or None when the run did not finish
    errors: tuple[str, ...]  #: ``[E]``/``[F]`` messages (empty if stderr was not captured)
    summary: PerfSummary | None
    command: str | None  #: the argv echoed in the ``&&&& RUNNING`` banner

    @property
    def passed(self) -> bool:
        return self.result == "PASSED"


def _float(text: str) -> float:
    return float(text)  # float() accepts "inf"/"nan" and scientific notation


def parse_stats(text: str) -> Stats | None:
    """Parse the right-hand side of a stats line; None if it is not one."""
    values: dict[str, float] = {}
    pcts: dict[float, float] = {}
    for key, pct, value in _STAT.findall(text):
        if pct:
            pcts[_float(pct)] = _float(value)
        else:
            values[key] = _float(value)
    if not {"min", "max", "mean", "median"} <= values.keys():
        return None
    return Stats(values["min"], values["max"], values["mean"], values["median"], pcts)


def split_line(line: str) -> tuple[str | None, str]:
    """``(severity, message)`` of a logger line; ``(None, line)`` for banner or foreign lines."""
    match = _LINE.match(line.rstrip("\r\n"))
    if not match:
        return None, line.rstrip("\r\n")
    return match.group(2), match.group(3)


def parse_summary(text: str) -> PerfSummary | None:
    """Parse the last ``=== Performance summary ===`` block in ``text`` (None if there is none)."""
    lines = text.splitlines()
    starts = [
        i for i, line in enumerate(lines) if split_line(line)[1].strip() == "=== Performance summary ==="
    ]
    if not starts:
        return None
    fields: dict = {}
    warnings: list[str] = []
    for line in lines[starts[-1] + 1 :]:
        severity, message = split_line(line)
        if severity is None or message.startswith("==="):
            break
        if severity == "W":
            if message.startswith("* "):
                warnings.append(message[2:].strip())
            elif warnings and message.startswith("  "):
                warnings[-1] += " " + message.strip()
            continue
        key, _, value = message.partition(": ")
        if key in _STAT_KEYS:
            fields[_STAT_KEYS[key]] = parse_stats(value)
        elif key in _SCALAR_KEYS:
            scalar = _SCALAR.match(value.strip())
            if scalar:
                fields[_SCALAR_KEYS[key]] = _float(scalar.group(1))
    if "throughput_qps" not in fields:
        return None
    return PerfSummary(warnings=tuple(warnings), **fields)


def parse_log(text: str) -> TrtexecLog:
    """Parse a whole trtexec console log (stdout, ideally with stderr merged in)."""
    result = command = None
    errors: list[str] = []
    for line in text.splitlines():
        severity, message = split_line(line)
        if severity in ("E", "F"):
            errors.append(message.strip())
        elif severity is None:
            match = _RESULT.match(message)
            if match:
                if match.group(1) == "RUNNING":
                    command = message.partition(" # ")[2] or None
                else:
                    result = match.group(1)
    return TrtexecLog(
        version=parse_version(text),
        result=result,
        errors=tuple(errors),
        summary=parse_summary(text),
        command=command,
    )


def failure_lines(text: str, tail: int = 20) -> list[str]:
    """The lines worth showing for a failed run: its ``[E]`` lines if any, else the last ``tail`` lines.

    When the log has no error text, say so: trtexec prints errors on stderr, and the 8.2.3 fixture
    (stdout only) shows a failure that the log alone cannot explain.
    """
    log = parse_log(text)
    if log.errors:
        return list(log.errors[-tail:])
    lines = [line for line in text.splitlines() if line.strip()][-tail:]
    return ["(no [E] error lines in the log; trtexec writes errors to stderr)"] + lines
