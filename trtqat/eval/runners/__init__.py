"""Runners: every model format ``trtqat eval`` scores, behind one interface (:class:`.base.Runner`).

* ``.pt`` / ``.pth``: :class:`.torch_runner.CheckpointRunner`, PyTorch on ``--device``;
* ``.onnx``: :class:`.onnx_runner.OnnxRunner`, onnxruntime (CPU; the CUDA provider with ``--device cuda``);
* ``.engine`` / ``.plan`` / ``.trt``: :class:`.trt_runner.TensorRTRunner`, the TensorRT Python runtime
  (imported lazily).

A file with another suffix is recognised by content when it is a torch checkpoint (zip or pickle) or an
ONNX protobuf; anything else is a one-line error.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from .base import Runner, missing_file

CHECKPOINT_SUFFIXES = (".pt", ".pth")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def runner_format(path: Path) -> str:
    """``checkpoint`` / ``onnx`` / ``tensorrt`` by suffix, else by content; InputError when unknown."""
    from ...models.checkpoint import looks_like_torch_file

    suffix = path.suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt"
    error = missing_file(path)
    if error is not None:
        raise error
    if looks_like_torch_file(path):
        return "checkpoint"
    if _looks_like_onnx(path):
        return "onnx"
    raise InputError(f"unknown model format: {path}",
                     "Pass a .pt checkpoint, an .onnx file or a TensorRT .engine/.plan")


def _looks_like_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not ONNX
        return False
    return len(model.graph.node) > 0


def open_runner(path: str | Path, *, repo: str | Path | None = None, device: str = "cpu",
                layout: str | None = None) -> Runner:
    """The runner for ``path`` (not yet probed); ``layout`` forces its output layout (``--layout``)."""
    from ..layouts import check_layout_name

    check_layout_name(layout)
    path = Path(path)
    fmt = runner_format(path)
    if fmt == "checkpoint":
        from .torch_runner import CheckpointRunner

        runner: Runner = CheckpointRunner(path, repo=repo, device=device)
    elif fmt == "onnx":
        from .onnx_runner import OnnxRunner

        runner = OnnxRunner(path, device=device)
    else:
        from .trt_runner import TensorRTRunner

        runner = TensorRTRunner(path, device=device)
    runner.layout_request = layout
    return runner


__all__ = ["Runner", "open_runner", "runner_format"]
