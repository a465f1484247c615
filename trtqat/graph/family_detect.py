"""Which YOLO family an ONNX graph comes from: its metadata when an exporter wrote it, else its structure.

Why: ``trtqat optimize`` picks ``rules/<family>.yaml`` for a Q/DQ ONNX from any exporter, whose node names
follow no convention trtqat can rely on, and ``trtqat lint`` says which family it sees. The answer names
its source, so a user can tell a declared family from an inferred one. Families are named as the torch side
names them (:mod:`trtqat.models.family`): ``yolov5``, ``yolov7``, and ``ultralytics`` (the package's
anchor-free YOLOv8 / YOLO11 / YOLO26) with a version ``v8`` / ``11`` / ``26`` where one can be told:

- **metadata**: the Ultralytics package's exporter (``task`` / ``end2end`` keys; the model it names in
  ``description``, e.g. "Ultralytics YOLO11n model", gives the version: its ``version`` key is the
  package's release, not the model's) or trtqat's own export (``family`` and ``version``, with
  ``trtqat_version``);
- **structure**, blocks that survive every exporter:
  - Ultralytics: the anchor-free head's DFL (a ``Softmax`` over the box bins read by a 1x1 ``Conv`` with one
    output channel whose weights are the bin indices ``0..R-1``, the integral of the distribution), or the
    cross-stage split of C2f / C3k2 / C2PSA (a two-way channel ``Split`` whose first chunk goes straight
    into a ``Concat`` and whose second a conv reads), which no YOLOv5 or YOLOv7 block has. The version:
    attention (C2PSA: a ``Softmax`` between two ``MatMul`` of activations) means YOLO11 or YOLO26, and
    then a DFL means 11, no DFL (``reg_max`` 1) 26; a DFL without attention is YOLOv8. Other Ultralytics
    models (YOLOv10, YOLO12, ...) share these blocks and are read as the nearest of the three;
  - in a graph with a YOLO neck (an upsampling ``Resize`` and a ``Concat``): YOLOv7's MP blocks (MaxPool
    2x2 stride 2) or its SPPCSPC (three MaxPools reading one tensor); YOLOv5's SPPF (a chain of MaxPools,
    each reading the previous one; Ultralytics' SPPF too, so the Ultralytics blocks are looked for first).

One op proves nothing: a Softmax (a classifier, an attention block) is a DFL only with the conv that
integrates it, and a 2x2 MaxPool (VGG) is an MP block only in a graph with a neck.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from .qdq import constant_value, is_dq, is_q

ULTRALYTICS = "ultralytics"
FAMILIES = ("yolov5", "yolov7", ULTRALYTICS)
#: the versions of the ultralytics family, spelled as the torch side spells them (``trtqat.models.family``)
VERSION_V8, VERSION_11, VERSION_26 = "v8", "11", "26"
VERSIONS = (VERSION_V8, VERSION_11, VERSION_26)
#: names a user may give for a family (``OptimizeConfig.family``), with the version they imply: ``yolov8``
#: is what trtqat called the anchor-free family before it was named after its package
ALIASES = {"yolov8": (ULTRALYTICS, VERSION_V8), "yolo11": (ULTRALYTICS, VERSION_11),
           "yolo26": (ULTRALYTICS, VERSION_26)}


@dataclass(frozen=True)
class Family:
    """A family, where it was read (``metadata``, ``structure``, or ``""``: unknown) and, for ``ultralytics``,
    its version (``v8`` / ``11`` / ``26``, or ``""`` when neither the metadata nor the structure tells)."""

    name: str
    source: str = ""
    version: str = ""

    def label(self) -> str:
        """``ultralytics 11 (metadata)``, ``yolov5 (structure)``, ``unknown``."""
        name = f"{self.name} {self.version}" if self.version else self.name
        return f"{name} ({self.source})" if self.source else name


def canonical_family(name: str) -> tuple[str, str]:
    """``(family, version)`` for a family a user names: an alias (``yolov8``) becomes ``("ultralytics",
    "v8")``; any other name is returned as given, with no version."""
    return ALIASES.get(name, (name, ""))


def _transparent(node: gs.Node) -> bool:
    """Q, DQ and Cast nodes: they change how a value is stored, not which block it belongs to (ModelOpt's
    torch export puts a Cast after each DQ)."""
    return is_q(node) or is_dq(node) or node.op == "Cast"


def _source(t: gs.Tensor, depth: int = 6) -> gs.Tensor:
    """``t`` seen through Q/DQ (and Cast) nodes (a quantized MaxPool reads DQ(Q(x)))."""
    while depth and len(t.inputs) == 1 and _transparent(t.inputs[0]):
        t, depth = t.inputs[0].inputs[0], depth - 1
    return t


def _readers(t: gs.Tensor, depth: int = 6) -> list[gs.Node]:
    """The nodes reading ``t``, seen through Q/DQ (and Cast) nodes."""
    out = []
    for n in t.outputs:
        if _transparent(n) and depth and n.outputs:
            out += _readers(n.outputs[0], depth - 1)
        else:
            out.append(n)
    return out


def _weight(t: gs.Tensor) -> np.ndarray | None:
    """A weight's constant value, also behind a DequantizeLinear (scale x int values) and Casts."""
    while len(t.inputs) == 1 and t.inputs[0].op == "Cast" and t.inputs[0].inputs:
        t = t.inputs[0].inputs[0]
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
    if "trtqat_version" in meta and meta.get("family"):
        name = canonical_family(meta["family"])[0]
        if name in FAMILIES:
            return name
    if "end2end" in meta or "task" in meta:
        return ULTRALYTICS
    return None


