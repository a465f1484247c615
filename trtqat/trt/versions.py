"""Which trtexec flags exist in which TensorRT version: one capability table, chosen from trtexec's output.

Why: trtexec turns an unknown flag into a hard failure (it prints the help and exits non-zero), and its
flags changed a lot between releases that users still run side by side:

- 8.4 deprecated ``--workspace`` in favour of ``--memPoolSize=workspace:N``; 10.0 removed ``--workspace``.
- 8.x/10.x build Q/DQ networks weakly typed, so a Q/DQ ONNX needs ``--int8`` (explicit quantization
  still needs the INT8 builder flag in 8.x) plus ``--fp16`` for the float regions.
- 11.x builds every network strongly typed: ``--int8/--fp16/--best/--calib`` are removed, and
  ``--stronglyTyped``, ``--useCudaGraph``, ``--separateProfileRun`` are accepted no-ops. Implicit INT8
  (calibration caches) is gone, so TensorRT's own PTQ baseline cannot be built there.

The table is keyed by the version printed in the ``&&&& RUNNING TensorRT.trtexec [TensorRT vNNNN]``
banner (every trtexec prints it, also for ``--help``) or the ``TensorRT version: X.Y.Z`` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..errors import UsageError

Version = tuple[int, int, int]

_BANNER = re.compile(r"\[TensorRT v(\d+)\]")
_VERSION_LINE = re.compile(r"TensorRT version:\s*(\d+)\.(\d+)(?:\.(\d+))?")
_DOTTED = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*$")


@dataclass(frozen=True)
class TrtexecCaps:
    """What one trtexec version accepts. Field names say the flag; True means "pass it when wanted"."""

    version: Version
    int8_fp16_flags: bool = True  #: ``--int8``/``--fp16``/``--best`` exist (removed in 11)
    calib: bool = True  #: ``--calib=`` (implicit INT8) exists (removed in 11)
    mem_pool_size: bool = True  #: ``--memPoolSize=workspace:N`` (8.4+)
    workspace: bool = False  #: legacy ``--workspace=N`` (MiB; removed in 10)
    profiling_verbosity: bool = True  #: ``--profilingVerbosity=detailed`` (8.2+)
    export_layer_info: bool = True  #: ``--exportLayerInfo=`` (8.2+)
    separate_profile_run: bool = True  #: ``--separateProfileRun`` is meaningful (always on in 11)
    cuda_graph: bool = True  #: ``--useCudaGraph`` is meaningful (default on in 11)
    strongly_typed_flag: bool = False  #: ``--stronglyTyped`` is meaningful (10.x; always on in 11)
    always_strongly_typed: bool = False  #: 11+: precision comes from the ONNX dtypes only

    @property
    def label(self) -> str:
        return ".".join(str(v) for v in self.version)


def caps_for_version(version: Version) -> TrtexecCaps:
    """The capability row for ``version`` (major, minor, patch).

    Raises:
        UsageError: for TensorRT older than 8.0 (no ONNX explicit-quantization support worth driving).
    """
    major, minor = version[0], version[1]
    if major < 8:
        raise UsageError(
            f"TensorRT {'.'.join(map(str, version))} is too old for trtqat",
            "Use TensorRT 8.4 or newer (8.6, 10.x or 11.x recommended)",
        )
    caps = TrtexecCaps(version=tuple(version))  # type: ignore[arg-type]
    if major == 8:
        early = minor < 4
        return replace(
            caps,
            mem_pool_size=not early,
            workspace=early,
            profiling_verbosity=minor >= 2,
            export_layer_info=minor >= 2,
        )
    if major < 11:  # 9.x (LLM-only release) and 10.x
        return replace(caps, strongly_typed_flag=True)
    return replace(
        caps,
        int8_fp16_flags=False,
        calib=False,
        separate_profile_run=False,
        cuda_graph=False,
        always_strongly_typed=True,
    )


def version_from_code(code: str) -> Version:
    """Decode the banner's ``vNNNN``: ``M*1000+m*100+p`` for 8.x (v8203), ``M*10000+m*100+p`` for >= 10."""
    n = int(code)
    if n >= 100000:
        return n // 10000, (n // 100) % 100, n % 100
    return n // 1000, (n // 100) % 10, n % 100


def parse_version(text: str) -> Version | None:
    """Find the TensorRT version in trtexec output: the ``TensorRT version:`` line, else the banner."""
    match = _VERSION_LINE.search(text)
    if match:
        return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    match = _BANNER.search(text)
    if match:
        return version_from_code(match.group(1))
    return None


def parse_version_option(value: str) -> Version:
    """Parse a user-given ``--trt-version`` such as ``10``, ``10.16`` or ``8.6.1`` (same spelling as
    ``trtqat lint --trt-version``; a bare major means its first release)."""
    match = _DOTTED.match(value or "")
    if not match:
        raise UsageError(f"--trt-version must look like 8.6, 10, 10.16 or 11.0, got {value!r}")
    return int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0)


def caps_from_help(text: str) -> TrtexecCaps | None:
    """Pick capabilities from ``trtexec --help``/``--version`` output.

    The version decides. Only when no version is printed (a custom build) is the flag list used:
    ``--memPoolSize`` without ``--calib`` means 11.x, ``--stronglyTyped`` means 10.x, ``--memPoolSize``
    means 8.6, otherwise 8.2. (The flag list cannot decide alone: 11.x still lists ``--int8`` among
    its safety-builder options.)
    """
    version = parse_version(text)
    if version is None:
        flags = set(re.findall(r"--([A-Za-z][A-Za-z0-9]*)", text))
        if not flags:
            return None
        if "memPoolSize" in flags and "calib" not in flags:
            version = (11, 0, 0)
        elif "stronglyTyped" in flags:
            version = (10, 0, 0)
        elif "memPoolSize" in flags:
            version = (8, 6, 0)
        else:
            version = (8, 2, 0)
    return caps_for_version(version)
