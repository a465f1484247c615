"""Decode the raw per-level head outputs of an exported model into the ``(B, N, 5 + nc)`` predictions.

Why: ``trtqat export --head raw`` (and engines built from it) output the detect convs' tensors before the
box decode, ``[B, na, H/s, W/s, 5 + nc]`` per stride, so that a deployment can decode on its own. To score
such a model with the *same* NMS and metric as every other format, ``trtqat eval`` decodes them exactly
as the YOLOv5 v7.0 / YOLOv7 detect heads do in eval mode (the published method: ``p = sigmoid(raw)``,
``xy = (2 p_xy - 0.5 + cell) * stride``, ``wh = (2 p_wh)^2 * anchor``), levels concatenated in stride
order, anchors then rows then columns within a level — the order of the decoded head.

The anchors are not in the graph of a raw export. They are read from the ONNX metadata (keys below,
written next to trtqat export's provenance keys); without them the model cannot be scored and the caller
gets a one-line error.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

#: ONNX ``metadata_props`` keys: JSON ``[[[w, h], ...per anchor], ...per level]`` in input pixels, and
#: JSON ``[8, 16, 32]`` (one stride per level, same order)
ANCHORS_KEY = "anchors"
STRIDES_KEY = "strides"


@dataclass(frozen=True)
class RawHead:
    """Anchors in input pixels ``(nl, na, 2)`` and the stride of each level, in stride order."""

    anchors: tuple[tuple[tuple[float, float], ...], ...]
    strides: tuple[float, ...]

    def to_metadata(self) -> dict[str, str]:
        """The ONNX metadata entries that describe this head (see module docstring)."""
        return {ANCHORS_KEY: json.dumps([[list(a) for a in level] for level in self.anchors]),
                STRIDES_KEY: json.dumps(list(self.strides))}


def raw_head_from_metadata(meta: Mapping[str, str], source: str) -> RawHead:
    """Read the anchors/strides written in an ONNX file's metadata, or raise a one-line InputError."""
    if ANCHORS_KEY not in meta or STRIDES_KEY not in meta:
        raise InputError(f"{source} outputs the raw detect head but its metadata has no '{ANCHORS_KEY}'/"
                         f"'{STRIDES_KEY}' entries, so its boxes cannot be decoded",
                         "Export it with --head decoded (or evaluate the checkpoint it came from)")
    try:
        anchors = tuple(tuple((float(w), float(h)) for w, h in level) for level in json.loads(meta[ANCHORS_KEY]))
        strides = tuple(float(s) for s in json.loads(meta[STRIDES_KEY]))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{source}: unreadable '{ANCHORS_KEY}'/'{STRIDES_KEY}' metadata ({exc})",
                         "Re-export the model with trtqat export") from exc
    if len(anchors) != len(strides) or not anchors:
        raise InputError(f"{source}: metadata has {len(anchors)} anchor levels but {len(strides)} strides",
                         "Re-export the model with trtqat export")
    return RawHead(anchors=anchors, strides=strides)


def raw_head_from_model(model) -> RawHead:
    """The head description of a loaded YOLOv5/YOLOv7 module (its last layer's grid-unit anchors x stride)."""
    detect = model.model[-1]
    stride = torch.as_tensor(detect.stride, dtype=torch.float32).flatten()
    anchors = torch.as_tensor(detect.anchors, dtype=torch.float32).reshape(len(stride), -1, 2) * stride.view(-1, 1, 1)
    return RawHead(anchors=tuple(tuple((float(w), float(h)) for w, h in level.tolist()) for level in anchors),
                   strides=tuple(float(s) for s in stride))


def decode_raw(outputs: Sequence[torch.Tensor], head: RawHead, input_hw: tuple[int, int]) -> torch.Tensor:
    """Raw outputs ``[B, na, ny, nx, no]`` (any order) -> decoded ``(B, N, no)`` float32 predictions.

    Each output is matched to its level by its stride ``input_h / ny``; a shape that fits no level is an
    InputError (an engine/ONNX whose head does not match its metadata).
    """
    by_stride = {}
    for out in outputs:
        if out.dim() != 5:
            raise InputError(f"raw head output of shape {list(out.shape)} is not [B, na, ny, nx, 5+nc]",
                             "Export with --head decoded or --head raw from trtqat")
        by_stride[input_hw[0] / out.shape[2]] = out
    decoded = []
    for level, stride in enumerate(head.strides):
        out = by_stride.get(stride)
        if out is None:
            raise InputError(f"no raw head output has stride {stride:g} (found {sorted(by_stride)})",
                             "Check that the model's metadata belongs to this model")
        decoded.append(_decode_level(out.float(), head.anchors[level], stride))
    return torch.cat(decoded, 1)


def _decode_level(raw: torch.Tensor, anchors, stride: float) -> torch.Tensor:
    bs, na, ny, nx, no = raw.shape
    if na != len(anchors):
        raise InputError(f"raw head level of stride {stride:g} has {na} anchors, the metadata {len(anchors)}",
                         "Check that the model's metadata belongs to this model")
    p = raw.sigmoid()
    ys, xs = torch.meshgrid(torch.arange(ny, device=raw.device, dtype=raw.dtype),
                            torch.arange(nx, device=raw.device, dtype=raw.dtype), indexing="ij")
    cell = torch.stack((xs, ys), -1).view(1, 1, ny, nx, 2)
    anchor = torch.tensor(anchors, device=raw.device, dtype=raw.dtype).view(1, na, 1, 1, 2)
    xy = (p[..., :2] * 2 - 0.5 + cell) * stride
    wh = (p[..., 2:4] * 2) ** 2 * anchor
    return torch.cat((xy, wh, p[..., 4:]), -1).reshape(bs, na * ny * nx, no)
