"""Where upstream classes come from: the user's YOLOv5/YOLOv7 clone, put on ``sys.path`` for unpickling.

Why: a checkpoint written by upstream ``train.py`` pickles whole modules (``models.yolo.Model``,
``models.common.Conv`` ...). Unpickling imports those classes, so the user's clone must be importable
as the top-level packages ``models`` and ``utils``. Two clones (a YOLOv5 and a YOLOv7) both provide a
package called ``models``; switching between them in one process needs the stale modules dropped first.

Ultralytics checkpoints (YOLOv8/YOLO11/YOLO26) pickle classes of the installed ``ultralytics`` package
(``ultralytics.nn.tasks.DetectionModel``): they need no ``--repo``. ``--repo`` may still name a folder that
*contains* an ``ultralytics/`` package (a source checkout of Ultralytics, or trtqat's test fixture written
by :func:`trtqat.demo.fixtures.write_repo`); it is then imported instead of the installed one. ``--repo``
naming the ``ultralytics`` package folder itself is refused with a line saying that no ``--repo`` is needed.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

from ..errors import InputError

ENV_REPO = "TRTQAT_REPO"
_TOP_LEVEL = ("models", "utils")
ULTRALYTICS = "ultralytics"


def looks_like_yolo_repo(path: Path) -> bool:
    """A YOLOv5/YOLOv7 clone has ``models/yolo.py`` and ``models/common.py``."""
    return (path / "models" / "yolo.py").is_file() and (path / "models" / "common.py").is_file()


def looks_like_ultralytics_root(path: Path) -> bool:
    """A folder containing an ``ultralytics`` package (``ultralytics/nn/tasks.py``): a source checkout of
    Ultralytics, or trtqat's fixture package."""
    return (path / ULTRALYTICS / "nn" / "tasks.py").is_file()


def is_ultralytics_package(path: Path) -> bool:
    """The ``ultralytics`` package folder itself (``site-packages/ultralytics``)."""
    return (path / "__init__.py").is_file() and (path / "nn" / "tasks.py").is_file()


def resolve_repo(repo: str | os.PathLike | None) -> Path | None:
    """The clone to import upstream classes from: ``--repo``, else ``$TRTQAT_REPO``, else the cwd if it
    looks like a YOLO repo, else None (the checkpoint may not need one)."""
    if repo is None and os.environ.get(ENV_REPO):
        repo = os.environ[ENV_REPO]
        origin = f"${ENV_REPO}"
    else:
        origin = "--repo"
    if repo is not None:
        path = Path(repo).expanduser().resolve()
        if not path.is_dir():
            raise InputError(f"{origin} folder not found: {path}",
                             "Pass the folder of your YOLOv5/YOLOv7 clone (the one containing models/yolo.py)")
        if is_ultralytics_package(path) and not looks_like_yolo_repo(path):
            raise InputError(f"{origin} {path} is the ultralytics package itself, and Ultralytics checkpoints "
                             "(YOLOv8/YOLO11/YOLO26) need no --repo: trtqat imports the installed ultralytics package",
                             f"Drop {origin} (or pass the folder that contains ultralytics/, e.g. a source checkout)")
        if not looks_like_yolo_repo(path) and not looks_like_ultralytics_root(path):
            raise InputError(f"{origin} {path} does not look like a YOLOv5/YOLOv7 clone (no models/yolo.py) nor "
                             "like a folder holding an ultralytics/ package",
                             "Pass the root folder of the clone the checkpoint was trained with; Ultralytics "
                             "checkpoints (YOLOv8/YOLO11/YOLO26) need no --repo")
        return path
    cwd = Path.cwd()
    return cwd if looks_like_yolo_repo(cwd) else None


def _module_root(mod) -> Path | None:
    file = getattr(mod, "__file__", None)
    if file is None:
        paths = list(getattr(mod, "__path__", []) or [])
        file = paths[0] + "/__init__.py" if paths else None
    if file is None:
        return None
    parts = Path(file).resolve().parts
    name = mod.__name__.split(".")[0]
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == name:
            return Path(*parts[:i])
    return None


def purge_foreign_modules(repo: Path | None) -> None:
    """Drop already-imported ``models``/``utils`` packages that do not come from ``repo`` (and an imported
    ``ultralytics`` of another origin when ``repo`` holds its own ``ultralytics/`` package)."""
    tops = _TOP_LEVEL + ((ULTRALYTICS,) if repo is not None and looks_like_ultralytics_root(repo) else ())
    for name in list(sys.modules):
        top = name.split(".")[0]
        if top not in tops:
            continue
        root = _module_root(sys.modules[name]) if sys.modules[name] is not None else None
        if repo is None or root is None or root != repo:
            del sys.modules[name]


@contextlib.contextmanager
def upstream_on_path(repo: Path | None) -> Iterator[None]:
    """Make ``repo`` importable first while unpickling; leave the imported modules loaded afterwards
    (the returned model's methods need them) but restore ``sys.path``."""
    if repo is None:
        yield
        return
    purge_foreign_modules(repo)
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))