_MODEL_NAME = re.compile(r"\bYOLO(?:v)?(\d+)", re.IGNORECASE)


def version_from_metadata(meta: Mapping[str, str] | None) -> str:
    """The ultralytics version the metadata names: trtqat's ``version`` key, or the model in Ultralytics'
    ``description`` ("Ultralytics YOLO11n model" -> ``11``); ``""`` when it names none of :data:`VERSIONS`."""
    meta = meta or {}
    if "trtqat_version" in meta and meta.get("version") in VERSIONS:
        return meta["version"]
    match = _MODEL_NAME.search(meta.get("description", "")) if ("task" in meta or "end2end" in meta) else None
    if match is None:
        return ""
    number = match.group(1)
    version = f"v{number}" if number == "8" else number
    return version if version in VERSIONS else ""


def family_from_graph(graph: gs.Graph) -> str:
    """``ultralytics``, ``yolov7``, ``yolov5`` or ``unknown`` (then the generic rules apply), from structure
    alone."""
    if any(is_dfl(n) for n in graph.nodes if n.op == "Softmax") or any(_is_cross_stage_split(n) for n in graph.nodes):
        return ULTRALYTICS
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


def _is_cross_stage_split(split: gs.Node) -> bool:
    """C2f / C3k2 / C2PSA: ``cv1``'s output split in two along the channels; the first chunk goes straight
    into the block's Concat, the second into a conv (the bottlenecks or the PSA block), and that Concat
    also gathers what grew from the second (seen through Q/DQ nodes)."""
    if split.op != "Split" or len(split.outputs) != 2 or split.attrs.get("axis", 0) != 1:
        return False
    first, second = (_readers(t) for t in split.outputs)
    concats = [c for c in first if c.op == "Concat"]
    return bool(concats) and any(c.op == "Conv" for c in second) and all(
        any(_reaches(t, c) for t in split.outputs[1:]) for c in concats)


def _reaches(t: gs.Tensor, target: gs.Node, limit: int = 400) -> bool:
    """Is ``target`` downstream of ``t`` (within ``limit`` nodes)?"""
    stack, seen = [t], set()
    while stack and len(seen) < limit:
        for n in stack.pop().outputs:
            if n is target:
                return True
            if id(n) not in seen:
                seen.add(id(n))
                stack.extend(n.outputs)
    return False


def ultralytics_version(graph: gs.Graph) -> str:
    """``v8``, ``11`` or ``26`` from the structure of an Ultralytics graph (module docstring), else ``""``."""
    dfl = any(is_dfl(n) for n in graph.nodes if n.op == "Softmax")
    if not any(_is_attention_softmax(n) for n in graph.nodes if n.op == "Softmax"):
        return VERSION_V8 if dfl else ""
    return VERSION_11 if dfl else VERSION_26


def _is_attention_softmax(softmax: gs.Node) -> bool:
    """A Softmax of a MatMul of two activations (maybe scaled by a constant), read (through Transposes and
    Q/DQ) by another such MatMul."""
    src = _source(softmax.inputs[0]) if softmax.inputs else None
    for _ in range(4):  # the attention scale: MatMul -> Mul/Div by a constant -> Softmax
        p = src.inputs[0] if src is not None and len(src.inputs) == 1 else None
        if p is None or p.op not in ("Mul", "Div") or not any(_weight(t) is not None for t in p.inputs[1:]):
            break
        src = _source(p.inputs[0])
    if src is None or len(src.inputs) != 1 or not _is_activation_matmul(src.inputs[0]):
        return False
    stack = [softmax.outputs[0]]
    for _ in range(8):
        if not stack:
            break
        readers = _readers(stack.pop())
        if any(_is_activation_matmul(r) for r in readers):
            return True
        stack += [r.outputs[0] for r in readers if r.op == "Transpose" and r.outputs]
    return False


def _is_activation_matmul(node: gs.Node) -> bool:
    return node.op == "MatMul" and len(node.inputs) == 2 and all(_weight(t) is None for t in node.inputs)


def detect_onnx_family(graph: gs.Graph, meta: Mapping[str, str] | None = None) -> Family:
    """The family of ``graph`` from ``meta`` (its ONNX ``metadata_props``) when they name one, else from its
    structure; ``Family("unknown")`` when neither says. An ultralytics family's version comes from the
    metadata when they name the model, else from the structure."""
    declared = family_from_metadata(meta)
    name, source = (declared, "metadata") if declared is not None else (family_from_graph(graph), "structure")
    if name == "unknown":
        return Family("unknown")
    version = ""
    if name == ULTRALYTICS:
        version = version_from_metadata(meta) or ultralytics_version(graph)
    return Family(name, source, version)
