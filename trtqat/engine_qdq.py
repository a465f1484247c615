"""How a standalone Q/DQ shows up in ``trtexec --exportLayerInfo``, in one place for engine reports and lint.

Why a top-level module: :mod:`trtqat.trt` (engine reports, compare) and :mod:`trtqat.graph` (lint's
``--engine-layers`` check) both have to recognise the layers TensorRT made from Q/DQ nodes it could
not fuse, and neither layer may import the other; this is pure Python on the raw JSON, like
:mod:`trtqat.errors`. Observed forms (shared/fixtures/trtexec/, SOURCES.md sections A and C):

- TensorRT 8.4+: ``LayerType: "Reformat"``, ``Origin: "QDQ"``, named after the ONNX Q/DQ node;
- TensorRT 8.2: ``LayerType: "Scale"`` with no ``Origin``, named after the ONNX node
  (``QuantizeLinear_98``), converting float to INT8 (INT8 to float for a DQ);
- a Quantize that TensorRT copied across a Concat's inputs (its ``SplitQAcrossPrecedingFanIn``
  rewrite) keeps the ONNX name plus ``_clone_N``; one ONNX node then has several engine layers;
- equal-scale Quantizes reading one tensor are merged (``HorizontalMergeQNodes``) and one of the
  ONNX names survives, so an engine name may be any member of the merged set.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_CLONE = re.compile(r"_clone_\d+$")


def onnx_qdq_name(layer_name: str) -> str:
    """The ONNX Q/DQ node name behind a standalone Q/DQ layer name (``_clone_N`` copies stripped)."""
    return _CLONE.sub("", layer_name)


def _is_int8(tensor: Any) -> bool | None:
    if not isinstance(tensor, Mapping):
        return None
    fmt = tensor.get("Format/Datatype") or tensor.get("Datatype") or tensor.get("Format")
    if not isinstance(fmt, str) or not fmt:
        return None
    return re.search(r"(?<![a-z])int8\b", fmt, re.IGNORECASE) is not None


def is_standalone_qdq(layer: Mapping[str, Any]) -> bool:
    """True for an engine layer that is a Q/DQ TensorRT ran on its own (8.4+ Reformat/QDQ, 8.2 Scale)."""
    kind = layer.get("LayerType")
    if kind == "Reformat":
        return layer.get("Origin") == "QDQ"
    if kind == "Scale" and "Origin" not in layer:
        ins, outs = layer.get("Inputs") or [], layer.get("Outputs") or []
        a, b = (_is_int8(ins[0]), _is_int8(outs[0])) if ins and outs else (None, None)
        return a is not None and b is not None and a != b
    return False
