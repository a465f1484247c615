"""What a reader needs to decode a YOLO detect head's raw outputs: anchors (input pixels) and strides.

Why in ``models/``: both ``trtqat export --head raw`` (``quant/``, which writes them into the ONNX
metadata) and ``trtqat eval`` (``eval/``, which reads them to decode the boxes) need the same description
of the same upstream module; the lower layer owns it so neither imports the other.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

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
    import torch

    detect = model.model[-1]
    stride = torch.as_tensor(detect.stride, dtype=torch.float32).flatten()
    anchors = torch.as_tensor(detect.anchors, dtype=torch.float32).reshape(len(stride), -1, 2) * stride.view(-1, 1, 1)
    return RawHead(anchors=tuple(tuple((float(w), float(h)) for w, h in level.tolist()) for level in anchors),
                   strides=tuple(float(s) for s in stride))
