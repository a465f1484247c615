"""Activation histograms and outputs of an ONNX model through onnxruntime (CPU), without torch.

Why onnxruntime and why here: ``trtqat optimize --calib`` recalibrates a Q/DQ ONNX that may come from
any tool, with no PyTorch model behind it. onnxruntime runs the ONNX as it is; the histograms go into the
same :class:`~trtqat.calib.histogram.AbsHistogram` and amax search (:mod:`trtqat.calib.amax`) as the torch
path, so this module only decides which tensors to read and how to feed the images. It lives in
``trtqat/calib/`` (numpy + onnx, onnxruntime imported lazily) below ``trtqat/graph/``'s callers: the
graph layer stays free of any runtime.

Calibrate the *float twin* of a Q/DQ model (:func:`trtqat.graph.strip_qdq.float_twin`): the torch path
also collects with quantization disabled, so every amax describes float activations.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np
import onnx

from .._deps import require
from .histogram import DEFAULT_BINS, AbsHistogram

_NP_OF = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
          onnx.TensorProto.DOUBLE: np.float64}


def session(model: onnx.ModelProto, *, threads: int | None = None):
    """An onnxruntime CPU InferenceSession of ``model`` (quiet logger, optional intra-op thread count)."""
    ort = require("onnxruntime", purpose="running ONNX models")
    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def feeds_for(sess, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The one image input of ``sess`` fed with ``batch`` in the dtype the model declares."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        from ..errors import InputError

        raise InputError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)})",
                         "trtqat optimize calibrates single-input image models")
    dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
    return {inputs[0].name: np.ascontiguousarray(batch, dtype=dtype)}


def chunks(sess, batch: np.ndarray) -> list[np.ndarray]:
    """``batch`` split to the model's batch size when the model fixes one (an export without a dynamic
    batch axis takes one image at a time)."""
    dim = sess.get_inputs()[0].shape[0] if sess.get_inputs()[0].shape else None
    if isinstance(dim, int) and dim > 0 and len(batch) != dim and len(batch) % dim == 0:
        return [batch[i:i + dim] for i in range(0, len(batch), dim)]
    return [batch]


def run_outputs(model: onnx.ModelProto, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Graph outputs of ``model`` on ``batch`` (float32 numpy arrays, by output name)."""
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(names, feeds_for(sess, part)) for part in chunks(sess, batch)]
    return {n: np.concatenate([np.asarray(p[i], dtype=np.float32) for p in parts]) for i, n in enumerate(names)}


def with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (dtypes from shape inference, float32 if unknown)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in tensors:
        if name not in present:
            out.graph.output.append(onnx.helper.make_tensor_value_info(
                name, types.get(name) or onnx.TensorProto.FLOAT, None))
            present.add(name)
    return out


def collect_histograms(model: onnx.ModelProto, groups: Mapping[Hashable, Sequence[str]], batches: Iterable[np.ndarray],
                       *, bins: int = DEFAULT_BINS, progress: Callable[[int], None] | None = None
                       ) -> dict[str, AbsHistogram]:
    """One merged histogram per group of tensors of a float model, over every batch.

    Args:
        model: a float model (no Q/DQ); every tensor named in ``groups`` must exist in it.
        groups: key -> tensor names; each listed tensor is added to the key's histogram once per batch
            (a tensor listed twice counts twice, as a torch quantizer called twice on it would).
        batches: float32 N x C x H x W arrays (e.g. :func:`trtqat.data.images.image_stream`).
        progress: called with the number of images of each batch after it ran.
    """
    names = sorted({t for ts in groups.values() for t in ts})
    sess = session(with_outputs(model, names))
    hists = {key: AbsHistogram(bins) for key in groups}
    for batch in batches:
        # a static batch-1 model runs the batch image by image; the histograms still see it as one batch,
        # as the torch calibrator does (the first batch's range sets the bin width)
        parts = [sess.run(names, feeds_for(sess, part)) for part in chunks(sess, batch)]
        values = {n: np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i]
                  for i, n in enumerate(names)}
        for key, tensors in groups.items():
            for t in tensors:
                hists[key].collect(values[t])
        if progress is not None:
            progress(len(batch))
    return hists
