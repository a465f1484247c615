"""An engine as data: :class:`EnginePlan` of :class:`Layer` records read from trtexec's JSON exports.

Inputs are ``--exportLayerInfo`` (built with ``--profilingVerbosity=detailed``) and optionally
``--exportProfile``. The raw JSON differs between TensorRT versions; each difference is handled by one
small named normalizer in :mod:`.normalize` (its docstring names the version and the quirk), so this
module only assembles typed records.

Stable API (used by the report, compare and draw views, and by the ONNX lint to check its predictions):

- ``EnginePlan.from_files(graph_json, profile_json=None)`` and ``EnginePlan.from_engine(engine)``;
- ``Layer(name, type, precision, inputs, outputs, origin, time_ms, onnx_nodes, ...)``;
- :func:`engine_layers_summary` -- every Reformat layer with its origin and the ONNX node names behind it
  (in TensorRT 8.x a standalone Q/DQ keeps its ONNX node name as the layer name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine_qdq import is_standalone_qdq, onnx_qdq_name
from ..errors import InputError
from . import normalize as norm

FLOAT_PRECISIONS = ("FP32", "FP16", "BF16", "FP8")


@dataclass(frozen=True)
class Tensor:
    """One layer input/output. ``precision`` is normalized (INT8, FP16, FP32, ...); ``format`` is raw."""

    name: str
    dims: tuple[int, ...]
    precision: str | None
    format: str | None = None
    location: str | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dims": list(self.dims),
            "precision": self.precision,
            "format": self.format,
        }


@dataclass(frozen=True)
class Layer:
    """One engine layer.

    Attributes:
        name: the engine layer name (8.x: fused ONNX names joined with `` + ``).
        type: ``LayerType`` (CaskConvolution, Reformat, kgen, ...).
        precision: precision of the first input, the data the kernel reads (TREx convention); the first
            output's for layers without inputs.
        inputs/outputs: :class:`Tensor` records; a residual-fused conv has the residual as ``inputs[1]``.
        origin: ``"QDQ"`` (a Q/DQ TensorRT could not fuse) or ``"REFORMAT"`` (a layout/precision copy)
            for Reformat layers, else None. A TensorRT 8.2 ``Scale`` layer that is a standalone
            Quantize/Dequantize (no ``Origin`` in the file) is normalized to ``"QDQ"`` too.
        time_ms: average time per inference from the profile, or None without a profile.
        onnx_nodes: ONNX node names behind the layer (10.x ``Metadata``; 8.x parsed from the name).
    """

    name: str
    type: str
    precision: str | None
    inputs: tuple[Tensor, ...] = ()
    outputs: tuple[Tensor, ...] = ()
    origin: str | None = None
    time_ms: float | None = None
    onnx_nodes: tuple[str, ...] = ()
    parameter_type: str | None = None
    tactic: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_reformat(self) -> bool:
        return self.type == "Reformat"

    @property
    def is_standalone_qdq(self) -> bool:
        """A Q/DQ TensorRT could not fuse: an 8.4+ Reformat/QDQ or an 8.2 Scale-as-Quantize layer."""
        return self.origin == "QDQ"

    @property
    def is_convolution(self) -> bool:
        return self.parameter_type == "Convolution" or "Convolution" in self.type

    @property
    def output_precision(self) -> str | None:
        return self.outputs[0].precision if self.outputs else None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "precision": self.precision,
            "origin": self.origin,
            "time_ms": self.time_ms,
            "onnx_nodes": list(self.onnx_nodes),
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(frozen=True)
class EnginePlan:
    """All layers of one engine (optimization profile 0), with per-layer times when a profile was given."""

    layers: tuple[Layer, ...]
    bindings: tuple[str, ...] = ()
    graph_path: Path | None = None
    profile_path: Path | None = None
    profile_count: int | None = None  #: iterations the profile averaged over
    unmatched_profile: tuple[str, ...] = ()  #: profile rows with no layer of that name

    @property
    def name(self) -> str:
        if self.graph_path is None:
            return "engine"
        return self.graph_path.name.removesuffix(".graph.json").removesuffix(".json")

    @property
    def has_times(self) -> bool:
        return any(layer.time_ms is not None for layer in self.layers)

    @property
    def total_time_ms(self) -> float | None:
        return sum(layer.time_ms or 0.0 for layer in self.layers) if self.has_times else None

    @property
    def reformats(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.is_reformat)

    @property
    def conversions(self) -> tuple[Layer, ...]:
        """Reformat layers plus TensorRT 8.2's Scale-as-Q/DQ layers: every layer that only converts."""
        return tuple(layer for layer in self.layers if layer.is_reformat or layer.is_standalone_qdq)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @classmethod
    def from_files(cls, graph_json: str | Path, profile_json: str | Path | None = None) -> EnginePlan:
        """Read layer info (and a profile). Raises :class:`InputError` naming the file on bad input."""
        graph_json = Path(graph_json)
        data = norm.load_layer_info(graph_json)
        profile = norm.load_profile(Path(profile_json)) if profile_json is not None else None
        return cls.from_data(
            data, profile, graph_path=graph_json, profile_path=Path(profile_json) if profile_json else None
        )

    @classmethod
    def from_engine(cls, engine: str | Path, profile_json: str | Path | None = None) -> EnginePlan:
        """Read ``<engine>.graph.json`` and, if present, ``<engine>.profile.json`` next to an engine."""
        graph, profile = resolve_plan_files(engine, profile_json)
        return cls.from_files(graph, profile)

    @classmethod
    def from_data(
        cls,
        data: Mapping,
        profile: norm.Profile | None = None,
        *,
        graph_path: Path | None = None,
        profile_path: Path | None = None,
    ) -> EnginePlan:
        """Assemble the plan from already-loaded layer info and profile (see :mod:`.normalize`)."""
        label = str(graph_path) if graph_path else "layer info"
        raw_layers = norm.check_detailed(data, label)
        times = profile.times if profile else {}
        layers = tuple(_layer(raw, times) for raw in raw_layers)
        names = {layer.name for layer in layers}
        unmatched = tuple(n for n in times if n not in names)
        if profile and times and len(unmatched) == len(times):
            raise InputError(
                f"no layer of {profile_path} matches a layer of {label}",
                "Pass the profile exported together with this engine's layer info",
            )
        return cls(
            layers,
            norm.bindings(data),
            graph_path,
            profile_path,
            profile.count if profile else None,
            unmatched,
        )


