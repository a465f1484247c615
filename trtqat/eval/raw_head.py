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

from collections.abc import Sequence

import torch

from ..errors import InputError
from ..models.detect_head import RawHead


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
