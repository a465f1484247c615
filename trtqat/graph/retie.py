"""Give every scale-sharing group of a Q/DQ ONNX one scale (pure ONNX).

Why: TensorRT fuses Q/DQ across Concat, MaxPool, nearest Resize and residual Adds only when the scales on
both sides are equal (docs/rules.md); exporters that calibrate every quantizer alone leave them unequal,
and each mismatch becomes a standalone Reformat. The groups are exactly those of ``trtqat rules``
(:func:`trtqat.graph.scale_groups.find_scale_sets` with the same ``rules/*.yaml``); this module only
writes the group's scale into every Q of the group and into the DQ nodes that read them.

The group's scale: without data, the **largest** member scale (no value is clipped that was not clipped
before; values that had a finer grid get a coarser one). With data, ``amax / 127`` of the amax computed
from the members' histograms (:mod:`trtqat.calib`; MSE balances the members' relative errors), but never
below the smallest scale a member already had (``floor``): the tie may clip as much as the input's
most-clipping member did, not more. Why: the input was calibrated as a whole, by a method of its own; a
max-calibrated network whose groups alone were re-derived by MSE clipped where nothing around them did,
and lost 0.57 mAP points on the trained YOLOv7; floored, 0.21 (max groups: 0.13; measured before
``optimize`` made the detect head float, README). Under ``--recalibrate all`` every Q is ``floor_exempt``:
the input's calibration is replaced, so it sets no floor. A Q keeps its scale dtype (FP16 scales stay
FP16).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from .insert_qdq import BOUND, scale_of
from .normalize_qdq import unique_name
from .qdq import constant_value, consumer_map, is_dq, is_q, producer_map
from .scale_groups import ScaleSet


@dataclass(frozen=True)
class TiedGroup:
    """One group after tying: its Q nodes, the scales they had, the one they share now and where it came from."""

    q_nodes: tuple[str, ...]
    rules: tuple[str, ...]
    ops: tuple[str, ...]
    scales_before: tuple[float, ...]
    scale: float
    source: str  # "max" | "calib:<method>" | "calib:<method>, floored"

    @property
    def changed(self) -> bool:
        return any(s != self.scale for s in self.scales_before)

    def to_dict(self) -> dict[str, Any]:
        return {"q_nodes": list(self.q_nodes), "rules": list(self.rules), "ops": list(self.ops),
                "scales_before": list(self.scales_before), "scale": self.scale, "source": self.source,
                "changed": self.changed}


def input_tensor(q: gs.Node, prod: Mapping[str, gs.Node]) -> str:
    """The float tensor ``q`` quantizes, seen through upstream Q/DQ pairs (a requantizing Q reads a DQ)."""
    t = q.inputs[0].name
    for _ in range(64):
        dq = prod.get(t)
        if dq is None or not is_dq(dq):
            break
        up = prod.get(dq.inputs[0].name)
        if up is None or not is_q(up):
            break
        t = up.inputs[0].name
    return t


def tie_scales(graph: gs.Graph, sets: tuple[ScaleSet, ...], amax: Mapping[int, float] | None = None,
               method: str = "", floor_exempt: frozenset[str] = frozenset()) -> list[TiedGroup]:
    """Write one scale per set into its Q nodes and their DQ readers (in place).

    Args:
        sets: the scale sets (their ``q_nodes`` are node names).
        amax: set index -> calibrated amax; sets without an entry take their largest scale.
        method: the calibration method named in each group's ``source``.
        floor_exempt: Q nodes whose scale sets no floor: placeholders of inserted Qs (waiting for data),
            or every Q when the whole input is recalibrated.
    """
    nodes = {n.name: n for n in graph.nodes}
    cons = consumer_map(graph)
    taken = set(graph.tensors())  # a repeated name would make two tensors one in the exported ONNX
    out: list[TiedGroup] = []
    for k, s in enumerate(sets):
        qs = [nodes[name] for name in s.q_nodes if name in nodes]
        if not qs:
            continue
        before = tuple(scale_of(q) for q in qs)
        if amax is not None and k in amax and amax[k] and amax[k] > 0:
            value, source = float(amax[k]) / BOUND, f"calib:{method}"
            floor = min((b for q, b in zip(qs, before) if q.name not in floor_exempt), default=0.0)
            if value < floor:
                value, source = floor, f"calib:{method}, floored"
        else:
            value, source = max(before), "max"
        constants: dict[np.dtype, gs.Constant] = {}
        for q in qs:
            dtype = np.asarray(constant_value(q.inputs[1], through_identity=True)).dtype
            if dtype not in constants:
                v = np.asarray(value, dtype=dtype)
                if not v > 0:  # underflow in a narrow float type: TensorRT rejects a zero scale
                    v = np.asarray(np.finfo(dtype).tiny, dtype=dtype)
                constants[dtype] = gs.Constant(unique_name(f"trtqat_group{k}_scale_{dtype.name}", taken), v)
            c = constants[dtype]
            q.inputs[1] = c
            for reader in cons.get(q.outputs[0].name, []):
                if is_dq(reader) and len(reader.inputs) > 1:
                    reader.inputs[1] = c
        value = float(next(iter(constants.values())).values)
        out.append(TiedGroup(tuple(q.name for q in qs), s.rules, s.ops, before, value, source))
    return out


def group_tensors(graph: gs.Graph, sets: tuple[ScaleSet, ...]) -> dict[int, list[str]]:
    """Set index -> the float tensor each of its Q nodes reads (one entry per Q, repeats kept)."""
    nodes = {n.name: n for n in graph.nodes}
    prod = producer_map(graph)
    return {k: [input_tensor(nodes[q], prod) for q in s.q_nodes if q in nodes] for k, s in enumerate(sets)}