def _tensor(raw: Mapping) -> Tensor:
    fmt = norm.tensor_format(raw)
    return Tensor(
        str(raw.get("Name", "")),
        tuple(raw.get("Dimensions") or ()),
        norm.precision_of(fmt),
        fmt,
        raw.get("Location"),
    )


def _layer(raw: Mapping, times: Mapping[str, float]) -> Layer:
    name = str(raw.get("Name", ""))
    inputs = tuple(_tensor(t) for t in raw.get("Inputs") or ())
    outputs = tuple(_tensor(t) for t in raw.get("Outputs") or ())
    first = inputs[0] if inputs else (outputs[0] if outputs else None)
    return Layer(
        name=name,
        type=str(raw.get("LayerType", "")),
        precision=first.precision if first else None,
        inputs=inputs,
        outputs=outputs,
        origin="QDQ" if is_standalone_qdq(raw) else raw.get("Origin"),
        time_ms=times.get(name),
        onnx_nodes=norm.onnx_nodes(raw),
        parameter_type=raw.get("ParameterType"),
        tactic=raw.get("TacticName") or raw.get("TacticValue"),
        raw=raw,
    )


def resolve_plan_files(path: str | Path, profile_json: str | Path | None = None) -> tuple[Path, Path | None]:
    """Turn ``ENGINE`` or ``LAYERS.json`` (+ optional profile) into the two files to read.

    Given an engine, its ``.graph.json`` must exist and its ``.profile.json`` is used when present.
    """
    path = Path(path)
    if path.suffix == ".json":
        graph = path
        if profile_json is None:
            sibling = path.with_name(path.name.replace(".graph.json", ".profile.json"))
            profile_json = sibling if sibling != path and sibling.is_file() else None
    else:
        graph = path.with_name(path.name + ".graph.json")
        if not graph.is_file():
            raise InputError(
                f"no layer info next to {path}: expected {graph}",
                "Build with trtqat build (it exports it), or pass the --exportLayerInfo JSON",
            )
        if profile_json is None:
            sibling = path.with_name(path.name + ".profile.json")
            profile_json = sibling if sibling.is_file() else None
    if not graph.is_file():
        raise InputError(
            f"layer info file not found: {graph}", "Pass the --exportLayerInfo JSON or an engine"
        )
    if profile_json is not None and not Path(profile_json).is_file():
        raise InputError(f"profile file not found: {profile_json}", "Pass the --exportProfile JSON")
    return graph, Path(profile_json) if profile_json is not None else None


