"""Checkpoints: an upstream ``train.py`` checkpoint (the fused float model) or a trtqat PTQ/QAT one
(fake-quant on, exactly as ``trtqat quantize`` evaluates it).

The output layout (:mod:`trtqat.eval.layouts`) is the model's: ``--layout`` when given, else its family's
``output_layout`` (``yolov5`` for YOLOv5/YOLOv7), checked on the first batch.

Security: loading a ``.pt`` runs ``torch.load(weights_only=False)``, i.e. code named in the pickle; it only
happens for files the user names on the command line.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ...errors import InputError, UsageError
from ..fidelity import decoded_predictions
from ..layouts import OutputDecoder, module_hint
from .base import Runner, missing_file


class CheckpointRunner(Runner):
    """A PyTorch checkpoint run in this process on ``device``."""

    format = "checkpoint"

    def __init__(self, path: str | Path, *, repo: str | Path | None = None, device: str = "cpu"):
        super().__init__(path)
        self.repo = repo
        self.device_name = device
        self.model = None
        self.quantized: bool | None = None
        self.family: str | None = None
        self.version = ""  # the family's version (ultralytics: "v8", "11", "26")

    def probe(self) -> None:
        from ...models.checkpoint import looks_like_torch_file
        from ...quant.device import resolve_device

        error = missing_file(self.path)
        if error is not None:
            raise error
        if not looks_like_torch_file(self.path):
            raise InputError(f"{self.path} is not a PyTorch checkpoint (neither a torch zip archive nor a pickle)",
                             "Pass a .pt file written by YOLOv5/YOLOv7 train.py or by trtqat")
        self.device = resolve_device(self.device_name)

    def activate(self, size: int) -> None:
        from ...models import fuse_model, load_checkpoint, model_stride, to_device
        from ...quant.checkpoint import require_quantized

        loaded = load_checkpoint(self.path, self.repo)
        self.family = loaded.family.name
        self.version = str(getattr(loaded.family, "version", "") or "")
        self.notes += [n for n in loaded.notes if n not in self.notes]
        if loaded.extra:  # a trtqat PTQ/QAT checkpoint: the quantized module as saved
            require_quantized(loaded.extra, loaded.path)
            model, self.quantized, self.kind = loaded.model, True, str(loaded.extra.get("kind", "ptq"))
        else:  # an upstream checkpoint: the fused float model, as deployed and exported
            model, self.quantized, self.kind = fuse_model(loaded.model), None, "float"
        stride = model_stride(model)
        if size % stride:
            raise UsageError(f"--size {size} is not a multiple of the stride {stride} of {self.path}",
                             f"Use e.g. --size {max(stride, round(size / stride) * stride)}")
        self.nc = int(getattr(model.model[-1], "nc", 0)) or None
        if self.nc is None:
            raise InputError(f"{self.path}: the last layer has no class count (nc); not a YOLO detect model",
                             "Pass a YOLOv5/YOLOv7 checkpoint")
        self.decoder = OutputDecoder(module_hint(model, self.layout_request, family=loaded.family),
                                     source=f"{self.path.name} output", nc_min=self.nc_min)
        self.model = to_device(model.eval(), self.device)

    def deactivate(self) -> None:
        if self.model is not None:
            self.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        from ..evaluate import model_mode

        with model_mode(self.model, self.quantized):
            return decoded_predictions(self.model(x.to(self.device)))

    def describe(self) -> dict:
        return {**super().describe(), "family": self.family, "version": self.version, "device": str(self.device)}
