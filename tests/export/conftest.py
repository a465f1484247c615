"""Fixtures for ``trtqat export`` tests: PTQ checkpoints and exports, built once per session.

Sizes are small (160 px; stride 32) to keep the area under a minute on 2 cores. Checkpoints are unpickled
in this process: :func:`restore_upstream_modules` puts ``sys.modules`` back after each test, because the
two fake repos both provide a top-level ``models`` package.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_helpers import SIZE, run_cli
from upstream_modules import restore, restore_upstream_modules, upstream_modules  # noqa: F401 (autouse)


@pytest.fixture(scope="session")
def ptq_checkpoint(yolo_checkpoint, calib_images, tmp_path_factory):
    """Factory ``family -> (ptq.pt, repo)``: a PTQ checkpoint (max calibration on 2 images), cached.

    Built with the family ignore policy but without the scale-sharing rules (``--no-rules``): the rules
    may convert float detect convs (the fan-out rule), and these tests pin the export of the default
    ignore placement (detect convs float). Shared scales are tested with hand-shared quantizers.
    """
    from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq

    root = tmp_path_factory.mktemp("ptq")
    cache: dict[str, tuple[Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path]:
        if family not in cache:
            before = upstream_modules()
            ckpt, repo = yolo_checkpoint(family)
            out = root / f"{family}_ptq.pt"
            run_ptq(ckpt, repo=repo, out=out, qconf=QuantConfig(use_rules=False),
                    calib=CalibConfig(calib_dir=calib_images, size=SIZE, batch_size=2, calib_batches=1, method="max"))
            restore(before)
            cache[family] = (out, repo)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def cli_export(ptq_checkpoint, tmp_path_factory):
    """Factory ``(family, *flags) -> (summary dict, onnx.ModelProto)`` running ``trtqat export --json``, cached."""
    root = tmp_path_factory.mktemp("onnx")
    cache: dict[tuple, tuple[dict, onnx.ModelProto]] = {}

    def get(family: str, *flags: str):
        key = (family, *flags)
        if key not in cache:
            before = upstream_modules()
            ckpt, repo = ptq_checkpoint(family)
            save = root / f"{family}_{len(cache)}.onnx"
            res = run_cli("export", ckpt, "--repo", repo, "--size", SIZE, "--save", save, "--json", *flags)
            restore(before)
            assert res.exit_code == 0, res.output + (res.stderr or "")
            cache[key] = (json.loads(res.stdout), onnx.load(str(save)))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def trained_ptq(trained_checkpoint, request, tmp_path_factory):
    """Factory ``family -> (ptq.pt, repo, calib_dir)``: PTQ of the committed trained detector (default rules,
    MSE, 16 shapes images at 320), cached; the calibration folder doubles as verification input (objects
    in view, unlike seeded noise). Skips when the trained fixture is not committed yet."""
    from trtqat.demo.trained import trained_path
    from trtqat.quant.ptq import CalibConfig, run_ptq

    root = tmp_path_factory.mktemp("trained_ptq")
    cache: dict[str, tuple[Path, Path, Path]] = {}

    def get(family: str) -> tuple[Path, Path, Path]:
        if not trained_path(family).is_file():
            pytest.skip(f"trained {family} fixture not committed ({trained_path(family)}; make fixtures)")
        if family not in cache:
            shapes_val = request.getfixturevalue("shapes_val")  # generated only when a test needs it
            before = upstream_modules()
            ckpt, repo = trained_checkpoint(family)
            out = root / f"{family}_ptq.pt"
            run_ptq(ckpt, repo=repo, out=out,
                    calib=CalibConfig(calib_dir=shapes_val.val_images, size=320, batch_size=8, calib_batches=2))
            restore(before)
            cache[family] = (out, repo, shapes_val.val_images)
        return cache[family]

    return get
