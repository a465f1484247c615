"""Lazy imports of heavy or optional dependencies, with an install hint instead of a traceback.

Why: ``trtqat --help``, the graph analysis and the trtexec driver must work on machines without torch,
TensorRT or matplotlib (a CI runner, a Jetson without pip access). Modules outside ``quant/`` and
``models/`` never import torch at module level; optional packages are reached through :func:`require`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import InputError

#: optional package -> (extra of trtqat that installs it, extra note). Everything else trtqat imports is a
#: dependency of ``pip install trtqat`` (pyproject.toml [project] dependencies).
_EXTRAS: dict[str, tuple[str, str]] = {
    "tensorrt": ("tensorrt", " (on Jetson, use the TensorRT shipped with JetPack)"),
    "pycuda": ("tensorrt", ""),
    "matplotlib": ("plot", ""),
    "onnxslim": ("simplify", ""),
    "modelopt": ("peers", ""),
}
#: declared dependencies that a broken environment may still lack: how to put them back.
_REINSTALL = {
    "pycocotools": "pip install 'trtqat[eval]' (or pip install pycocotools)",
}


def install_hint(module: str) -> str:
    """How to install ``module`` (its top-level package): the trtqat extra that provides it, else pip."""
    top = module.split(".")[0]
    if top in _EXTRAS:
        extra, note = _EXTRAS[top]
        return f"Install the {extra} extra: pip install 'trtqat[{extra}]'{note}"
    return f"Install it with: {_REINSTALL.get(top, f'pip install {top}')}"


def _not_installed(exc: ImportError, module: str) -> bool:
    """True when the import failed because ``module`` (or a parent package of it) is absent, not because it broke."""
    name = getattr(exc, "name", None)
    return isinstance(exc, ModuleNotFoundError) and bool(name) and (module == name or module.startswith(name + "."))


def require(module: str, *, purpose: str) -> ModuleType:
    """Import ``module`` or raise an :class:`InputError` (one line, exit 2) saying what needs it and how to install it.

    A missing optional package names its extra: ``'matplotlib' is required for the compare bar chart (--plot)
    but is not installed. Install the plot extra: pip install 'trtqat[plot]'.``
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if _not_installed(exc, module):
            problem = "is not installed"
        else:  # installed but broken (a missing sub-dependency, an ABI mismatch): show why
            problem = f"could not be imported ({_first_line(exc)})"
        raise InputError(f"'{top}' is required for {purpose} but {problem}", install_hint(top)) from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def available(module: str) -> bool:
    """True when ``module`` imports (used to pick fallbacks such as NMS without torchvision)."""
    try:
        importlib.import_module(module)
        return True
    except Exception:  # torchvision can fail with RuntimeError on a mismatched torch
        return False
