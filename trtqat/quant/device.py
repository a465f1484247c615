"""Device selection with a clear error when CUDA is asked for but absent."""
from __future__ import annotations

import os

import torch

from ..errors import UsageError


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:i``; ``None`` picks CUDA when available. Under torchrun (``WORLD_SIZE``
    > 1) a plain ``cuda`` means ``cuda:LOCAL_RANK``, so every process drives its own GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"--device {device!r} is not a device", "Use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        local = os.environ.get("LOCAL_RANK")
        if dev.index is None and local is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            dev = torch.device("cuda", int(local))  # torchrun: one GPU per process
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} requested but CUDA is not available on this machine",
                             "Use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present",
                             "Use an existing index")
    elif dev.type != "cpu":
        raise UsageError(f"--device {device} is not supported", "Use cpu, cuda or cuda:N")
    return dev


def preferred_memory_format(device: str | torch.device) -> torch.memory_format:
    """The activation layout QAT trains in on ``device``.

    Channels-last (NHWC) on the CPU: oneDNN's convolutions are faster in it (QAT step 1.16x on the YOLOv7
    fixture). The default layout on CUDA: on an H100 the QAT step with AMP was 6-9 % slower channels-last,
    thin fixture and real-width YOLOv7 alike (``benchmarks/results/cuda*.json``). Gradients do not depend
    on the layout.
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format
