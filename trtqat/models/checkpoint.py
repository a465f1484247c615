"""Load the checkpoints upstream YOLOv5/YOLOv7 ``train.py`` writes, and Ultralytics YOLOv8/YOLO11/YOLO26
checkpoints (``YOLO.save()``, trainer ``last.pt``/``best.pt``), with one-line errors for bad input.

Ultralytics checkpoints pickle ``ultralytics.nn.tasks.DetectionModel``: unpickling imports the installed
``ultralytics`` package (trtqat never imports it otherwise and does not depend on it); without it the
error names ``pip install ultralytics``.

Security: a ``.pt`` checkpoint is a pickle. ``torch.load(..., weights_only=False)`` executes code named in
the file (it imports upstream classes and may run anything). trtqat only loads files the user names
explicitly on the command line; never point it at a checkpoint you do not trust.
"""
from __future__ import annotations

import contextlib
import io
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .family import FamilyInfo, check_supported, detect_family
from .repo import ENV_REPO, ULTRALYTICS, looks_like_ultralytics_root, resolve_repo, upstream_on_path

log = logging.getLogger(__name__)

#: entries of an upstream checkpoint dict that may hold the module, in order of preference
MODULE_KEYS = ("ema", "model")


@dataclass
class LoadedModel:
    """A float32, eval-mode module plus what trtqat learned about it."""

    model: Any  # torch.nn.Module
    family: FamilyInfo
    path: Path
    repo: Path | None
    source_key: str | None  # 'ema' / 'model' / None for a bare module
    extra: dict = field(default_factory=dict)  # trtqat metadata when the file is a trtqat checkpoint
    notes: list[str] = field(default_factory=list)  # what the user should know about how it was read


def modelopt_note(obj: Any) -> str | None:
    """A note when an Ultralytics checkpoint carries ModelOpt QAT state (``YOLO.save()`` of a model trained
    with Ultralytics' QAT: ``modelopt`` holds ModelOpt's quantizer state and learned ranges, ``model`` the
    weights with the quantizers stripped). trtqat reads those weights as a float model; applying the learned
    ranges would need ModelOpt, so they are named as not applied rather than dropped silently."""
    if isinstance(obj, dict) and obj.get("modelopt"):
        return ("it carries ModelOpt QAT state (Ultralytics QAT): its float weights are used, ModelOpt's learned "
                "ranges are not applied; to measure that QAT model export it with Ultralytics "
                "(format='onnx') and run trtqat eval/optimize on the ONNX, or re-quantize it with trtqat quantize")
    return None


def looks_like_torch_file(path: Path) -> bool:
    """torch.save writes a zip archive (torch >= 1.6) or a legacy pickle starting with 0x80.

    Judged by the magic bytes, so a truncated checkpoint is reported as unreadable, not as foreign."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def torch_load(path: str | Path, repo: str | Path | None = None) -> tuple[Any, Path | None]:
    """``torch.load`` a pickled checkpoint with the upstream clone importable; return (object, repo).

    Raises InputError with one actionable line for: a missing file, a file that is not a torch checkpoint,
    a pickle that needs upstream modules that cannot be imported (missing/wrong ``--repo``, or the repo's
    own import of torchvision or another dependency failing).
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint not found: {path}", "Check the path")
    if not path.is_file():
        raise InputError(f"checkpoint is not a file: {path}", "Pass a .pt file written by train.py or trtqat")
    if not looks_like_torch_file(path):
        raise InputError(f"{path} is not a PyTorch checkpoint (neither a torch zip archive nor a pickle)",
                         "Pass a .pt file written by YOLOv5/YOLOv7 train.py or by trtqat")
    repo_path = resolve_repo(repo)
    with upstream_on_path(repo_path), _quiet():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one actionable line
            raise _load_error(exc, path, repo_path) from exc
    return obj, repo_path


def _frames(exc: BaseException) -> list[Path]:
    out, tb = [], exc.__traceback__
    while tb is not None:
        out.append(Path(tb.tb_frame.f_code.co_filename))
        tb = tb.tb_next
    return out


def _raised_in(exc: BaseException, package: str) -> bool:
    """True when ``exc`` (or its message) comes from code of ``package`` (e.g. a broken torchvision whose
    import fails with AttributeError, OSError or RuntimeError rather than ImportError)."""
    return package in str(exc) or any(package in f.parts for f in _frames(exc))


