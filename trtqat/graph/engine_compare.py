"""Compare a lint prediction with a real engine's ``trtexec --exportLayerInfo`` output.

Why: users who have TensorRT can check the prediction (and we can tune the op table) by matching
engine layers to ONNX nodes by name. TensorRT 8.x names a standalone Q/DQ layer after its ONNX node
(8.4+: ``Reformat`` with ``"Origin": "QDQ"``; 8.2: a ``Scale`` layer; a copy across a Concat's
inputs: ``<name>_clone_N``; equal-scale Qs merged: one member's name; see :mod:`trtqat.engine_qdq`),
and fused layers join ONNX node names with `` + `` (pointwise fusions as ``PWN(...)``). Detailed
layer info has dicts; the default (names only) has strings, where a standalone Q/DQ shows up as a
layer whose whole name is an ONNX Q/DQ node name (clone suffix aside).
Only the ``json`` module is needed (trtqat never imports tensorrt).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine_qdq import is_standalone_qdq, onnx_qdq_name
from ..errors import InputError
from .lint import LintReport


@dataclass(frozen=True)
class EngineComparison:
    """Agreements and disagreements between predicted and real standalone Q/DQ and precisions."""

    agree: tuple[str, ...]
    predicted_only: tuple[str, ...]
    engine_only: tuple[str, ...]
    engine_unknown: tuple[str, ...]          # engine Q/DQ layers named after no ONNX Q/DQ node
    precision_agree: tuple[str, ...]
    precision_disagree: tuple[tuple[str, str, str], ...]  # (layer, predicted, engine)
    engine_standalone_qdq: int
    detailed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"engine_standalone_qdq": self.engine_standalone_qdq, "detailed": self.detailed,
                "agree": list(self.agree), "predicted_only": list(self.predicted_only),
                "engine_only": list(self.engine_only), "engine_unknown": list(self.engine_unknown),
                "precision_agree": list(self.precision_agree),
                "precision_disagree": [{"layer": a, "predicted": b, "engine": c}
                                       for a, b, c in self.precision_disagree]}


def load_layer_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read an ``--exportLayerInfo`` JSON file (``{"Layers": [...], ...}``)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"layer info file {str(p)!r} does not exist",
                         "Pass the file written by trtexec --exportLayerInfo") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{str(p)!r} is not a JSON layer-info file ({type(exc).__name__})",
                         "Pass the file written by trtexec --exportLayerInfo") from exc
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise InputError(f"{str(p)!r} has no 'Layers' list", "Pass the file written by trtexec --exportLayerInfo")
    return data


def engine_qdq_layers(layers: Iterable[Any], onnx_qdq_names: set[str]) -> tuple[list[str], list[str]]:
    """Standalone Q/DQ layers of an engine: (ONNX node names they came from, other QDQ layer names).

    One entry per engine layer: a Q that TensorRT split across a Concat's inputs appears once per
    ``_clone_N`` copy, under its ONNX name.
    """
    known, unknown = [], []
    for layer in layers:
        if isinstance(layer, dict):
            if not is_standalone_qdq(layer):
                continue
            name = str(layer.get("Name", ""))
        else:
            name = str(layer)
            if onnx_qdq_name(name) not in onnx_qdq_names:
                continue
        base = onnx_qdq_name(name)
        (known.append(base) if base in onnx_qdq_names else unknown.append(name))
    return known, unknown


def _tokens(name: str) -> set[str]:
    return {t.strip() for t in re.split(r" \+ |PWN\(|\)|, ", name) if t.strip()}


def _input_precision(layer: dict[str, Any]) -> str | None:
    inputs = layer.get("Inputs") or []
    fmt = str(inputs[0].get("Format/Datatype", "")) if inputs and isinstance(inputs[0], dict) else ""
    if not fmt:
        return None
    return "INT8" if "int8" in fmt.lower() else "float"


def compare_with_engine(report: LintReport, layer_info: dict[str, Any], onnx_qdq_names: set[str]
                        ) -> EngineComparison:
    """Match engine layers to the prediction by ONNX node name."""
    layers = layer_info.get("Layers", [])
    known, unknown = engine_qdq_layers(layers, onnx_qdq_names)
    predicted = {s.name: {s.name, *s.aliases} for s in report.standalone}
    engine = set(known)
    # A predicted Q agrees with an engine layer named after any of the Qs it was merged with.
    agree = sorted(p for p, names in predicted.items() if names & engine)
    matched = {n for p in agree for n in predicted[p]}
    pred_only = sorted(p for p in predicted if p not in agree)
    eng_only = sorted(engine - matched)
    prec_ok, prec_bad = [], []
    detailed = any(isinstance(x, dict) for x in layers)
    by_name = {lp.name: lp for lp in report.layers}
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("LayerType") == "Reformat" or is_standalone_qdq(layer):
            continue
        eng = _input_precision(layer)
        for tok in _tokens(str(layer.get("Name", ""))):
            lp = by_name.get(tok)
            if lp is None or eng is None:
                continue
            (prec_ok.append(tok) if lp.precision == eng else prec_bad.append((tok, lp.precision, eng)))
    return EngineComparison(tuple(agree), tuple(pred_only), tuple(eng_only), tuple(sorted(unknown)),
                            tuple(prec_ok), tuple(prec_bad), len(known) + len(unknown), detailed)
