"""Lazy imports of heavy or optional dependencies, with an install hint instead of a traceback.

Why: ``trtqat --help``, the graph analysis and the trtexec driver must work on machines without torch,
TensorRT or matplotlib (a CI runner, a Jetson without pip access). Modules outside ``quant/`` and
``models/`` never import torch at module level; optional packages are reached through :func:`require`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import InputError

_INSTALL = {
    "tensorrt": "pip install tensorrt (or use the TensorRT shipped with JetPack)",
    "pycuda": "pip install pycuda",
    "matplotlib": "pip install 'trtqat[plot]'",
    "pycocotools": "pip install 'trtqat[eval]'",
    "onnxslim": "pip install 'trtqat[simplify]'",
    "scipy": "pip install scipy",
}


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise an :class:`InputError` saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised through callers
        top = module.split(".")[0]
        how = _INSTALL.get(top, f"pip install {top}")
        raise InputError(f"'{top}' is required for {purpose} but could not be imported ({exc})",
                         f"Install it with: {how}") from exc


def available(module: str) -> bool:
    """True when ``module`` imports (used to pick fallbacks such as NMS without torchvision)."""
    try:
        importlib.import_module(module)
        return True
    except Exception:  # torchvision can fail with RuntimeError on a mismatched torch
        return False
