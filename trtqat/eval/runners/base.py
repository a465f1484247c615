"""One interface for every model format ``trtqat eval`` scores (Polygraphy's runners, cut to what eval needs).

Why one interface: the accuracy of a checkpoint, its ONNX and its engine is only comparable when the same
letterbox, NMS and COCO metric see their outputs. Each runner therefore does one thing: turn a letterboxed
float32 batch ``[B, 3, S, S]`` (0..1) into the model's decoded output in input pixels, in the layout the
model writes (:mod:`trtqat.eval.layouts`: ``yolov5`` ``[B, N, 5+nc]``, ``ultralytics`` ``[B, 4+nc, N]``,
``end2end`` ``[B, K, 6]``), and say which layout that is (its :attr:`Runner.decoder`). Everything else
(:func:`trtqat.eval.evaluate.evaluate`) is shared.

Life cycle: ``probe()`` (cheap checks that can fail with a one-line error before any model runs: the file,
its format, a fixed input size, the head), then ``with runner.activated(size):`` (load, run, free).
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import torch

from ...errors import InputError, UsageError
from ..fidelity import decoded_predictions
from ..layouts import OutputDecoder


class Runner(ABC):
    """A model file that maps letterboxed batches to decoded YOLO predictions.

    Attributes set by :meth:`probe` (None when the format only knows after loading):
        fixed_size: the square input size the model was built for (None: any size).
        fixed_batch: a static batch dimension; batches are split (and the last one padded) to fit it.
        max_batch: the largest batch the model accepts (a TensorRT profile); batches are split to fit.
        nc: number of classes (None where only the first batch, or nothing, tells: an end-to-end output).
        decoder: the output's layout and its conversion to detections (:class:`~trtqat.eval.layouts.OutputDecoder`).

    Set before :meth:`probe` by the caller: ``layout_request`` (``--layout``) and ``nc_min`` (the labels'
    highest class + 1, which helps the output shape tell the layouts apart).
    """

    format = "model"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fixed_size: int | None = None
        self.fixed_batch: int | None = None
        self.max_batch: int | None = None
        self.nc: int | None = None
        self.recorded_size: int | None = None  # the size an export says it was made for (a default only)
        self.kind: str | None = None  # "float" | "ptq" | "qat" when known
        self.head = "decoded"  # "decoded" | "raw"
        self.notes: list[str] = []
        self.layout_request: str | None = None  # --layout
        self.nc_min = 1
        self.decoder: OutputDecoder | None = None

    # -- life cycle -----------------------------------------------------------------------------------
    @abstractmethod
    def probe(self) -> None:
        """Check the file without running it; raise a one-line InputError for bad input."""

    @abstractmethod
    def activate(self, size: int) -> None:
        """Load the model for ``size`` x ``size`` inputs (sets ``nc`` when the probe could not)."""

    @abstractmethod
    def deactivate(self) -> None:
        """Free what :meth:`activate` loaded."""

    @contextlib.contextmanager
    def activated(self, size: int) -> Iterator[Runner]:
        self.check_size(size)
        self.activate(size)
        try:
            yield self
        finally:
            self.deactivate()

    def check_size(self, size: int) -> None:
        """A model built for one input size cannot be scored at another (the letterbox would not fit)."""
        if self.fixed_size is not None and self.fixed_size != size:
            raise UsageError(f"{self.path} has a fixed {self.fixed_size}x{self.fixed_size} input but --size is {size}",
                             f"Pass --size {self.fixed_size}, or export with --dynamic-hw")

    # -- inference ------------------------------------------------------------------------------------
    def settle(self, out) -> None:
        """Decide (symbolic shapes) and check the output layout on an actual output, e.g. the warm-up batch's;
        sets :attr:`nc` from it. InputError when the output is not in the layout."""
        self.decoder.settle(decoded_predictions(out))
        self.nc = self.decoder.nc

    @abstractmethod
    def infer(self, x: torch.Tensor) -> torch.Tensor:
        """One batch that fits the model -> its decoded output (in the layout of :attr:`decoder`)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Any batch: split into chunks the model accepts; a static batch gets its last chunk zero-padded."""
        step = self.fixed_batch or self.max_batch
        if step is None or x.shape[0] == step or (self.fixed_batch is None and x.shape[0] <= step):
            return self.infer(x)
        outs = []
        for start in range(0, x.shape[0], step):
            chunk = x[start:start + step]
            n = chunk.shape[0]
            if self.fixed_batch is not None and n < step:
                chunk = torch.cat((chunk, chunk.new_zeros((step - n, *chunk.shape[1:]))))
            outs.append(self.infer(chunk)[:n])
        return torch.cat(outs)

    # -- reporting -------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """What the comparison table and ``--json`` say about this model."""
        batch = self.fixed_batch if self.fixed_batch is not None else (f"<= {self.max_batch}" if self.max_batch
                                                                       else "dynamic")
        layout = self.decoder.layout if self.decoder is not None else None
        origin = self.decoder.origin if self.decoder is not None else None
        return {"path": str(self.path), "format": self.format, "kind": self.kind, "head": self.head,
                "layout": layout, "layout_from": origin, "batch": batch, "notes": list(self.notes)}


def missing_file(path: Path) -> InputError | None:
    """The one-line error for a model path that is not a readable file, else None."""
    if not path.exists():
        return InputError(f"model not found: {path}", "Check the path")
    if not path.is_file():
        return InputError(f"model is not a file: {path}", "Pass a .pt checkpoint, an .onnx file or a TensorRT engine")
    return None
