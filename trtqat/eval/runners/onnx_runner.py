"""Exported ONNX models (float or Q/DQ, static or dynamic batch, decoded or raw head) through onnxruntime.

The output layout (:mod:`trtqat.eval.layouts`) comes from ``--layout``, else from the file's metadata
(Ultralytics, YOLOv5 or trtqat exports), else from the output shape, and is checked against the shape here
and against the first batch's values.

Provider: the CPU one; with ``--device cuda[:i]`` the CUDA provider when this onnxruntime has it (else the
CPU one, with a note in the table). Graph optimizations are limited to the basic, math-preserving level:
onnxruntime's extended level replaces Q/DQ pairs by its own integer kernels (QLinearConv), which is
onnxruntime's INT8 arithmetic, not the model's, and so not what TensorRT or the PyTorch fake-quant run.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError, UsageError
from ...graph.family_detect import family_from_metadata, version_from_metadata
from ...models.detect_head import RawHead, raw_head_from_metadata
from ..layouts import YOLOV5, LayoutHint, OutputDecoder, hint_from_metadata, names_count, square_imgsz
from ..raw_head import decode_raw
from .base import Runner, missing_file

log = logging.getLogger(__name__)


def _dims(value_info) -> list[int | str]:
    """A graph input/output's shape: ints where fixed, names (or '?') where symbolic."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def classify_outputs(shapes: list[list], source: str) -> tuple[str, int | None]:
    """(head, nc) from output shapes: one rank-3 output (decoded, in one of the layouts of
    :mod:`trtqat.eval.layouts`; nc read as for ``[B, N, 5+nc]``) or ``[B, na, ny, nx, 5+nc]`` ones (raw);
    anything else is an InputError naming the shapes."""
    ranks = {len(s) for s in shapes}
    last = {s[-1] for s in shapes if s}
    nc = next(iter(last)) - 5 if len(last) == 1 and isinstance(next(iter(last)), int) else None
    if len(shapes) == 1 and ranks == {3}:
        return "decoded", nc
    if shapes and ranks == {5}:
        return "raw", nc
    raise InputError(f"{source} has outputs {shapes}, not a YOLO head (one decoded output: yolov5 [B, N, 5+nc], "
                     "ultralytics [B, 4+nc, N] or end2end [B, K, 6]; or [B, na, H/s, W/s, 5+nc] per stride raw)",
                     "Export a detection model with one of these outputs")


def square_size(h, w, source: str) -> int | None:
    """The fixed square input size, None when height/width are dynamic; a fixed non-square one is an error."""
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if h != w:
            raise InputError(f"{source} has a fixed {h}x{w} input; trtqat eval letterboxes to a square --size",
                             "Export the model with a square --size or with --dynamic-hw")
        return h
    return None


class OnnxRunner(Runner):
    """An ONNX file run by onnxruntime."""

    format = "onnx"

    def __init__(self, path: str | Path, *, device: str = "cpu"):
        super().__init__(path)
        self.device_name = device
        self.session = None
        self.raw_head: RawHead | None = None
        self.provider = "CPUExecutionProvider"
        self.input_name = "images"
        self.input_dtype = np.float32
        self.family: str | None = None  # what the file's metadata says (trtqat or Ultralytics export)
        self.version = ""

    def probe(self) -> None:
        import onnx

        error = missing_file(self.path)
        if error is not None:
            raise error
        try:
            model = onnx.load(str(self.path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a file that is no ONNX
            raise InputError(f"{self.path} is not a readable ONNX model ({type(exc).__name__})",
                             "Pass a file written by trtqat export or torch.onnx.export") from exc
        consts = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in consts]
        if len(inputs) != 1 or len(_dims(inputs[0])) != 4:
            raise InputError(f"{self.path} has inputs {[(i.name, _dims(i)) for i in inputs]}, not one image batch "
                             "[B, 3, H, W]", "Export it with trtqat export")
        self.input_name = inputs[0].name
        self.input_dtype = onnx.helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
        b, _, h, w = _dims(inputs[0])
        self.fixed_batch = b if isinstance(b, int) and b > 0 else None
        self.fixed_size = square_size(h, w, str(self.path))
        meta = {p.key: p.value for p in model.metadata_props}
        self.family, self.version = family_from_metadata(meta), version_from_metadata(meta)
        self.kind = meta.get("kind") or ("qdq" if any(n.op_type == "QuantizeLinear" for n in model.graph.node)
                                         else "float")
        if str(meta.get("size", "")).isdigit():
            self.recorded_size = int(meta["size"])
        elif square_imgsz(meta):
            self.recorded_size = square_imgsz(meta)
        outputs = [_dims(o) for o in model.graph.output]
        self.head, raw_nc = classify_outputs(outputs, str(self.path))
        if self.head == "raw":
            if self.layout_request not in (None, YOLOV5):
                raise UsageError(f"{self.path} outputs the raw detect head, which trtqat decodes to the yolov5 layout, "
                                 f"not --layout {self.layout_request}", "Leave --layout out for this model")
            self.raw_head = raw_head_from_metadata(meta, str(self.path))
            self.decoder = OutputDecoder(LayoutHint(YOLOV5, "metadata", raw_nc), source=str(self.path))
            self.nc = raw_nc
            return
        source = f"{self.path.name} output {model.graph.output[0].name!r}"
        hint = (LayoutHint(self.layout_request, "--layout", names_count(meta.get("names"))) if self.layout_request
                else hint_from_metadata(meta, str(self.path)))
        self.decoder = OutputDecoder(hint, source=source, nc_min=self.nc_min)
        self.decoder.probe(outputs[0])
        self.nc = self.decoder.nc

    def activate(self, size: int) -> None:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self.device_name.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                index = int(self.device_name.partition(":")[2] or 0)
                providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
            else:
                self.notes.append("onnxruntime has no CUDA provider here: ran on the CPU")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's errors are untyped; one line for the user
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"onnxruntime cannot load {self.path}: {first}",
                             "Check that the file is a complete ONNX export") from exc
        self.provider = self.session.get_providers()[0]

    def deactivate(self) -> None:
        self.session = None

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().cpu().numpy().astype(self.input_dtype, copy=False)}
        outs = [torch.from_numpy(np.asarray(o, dtype=np.float32)) for o in self.session.run(None, feed)]
        if self.head == "raw":
            return decode_raw(outs, self.raw_head, (x.shape[2], x.shape[3]))
        return outs[0]

    def describe(self) -> dict:
        return {**super().describe(), "family": self.family, "version": self.version, "device": self.provider}