def _raised_in_package(exc: BaseException, package: str) -> bool:
    """True when a frame of the failure runs code of the top-level package ``package`` (by module name)."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] == package:
            return True
        tb = tb.tb_next
    return False


def _raised_in_repo(exc: BaseException, repo: Path | None) -> bool:
    """True when the failure happened while running code of the upstream clone (its imports)."""
    return repo is not None and any(repo in f.resolve().parents for f in _frames(exc) if f.is_absolute())


def _load_error(exc: Exception, path: Path, repo: Path | None) -> InputError:
    """The one-line error for a failed ``torch.load`` of an upstream pickle."""
    if _raised_in(exc, "torchvision"):
        return _torchvision_error(exc, repo)
    if isinstance(exc, ImportError):
        return _import_error(exc, path, repo)
    if isinstance(exc, AttributeError) and "Can't get attribute" in str(exc) and f"'{ULTRALYTICS}." in str(exc):
        return InputError(f"{path.name} needs a class that the imported ultralytics package ({_ultralytics_origin(repo)}) "
                          f"does not define ({_first_line(exc)})",
                          "Install the Ultralytics release that wrote the checkpoint (pip install -U ultralytics)")
    if isinstance(exc, AttributeError) and "Can't get attribute" in str(exc):
        where = f"--repo {repo}" if repo else "the imported upstream code"
        return InputError(f"{path.name} needs a class that {where} does not define ({_first_line(exc)})",
                          "Pass --repo with the clone (YOLOv5 or YOLOv7, same version) the checkpoint was trained with")
    if isinstance(exc, (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)) or (
            isinstance(exc, RuntimeError) and not _raised_in_repo(exc, repo)):
        return InputError(f"{path} could not be read as a PyTorch checkpoint ({_first_line(exc)})",
                          "The file may be truncated or not a .pt file")
    where = f" in {repo}" if repo else ""
    return InputError(f"importing the upstream code{where} failed while loading {path.name}: "
                      f"{type(exc).__name__}: {_first_line(exc)}",
                      "Check that the clone and its requirements are installed and match the checkpoint")


def _import_error(exc: ImportError, path: Path, repo: Path | None) -> InputError:
    missing = getattr(exc, "name", None) or ""
    top = missing.split(".")[0]
    if "torchvision" in str(exc) or top == "torchvision":
        return _torchvision_error(exc, repo)
    if repo is None and top in ("models", "utils"):
        return InputError(f"{path.name} pickles upstream classes and module '{missing}' could not be imported",
                          f"Pass --repo /path/to/your/yolov5-or-yolov7 clone (or set {ENV_REPO})")
    if repo is not None and top in ("models", "utils"):
        return InputError(f"module '{missing}' needed by {path.name} is not in --repo {repo}",
                          "Pass the clone (and version) the checkpoint was trained with")
    if top == ULTRALYTICS:
        return _ultralytics_missing(missing, path, repo)
    if _raised_in_package(exc, ULTRALYTICS):  # the ultralytics package is there but one of its dependencies is not
        return InputError(f"importing the ultralytics package ({_ultralytics_origin(repo)}) failed while loading "
                          f"{path.name}: {_first_line(exc)}",
                          "Install Ultralytics with its dependencies (pip install ultralytics)")
    where = f" while importing upstream code from {repo}" if repo else ""
    return InputError(f"importing '{missing or exc}' failed{where}: {_first_line(exc)}",
                      "Install the upstream repo's requirements (pip install -r requirements.txt)")


def _ultralytics_origin(repo: Path | None) -> str:
    return f"from --repo {repo}" if repo is not None and looks_like_ultralytics_root(repo) else "installed"


def _ultralytics_missing(missing: str, path: Path, repo: Path | None) -> InputError:
    """An Ultralytics checkpoint whose ``ultralytics`` modules cannot be imported: the package is missing, or
    it is another release (a module the checkpoint names is not in it)."""
    import importlib.util

    if repo is not None and looks_like_ultralytics_root(repo):
        return InputError(f"module '{missing}' needed by {path.name} is not in the ultralytics package of --repo {repo}",
                          "Use the Ultralytics release that wrote the checkpoint, or drop --repo to use the installed one")
    try:
        installed = importlib.util.find_spec(ULTRALYTICS) is not None
    except (ImportError, ValueError):
        installed = False
    if not installed or missing == ULTRALYTICS:
        return InputError(f"{path.name} is an Ultralytics checkpoint (it pickles classes of the 'ultralytics' "
                          "package) and the ultralytics package is not installed",
                          "Install it: pip install ultralytics (trtqat needs it only to read such checkpoints)")
    return InputError(f"{path.name} needs module '{missing}', which the installed ultralytics package does not have",
                      "Install the Ultralytics release that wrote the checkpoint (pip install -U ultralytics)")


def _torchvision_error(exc: BaseException, repo: Path | None) -> InputError:
    where = f"the upstream code in {repo}" if repo else "the checkpoint's code"
    return InputError(f"{where} imports torchvision, which failed to import ({_first_line(exc)})",
                      "Install a torchvision build matching your torch (pip install torchvision==<match>); "
                      "trtqat itself does not need it")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet():
    """Upstream modules print banners on import; keep stdout clean for --json."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def extract_module(obj: Any, path: Path) -> tuple[Any, str | None]:
    """The nn.Module inside an upstream checkpoint dict (``ema`` preferred, then ``model``) or a bare one."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj, None
    if isinstance(obj, dict):
        for key in MODULE_KEYS:
            if isinstance(obj.get(key), torch.nn.Module):
                return obj[key], key
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise InputError(f"{path} holds no model module (keys: {keys})",
                         "Pass a checkpoint written by train.py (with an 'ema' or 'model' entry) or by trtqat")
    raise InputError(f"{path} holds a {type(obj).__name__}, not a model",
                     "Pass a checkpoint written by train.py or by trtqat")


def load_checkpoint(path: str | Path, repo: str | Path | None = None) -> LoadedModel:
    """Load a YOLOv5/YOLOv7 or Ultralytics checkpoint as a float32 eval-mode module with its family.

    Security: runs ``torch.load(weights_only=False)`` — only for files the user passed explicitly.

    Raises:
        InputError: unreadable file, classes that cannot be imported, or a model whose detect head trtqat
            does not know (:func:`~trtqat.models.family.check_supported`: never quantized as another family).
    """
    path = Path(path)
    obj, repo_path = torch_load(path, repo)
    module, key = extract_module(obj, path)
    module = module.float().eval()
    family = detect_family(module)
    check_supported(family, str(path))
    note = modelopt_note(obj)
    if note:
        log.warning("%s: %s", path, note)
    return LoadedModel(model=module, family=family, path=path, repo=repo_path, source_key=key,
                       extra=obj.get("trtqat", {}) if isinstance(obj, dict) else {}, notes=[note] if note else [])
