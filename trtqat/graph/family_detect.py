"""Which YOLO family an ONNX graph comes from: its metadata when an exporter wrote it, else its structure.

Why: ``trtqat optimize`` picks ``rules/<family>.yaml`` for a Q/DQ ONNX from any exporter, whose node names
follow no convention trtqat can rely on, and ``trtqat lint`` says which family it sees. The answer names
its source, so a user can tell a declared family from an inferred one:

- **metadata**: the Ultralytics package's exporter (``task`` / ``end2end`` keys: YOLOv8, YOLO11, YOLO26,
  ...: family ``yolov8``, the anchor-free family, served by the generic ``default.yaml``) or trtqat's own
  export (``family``, with ``trtqat_version``);
- **structure**, blocks that survive every exporter:
  - the anchor-free head's DFL: a ``Softmax`` over the box bins read by a 1x1 ``Conv`` with one output
    channel whose weights are the bin indices ``0..R-1`` (the integral of the distribution): ``yolov8``;
  - in a graph with a YOLO neck (an upsampling ``Resize`` and a ``Concat``): YOLOv7's MP blocks (MaxPool
    2x2 stride 2) or its SPPCSPC (three MaxPools reading one tensor); YOLOv5's SPPF (a chain of MaxPools,
    each reading the previous one).

One op proves nothing: a Softmax (a classifier, an attention block) is a DFL only with the conv that
integrates it, and a 2x2 MaxPool (VGG) is an MP block only in a graph with a neck.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .qdq import constant_value, is_dq, is_q

FAMILIES = ("yolov5", "yolov7", "yolov8")


@dataclass(frozen=True)
class Family:
    """A family and where it was read: ``metadata``, ``structure``, or ``""`` (unknown)."""

    name: str
    source: str = ""

    def label(self) -> str:
        """``yolov8 (metadata)``, ``yolov5 (structure)``, ``unknown``."""
        return f"{self.name} ({self.source})" if self.source else self.name


def _source(t: gs.Tensor, depth: int = 4) -> gs.Tensor:
    """``t`` seen through Q/DQ nodes (a quantized MaxPool reads DQ(Q(x)))."""
    while depth and len(t.inputs) == 1 and (is_dq(t.inputs[0]) or is_q(t.inputs[0])):
        t, depth = t.inputs[0].inputs[0], depth - 1
    return t


def _readers(t: gs.Tensor, depth: int = 4) -> list[gs.Node]:
    """The nodes reading ``t``, seen through Q/DQ nodes."""
    out = []
    for n in t.outputs:
        if (is_q(n) or is_dq(n)) and depth and n.outputs:
            out += _readers(n.outputs[0], depth - 1)
        else:
            out.append(n)
    return out


def _weight(t: gs.Tensor) -> np.ndarray | None:
    """A weight's constant value, also behind a DequantizeLinear (scale x int values)."""
    value = constant_value(t)
    if value is not None or not t.inputs or not is_dq(t.inputs[0]):
        return value
    dq = t.inputs[0]
    ints = constant_value(_source(dq.inputs[0]))
    if ints is not None and ints.dtype.kind == "f":
        return ints  # DQ(Q(w)) of a float weight (torch-export style): the weight itself
    scale = constant_value(dq.inputs[1]) if len(dq.inputs) > 1 else None
    if ints is None or scale is None:
        return None
    scale = np.asarray(scale, np.float64)
    if scale.ndim == 1 and ints.ndim >= 1 and scale.size == ints.shape[0]:
        scale = scale.reshape(-1, *([1] * (ints.ndim - 1)))
    return np.asarray(ints, np.float64) * scale


def is_dfl(softmax: gs.Node) -> bool:
    """A Softmax whose output is integrated by a 1x1 conv with weights ``0..R-1`` (Ultralytics' DFL)."""
    if softmax.op != "Softmax" or not softmax.outputs:
        return False
    for conv in _readers(softmax.outputs[0]):
        if conv.op != "Conv" or len(conv.inputs) < 2:
            continue
        w = _weight(conv.inputs[1])
        if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1) or w.shape[1] < 2:
            continue
        bins = w.reshape(-1).astype(np.float64)
        if np.allclose(bins, np.arange(bins.size), atol=0.02 * bins.size):
            return True
    return False


def family_from_metadata(meta: Mapping[str, str] | None) -> str | None:
    """The family an exporter wrote into ``metadata_props`` (see module docstring), else None."""
    meta = meta or {}
    if "end2end" in meta or "task" in meta:
        return "yolov8"
    if "trtqat_version" in meta and meta.get("family") in FAMILIES:
        return meta["family"]
    return None


def family_from_graph(graph: gs.Graph) -> str:
    """``yolov8``, ``yolov7``, ``yolov5`` or ``unknown`` (then the generic rules apply), from structure alone."""
    if any(is_dfl(n) for n in graph.nodes if n.op == "Softmax"):
        return "yolov8"
    ops = {n.op for n in graph.nodes}
    if not ({"Resize", "Upsample"} & ops and "Concat" in ops):
        return "unknown"
    pools = [n for n in graph.nodes if n.op == "MaxPool"]
    readers: dict[str, int] = {}
    for p in pools:
        if list(p.attrs.get("kernel_shape", [])) == [2, 2] and list(p.attrs.get("strides", [])) == [2, 2]:
            return "yolov7"
        src = _source(p.inputs[0])
        readers[src.name] = readers.get(src.name, 0) + 1
    if any(n >= 3 for n in readers.values()):
        return "yolov7"
    for p in pools:
        src = _source(p.inputs[0])
        if len(src.inputs) == 1 and src.inputs[0].op == "MaxPool":
            return "yolov5"
    return "unknown"


def detect_onnx_family(graph: gs.Graph, meta: Mapping[str, str] | None = None) -> Family:
    """The family of ``graph`` from ``meta`` (its ONNX ``metadata_props``) when they name one, else from its
    structure; ``Family("unknown")`` when neither says."""
    declared = family_from_metadata(meta)
    if declared is not None:
        return Family(declared, "metadata")
    found = family_from_graph(graph)
    return Family(found, "structure") if found != "unknown" else Family("unknown")
