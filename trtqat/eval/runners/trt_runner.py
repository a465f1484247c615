"""TensorRT engines (``.engine``/``.plan``) through the TensorRT Python runtime, buffers as torch CUDA tensors.

Untested here: the development machines and CI have neither a GPU nor TensorRT (the README says so).
Written against the name-based tensor API of TensorRT >= 8.5 (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), which TensorRT 10 and 11 keep. ``tensorrt`` is imported only
here, only when an engine is evaluated; without it the user gets one line naming the install.

An engine carries no metadata, so a raw-head engine cannot be decoded (no anchors): it is refused with a
hint to build from a ``--head decoded`` export. The output layout (:mod:`trtqat.eval.layouts`) comes from
``--layout``, else from the metadata of the ONNX named in ``<engine>.build.json`` (``trtqat build``) when
that file is still there, else from the output shape, checked like an ONNX's. An engine built for another
TensorRT version or GPU does not deserialize; that is reported in one line too.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..._deps import require
from ...errors import InputError
from ..layouts import LayoutHint, OutputDecoder, engine_hint
from .base import Runner, missing_file
from .onnx_runner import classify_outputs, square_size


class TensorRTRunner(Runner):
    """A serialized TensorRT engine run on a CUDA device."""

    format = "tensorrt"

    def __init__(self, path: str | Path, *, device: str = "cpu"):
        super().__init__(path)
        self.device = torch.device(device if device.startswith("cuda") else "cuda")
        self.engine = None
        self.context = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []

    def probe(self) -> None:
        error = missing_file(self.path)
        if error is not None:
            raise error
        trt = require("tensorrt", purpose="evaluating TensorRT engines (.engine/.plan)")
        if not torch.cuda.is_available():
            raise InputError(f"{self.path} is a TensorRT engine, which needs a CUDA GPU, and torch sees none",
                             "Run trtqat eval on the machine the engine was built for")
        if not hasattr(trt.ICudaEngine, "num_io_tensors"):
            raise InputError(f"TensorRT {trt.__version__} is too old for trtqat eval",
                             "Use TensorRT 8.5 or newer")
        logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise InputError(f"TensorRT {trt.__version__} cannot deserialize {self.path}",
                             "Rebuild the engine with this TensorRT version on this GPU")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if len(self.inputs) != 1:
            raise InputError(f"{self.path} has {len(self.inputs)} inputs {self.inputs}, not one image batch",
                             "Build the engine from a trtqat export")
        name = self.inputs[0]
        b, _, h, w = tuple(self.engine.get_tensor_shape(name))
        self.fixed_size = square_size(h, w, str(self.path))
        if b > 0:
            self.fixed_batch = b
        else:  # dynamic batch: the first optimization profile's maximum
            self.max_batch = int(tuple(self.engine.get_tensor_profile_shape(name, 0)[2])[0])
        shapes = [list(self.engine.get_tensor_shape(o)) for o in self.outputs]
        self.head, _ = classify_outputs(shapes, str(self.path))
        if self.head == "raw":
            raise InputError(f"{self.path} outputs the raw detect head, and an engine carries no anchors to decode it",
                             "Build the engine from an export with --head decoded, or evaluate that ONNX")
        hint = engine_hint(self.path)
        if self.layout_request:
            hint = LayoutHint(self.layout_request, "--layout", hint.nc)
        self.decoder = OutputDecoder(hint, source=f"{self.path.name} output {self.outputs[0]!r}", nc_min=self.nc_min)
        self.decoder.probe(shapes[0])
        self.nc = self.decoder.nc
        self.kind = None

    def activate(self, size: int) -> None:
        if self.engine is None:
            self.probe()
        self.context = self.engine.create_execution_context()

    def deactivate(self) -> None:
        self.context = None
        self.engine = None

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        import tensorrt as trt

        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                  trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
        name = self.inputs[0]
        with torch.cuda.device(self.device):
            x = x.to(self.device, dtypes[self.engine.get_tensor_dtype(name)]).contiguous()
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            outs = {}
            for out in self.outputs:
                shape = tuple(self.context.get_tensor_shape(out))
                outs[out] = torch.empty(shape, dtype=dtypes[self.engine.get_tensor_dtype(out)], device=self.device)
                self.context.set_tensor_address(out, outs[out].data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise InputError(f"TensorRT failed to run {self.path} on a batch of {x.shape[0]}",
                                 "Check the engine with trtexec --loadEngine")
            stream.synchronize()
        return outs[self.outputs[0]].float()

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device)}