@dataclass(frozen=True)
class ReformatEntry:
    """One Reformat layer as the ONNX lint sees it: where it came from and what it converts."""

    name: str
    origin: str | None
    onnx_nodes: tuple[str, ...]
    input_tensor: str | None
    output_tensor: str | None
    input_precision: str | None
    output_precision: str | None
    time_ms: float | None
    layer_type: str = "Reformat"  #: ``Scale`` for a TensorRT 8.2 standalone Quantize

    @property
    def kind(self) -> str:
        """quantize (float->INT8), dequantize (INT8->float), requantize, or layout (same precision)."""
        a, b = self.input_precision, self.output_precision
        if a != "INT8" and b == "INT8":
            return "quantize"
        if a == "INT8" and b != "INT8":
            return "dequantize"
        if a == b == "INT8" and self.origin == "QDQ":
            return "requantize"
        return "layout" if a == b else "cast"

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "origin": self.origin,
            "kind": self.kind,
            "onnx_nodes": list(self.onnx_nodes),
            "input": self.input_tensor,
            "output": self.output_tensor,
            "input_precision": self.input_precision,
            "output_precision": self.output_precision,
            "time_ms": self.time_ms,
            "layer_type": self.layer_type,
        }


def engine_layers_summary(plan: EnginePlan) -> list[ReformatEntry]:
    """Every conversion layer (Q/DQ left unfused, or layout copy) in engine order.

    For ``origin == "QDQ"`` the ``name`` is the ONNX Q/DQ node name in TensorRT 8.x (one name survives
    when equal-scale Qs were merged; a copy across a Concat's inputs adds ``_clone_N``, stripped in
    ``onnx_nodes``), so a static predictor can compare node names directly. TensorRT 8.2's
    Scale-as-Quantize layers are included with ``origin == "QDQ"`` and ``layer_type == "Scale"``.
    """
    out = []
    for layer in plan.conversions:
        src = layer.inputs[0] if layer.inputs else None
        dst = layer.outputs[0] if layer.outputs else None
        nodes = layer.onnx_nodes or ((layer.name,) if layer.origin == "QDQ" else ())
        if layer.origin == "QDQ":
            nodes = tuple(dict.fromkeys(onnx_qdq_name(n) for n in nodes))
        out.append(
            ReformatEntry(
                layer.name,
                layer.origin,
                nodes,
                src.name if src else None,
                dst.name if dst else None,
                src.precision if src else None,
                dst.precision if dst else None,
                layer.time_ms,
                layer.type,
            )
        )
    return out


def dump_plan(plan: EnginePlan) -> str:
    """The normalized plan as JSON text (debugging aid)."""
    return json.dumps([layer.to_dict() for layer in plan.layers], indent=2)
