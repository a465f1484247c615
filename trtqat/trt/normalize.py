"""Small named normalizers for the trtexec JSON exports, one per TensorRT-version quirk.

Each function takes raw JSON-ish data and returns a normalized piece; its docstring names the
TensorRT version(s) and the quirk. :mod:`.plan` composes them. Errors are :class:`InputError`s that
name the file and what was expected, because a wrong file is the common user mistake here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine_qdq import onnx_qdq_name
from ..errors import InputError

_LAYER_INFO_HINT = 'Expected the JSON written by trtexec --exportLayerInfo (an object with a "Layers" list)'
_REBUILD_HINT = (
    "Rebuild the engine with --profilingVerbosity=detailed (trtqat build does this) and export "
    "the layer info again"
)

# --------------------------------------------------------------------------------------- layer info


def load_layer_info(path: Path) -> dict:
    """Read an ``--exportLayerInfo`` file; reject non-JSON and foreign JSON naming the file."""
    if not path.is_file():
        raise InputError(f"layer info file not found: {path}", "Pass the --exportLayerInfo JSON or an engine")
    text = path.read_text(errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})", _LAYER_INFO_HINT
        ) from exc
    if isinstance(data, list) and data and isinstance(data[0], dict) and "count" in data[0]:
        raise InputError(
            f"{path} is an --exportProfile file, not layer info",
            "Pass it with --profile and give the --exportLayerInfo JSON as the main argument",
        )
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        found = f"keys {sorted(data)[:5]}" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
        raise InputError(f"{path} is not trtexec layer info (found {found})", _LAYER_INFO_HINT)
    return data


def check_detailed(data: Mapping, label: str) -> list[Mapping]:
    """Return the layer objects; names-only layer info is an error that says how to rebuild.

    TensorRT 8.2+ default ``--profilingVerbosity=layer_names_only`` writes ``"Layers"`` as a list of
    strings (fixture ``trt8.2.3_mnist-fp32_names-only``); precisions, tensors and reformat origins are
    only in the detailed objects, and verbosity is fixed when the engine is built.
    """
    layers = data.get("Layers") or []
    if layers and all(isinstance(layer, str) for layer in layers):
        raise InputError(
            f"{label} has layer names only ({len(layers)} layers), no precisions or tensors", _REBUILD_HINT
        )
    bad = [i for i, layer in enumerate(layers) if not isinstance(layer, dict) or "Name" not in layer]
    if bad:
        raise InputError(f'{label}: layer {bad[0]} is not an object with a "Name"', _LAYER_INFO_HINT)
    return list(layers)


def bindings(data: Mapping) -> tuple[str, ...]:
    """Engine I/O names: ``"Bindings"`` (8.x-10.x) or ``"I/O Tensors"`` objects (11.x replaced Bindings)."""
    if isinstance(data.get("Bindings"), list):
        return tuple(str(b) for b in data["Bindings"])
    tensors = data.get("I/O Tensors")
    if isinstance(tensors, list):
        return tuple(str(t.get("Name")) for t in tensors if isinstance(t, dict))
    return ()


def tensor_format(raw: Mapping) -> str | None:
    """The tensor's format text: ``"Format/Datatype"`` (8.x sentence or 10.x bare type), or ``"Datatype"``.

    10.x Myelin (``kgen``/``gemm``) tensors have no ``Location`` and give a bare type such as ``Float``.
    """
    for key in ("Format/Datatype", "Datatype", "Format"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    return None


_PRECISION_WORDS = [
    (re.compile(r"\bu?int8\b", re.IGNORECASE), None),  # resolved below (UInt8 vs Int8)
    (re.compile(r"\b(fp16|half)\b", re.IGNORECASE), "FP16"),
    (re.compile(r"\b(bfloat16|bf16)\b", re.IGNORECASE), "BF16"),
    (re.compile(r"\b(fp8|e4m3)\b", re.IGNORECASE), "FP8"),
    (re.compile(r"\b(fp32|float)\b", re.IGNORECASE), "FP32"),
    (re.compile(r"\bint32\b", re.IGNORECASE), "INT32"),
    (re.compile(r"\bint64\b", re.IGNORECASE), "INT64"),
    (re.compile(r"\bbool\b", re.IGNORECASE), "BOOL"),
    (re.compile(r"\bint4\b", re.IGNORECASE), "INT4"),
    (re.compile(r"\bfp4\b", re.IGNORECASE), "FP4"),
]


def precision_of(fmt: str | None) -> str | None:
    """Normalize a format to a precision name.

    8.x writes sentences (``Thirty-two wide channel vectorized row major Int8 format``, ``Row major
    linear FP32``); 10.x often a bare type (``Float``, ``Half``, ``Int8``, ``Int32``, ``Int64``).
    The earliest matching word wins, so ``Channel major FP16 format where channel % 8 == 0`` is FP16.
    """
    if not fmt:
        return None
    best: tuple[int, str] | None = None
    for pattern, name in _PRECISION_WORDS:
        match = pattern.search(fmt)
        if match and (best is None or match.start() < best[0]):
            word = match.group(0).lower()
            best = (match.start(), name or ("UINT8" if word == "uint8" else "INT8"))
    return best[1] if best else None


_METADATA_ITEM = re.compile(r"\[ONNX Layer: (.*?)\]")
_UNNAMED = re.compile(r"\(Unnamed Layer\* \d+\)")
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
_PWN = re.compile(r"^PWN\((.*)\)$")
_NOT_NODES = ("Reformatting CopyNode", "unsqueeze_node_after_", "copied_squeeze_after_", "squeeze_after_")


def onnx_nodes(raw: Mapping) -> tuple[str, ...]:
    """ONNX node names behind an engine layer.

    10.x: ``Metadata`` lists ``[ONNX Layer: name]`` items joined by U+001E (Cask layers) or U+001F
    (Myelin layers), possibly empty. 8.x has no metadata, so the fused layer name is split instead.
    """
    meta = raw.get("Metadata")
    if isinstance(meta, str) and "[ONNX Layer:" in meta:
        return tuple(dict.fromkeys(_METADATA_ITEM.findall(meta)))
    if isinstance(meta, str) and raw.get("StreamId") is not None:
        return ()  # 10.x layer with empty metadata: nothing maps to ONNX
    return onnx_nodes_from_name(str(raw.get("Name", "")))


def onnx_nodes_from_name(name: str) -> tuple[str, ...]:
    """Best-effort ONNX node names from an 8.x fused layer name.

    8.x joins fused parts with `` + ``: ONNX nodes (``QuantizeLinear_20``, ``Conv_22``), weight and
    bias initializers (``layer1.0.conv1.weight``), builder-made shuffles (``(Unnamed Layer* 306)
    [Shuffle]``, ``unsqueeze_node_after_...``), pointwise groups ``PWN(a, b)`` and Myelin regions
    ``{ForeignNode[first...last]}`` (only the two ends are named). Only node-like parts are kept.
    """
    if name.startswith(_NOT_NODES):
        return ()  # a builder-made layer; the names after "to" belong to its consumer
    out: list[str] = []
    for part in _split_fused(name):
        part = part.strip()
        foreign = _FOREIGN.match(part)
        if foreign:
            out += [p for p in foreign.group(1).split("...") if p]
            continue
        pwn = _PWN.match(part)
        if pwn:
            out += [p for inner in _split_top(pwn.group(1), ",") for p in onnx_nodes_from_name(inner.strip())]
            continue
        if (
            not part
            or _UNNAMED.search(part)
            or part.startswith(_NOT_NODES)
            or part.endswith((".weight", ".bias", "_output", ":0"))
        ):
            continue
        out.append(onnx_qdq_name(part))  # a Q copied across a Concat's inputs: <onnx name>_clone_N
    return tuple(dict.fromkeys(out))


def _split_fused(name: str) -> list[str]:
    return _split_top(name, " + ")


def _split_top(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside brackets (PWN(...) and ForeignNode[...] contain separators)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


# ------------------------------------------------------------------------------------------ profile


@dataclass(frozen=True)
class Profile:
    """Per-layer average times (ms per inference) and the iteration count of an ``--exportProfile``."""

    times: dict[str, float]
    count: int | None


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RECORD = re.compile(
    rf'\{{\s*"name"\s*:\s*"(?P<name>[^\n]*?)"\s*,\s*"timeMs"\s*:\s*(?P<total>{_NUM})\s*,'
    rf'\s*"averageMs"\s*:\s*(?P<avg>{_NUM})\s*(?:,\s*"medianMs"\s*:\s*(?P<median>{_NUM})\s*)?,'
    rf'\s*"percentage"\s*:\s*(?P<pct>{_NUM})\s*\}}'
)
_COUNT = re.compile(r'\{\s*"count"\s*:\s*(\d+)\s*\}')


def load_profile(path: Path) -> Profile:
    """Read an ``--exportProfile`` file, tolerating trtexec's unescaped layer names.

    All versions write ``[{"count": N}, {"name", "timeMs", "averageMs", ["medianMs" 8.4+,] "percentage"}...]``
    but do not JSON-escape names, so a name with ``"`` or ``\\`` makes the file invalid JSON. Valid
    files go through ``json``; invalid ones through a per-record pattern (one record per line).
    """
    if not path.is_file():
        raise InputError(f"profile file not found: {path}", "Pass the --exportProfile JSON")
    text = path.read_text(errors="replace")
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        return _profile_from_text(text, path)
    if isinstance(data, dict) and "Layers" in data:
        raise InputError(
            f"{path} is layer info, not an --exportProfile file",
            "Give the layer info as the main argument and the profile with --profile",
        )
    if not isinstance(data, list):
        raise InputError(
            f"{path} is not a trtexec profile (found a JSON {type(data).__name__})", _PROFILE_HINT
        )
    return _profile_from_records(data, path)


_PROFILE_HINT = "Expected the JSON array written by trtexec --exportProfile"


def _profile_from_records(data: list, path: Path) -> Profile:
    times: dict[str, float] = {}
    count = None
    for item in data:
        if not isinstance(item, dict):
            raise InputError(
                f"{path}: profile entries must be objects, found {type(item).__name__}", _PROFILE_HINT
            )
        if "count" in item and "name" not in item:
            count = int(item["count"]) if count is None else count
        elif "name" in item and ("averageMs" in item or "timeMs" in item):
            times[str(item["name"])] = _avg(item.get("averageMs"), item.get("timeMs"), count)
        else:
            raise InputError(f"{path}: unexpected profile entry with keys {sorted(item)}", _PROFILE_HINT)
    if not times:
        raise InputError(f"{path} has no layer timings", _PROFILE_HINT)
    return Profile(times, count)


def _avg(avg, total, count) -> float:
    if avg is not None:
        return float(avg)
    return float(total) / (count or 1)


def _profile_from_text(text: str, path: Path) -> Profile:
    times = {m.group("name"): float(m.group("avg")) for m in _RECORD.finditer(text)}
    if not times:
        raise InputError(f"{path} is neither valid JSON nor a trtexec profile", _PROFILE_HINT)
    count = _COUNT.search(text)
    return Profile(times, int(count.group(1)) if count else None)
