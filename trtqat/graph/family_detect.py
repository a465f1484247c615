"""Which YOLO family an ONNX graph comes from, from its structure alone (no names, no checkpoint).

Why: ``trtqat optimize`` picks ``rules/<family>.yaml`` for a Q/DQ ONNX from any exporter, whose node names
follow no convention trtqat can rely on. The families differ in blocks that survive every exporter:

- an anchor-free head with a DFL (``Softmax`` over the box bins) and C2f blocks (``Split``): YOLOv8/YOLO11
  (Ultralytics), served by the generic ``default.yaml``;
- YOLOv7's MP blocks (MaxPool 2x2 stride 2) or its SPPCSPC (three MaxPools reading one tensor);
- YOLOv5's SPPF (a chain of MaxPools, each reading the previous one).
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .qdq import is_dq, is_q


def _source(t: gs.Tensor, depth: int = 4) -> gs.Tensor:
    """``t`` seen through Q/DQ nodes (a quantized MaxPool reads DQ(Q(x)))."""
    while depth and len(t.inputs) == 1 and (is_dq(t.inputs[0]) or is_q(t.inputs[0])):
        t, depth = t.inputs[0].inputs[0], depth - 1
    return t


def family_from_graph(graph: gs.Graph) -> str:
    """``yolov8``, ``yolov7``, ``yolov5`` or ``unknown`` (then the generic rules apply)."""
    ops = {n.op for n in graph.nodes}
    if "Softmax" in ops and "Split" in ops:
        return "yolov8"
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
