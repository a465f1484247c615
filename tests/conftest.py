"""Session-wide pytest fixtures shared by every test area.

The YOLO-shaped checkpoints are built once per session (each build is a child Python, ~1.5 s) by
:mod:`trtqat.demo.fixtures`, which writes a scratch fake ``models``/``utils`` repo beside them. Tests that
unpickle a checkpoint should do it in a subprocess, or restore ``sys.modules``: the fake repos of the
two families both provide a top-level ``models`` package.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from trtqat.demo import fixtures as demo_fixtures


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip, saying so, where torch sees no CUDA device (``make test`` deselects them anyway;
    ``-m gpu`` on a CPU machine lists them as skipped with this reason)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    # a skipif of the item itself is evaluated before the module's own (e.g. tests/gpu's "needs CUDA")
    skip = pytest.mark.skipif(True, reason="needs a GPU (CUDA; torch sees none here): run make test-gpu on a machine with one")
    for item in gpu_items:
        item.add_marker(skip, append=False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The root of the trtqat checkout (where pyproject.toml lives)."""
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def trtexec_fixtures(repo_root: Path) -> Path:
    """``tests/fixtures/trtexec``: real trtexec outputs and engine layer dumps (Apache-2.0, NVIDIA; provenance
    and checksums in SOURCES.md there). Part of the repository: never skipped."""
    return repo_root / "tests" / "fixtures" / "trtexec"


@pytest.fixture(scope="session")
def yolo_checkpoint(tmp_path_factory):
    """Factory ``(family, form="ema", **kw) -> (checkpoint_path, repo_dir)``, cached for the session.

    ``family`` is ``"yolov5"`` or ``"yolov7"``; ``form`` and ``kw`` (``half``, ``nc``, ``width``, ``seed``)
    are those of :func:`trtqat.demo.fixtures.make_checkpoint`. All checkpoints of one family share one
    fake repo. Do not modify the returned files; copy them first.
    """
    root = tmp_path_factory.mktemp("yolo_ckpt")
    cache: dict[tuple, tuple[Path, Path]] = {}

    def get(family: str, form: str = "ema", **kw) -> tuple[Path, Path]:
        key = (family, form, tuple(sorted(kw.items())))
        if key not in cache:
            repo = root / f"repo_{family}"
            if not repo.is_dir():
                demo_fixtures.write_repo(family, repo)
            cache[key] = demo_fixtures.make_checkpoint(
                family, root, form=form, repo_dir=repo, name=f"{family}_{form}_{len(cache)}.pt", **kw)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def calib_images(tmp_path_factory) -> Path:
    """A folder ``.../images`` of 8 synthetic jpg/png images of mixed sizes, with YOLO labels in the
    sibling ``labels/`` folder. Read-only: copy it before adding files."""
    folder = tmp_path_factory.mktemp("calib") / "images"
    demo_fixtures.make_images(folder, n=8, labels=True)
    return folder


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """Factory ``family -> (checkpoint_path, repo_dir)`` for the committed trained detectors
    (:mod:`trtqat.demo.trained`); nc=8 shape classes, trained at 320. Read-only."""
    from trtqat.demo import trained

    root = tmp_path_factory.mktemp("trained")
    return lambda family: trained.trained_checkpoint(family, root / f"repo_{family}")


@pytest.fixture(scope="session")
def shapes_val(tmp_path_factory):
    """The generated shapes dataset (:mod:`trtqat.demo.shapes`) with a 64-image held-out val split
    (seed 0, the split the trained fixtures never saw) and 32 train images; ``.val_images``,
    ``.val_json``, ``.train_images``."""
    from trtqat.demo import shapes

    return shapes.write_dataset(tmp_path_factory.mktemp("shapes"), train=32, val=64, seed=0)
