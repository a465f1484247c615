"""The wheel a user installs works on its own: ``pip install trtqat`` (no extra) into a fresh venv, then the demo.

Builds the wheel from a copy of the sources (nothing is written into the checkout), creates a venv without the
system site-packages, installs torch 2.13.0 first (the CPU wheel; pip would otherwise pick a CUDA build) and the
wheel with its declared dependencies only, checks that no optional package came along (matplotlib, onnxslim,
tensorrt, pycuda, modelopt), and runs ``trtqat demo --no-qat`` (quantize, export, lint, a dry-run build, eval)
from an empty folder. A dependency that trtqat imports but pyproject.toml does not declare fails here.

Needs the package registry (as any ``pip install`` does; pip's cache makes later runs fast). 80-130 s on 2 cores
with a warm pip cache, depending on their load (wheel 1-2 s, venv and installs 35-45 s, demo 45-85 s): in the
default suite. The venv (~1.5 GB with torch) is removed at the end.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"
OPTIONAL = ("matplotlib", "onnxslim", "tensorrt", "pycuda", "modelopt")


def _run(cmd, *, timeout: int, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PIP_USER")}
    env["PIP_NO_INPUT"] = "1"
    return env


@pytest.fixture
def venv_dir(tmp_path):
    path = tmp_path / "venv"
    yield path
    shutil.rmtree(path, ignore_errors=True)  # torch alone is ~1 GB; pytest keeps the last three tmp folders


def test_wheel_without_extras_runs_the_demo(tmp_path, venv_dir):
    times: dict[str, float] = {}
    env = _clean_env()

    t = time.perf_counter()
    src = tmp_path / "src"  # a copy: building in the checkout would write build/ and *.egg-info there
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "trtqat", src / "trtqat", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist, src],
         timeout=300, env=env)
    (wheel,) = dist.glob("trtqat-*.whl")
    times["wheel"] = time.perf_counter() - t

    t = time.perf_counter()
    venv = venv_dir
    _run([sys.executable, "-m", "venv", venv], timeout=300, env=env)
    py = venv / "bin" / "python"
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run([py, "-m", "pip", "install", TORCH], timeout=900, env=env)
    _run([py, "-m", "pip", "install", wheel], timeout=900, env=env)  # no extra: the dependencies only
    times["install"] = time.perf_counter() - t

    probe = ("import importlib.util, sys; "
             f"print(' '.join(m for m in {OPTIONAL!r} if importlib.util.find_spec(m) is not None)); "
             "import trtqat, PIL, pycocotools; print(trtqat.__file__)")
    empty = tmp_path / "empty"  # cwd of everything run in the venv: the checkout must not be importable
    empty.mkdir()
    out = _run([py, "-c", probe], cwd=empty, timeout=120, env=env).stdout.splitlines()
    assert out[0] == "", f"optional packages came with the plain install: {out[0]}"
    assert Path(out[1]).resolve().is_relative_to(venv.resolve()), out[1]  # the installed wheel, not the checkout

    t = time.perf_counter()
    demo = _run([venv / "bin" / "trtqat", "demo", "--no-qat", "--size", "96", "--images", "4", "--val-images", "8",
                 "--out", tmp_path / "demo"], cwd=empty, timeout=1200, env=env)
    times["demo"] = time.perf_counter() - t
    verdict = [line for line in (demo.stdout + demo.stderr).splitlines() if line.startswith("verdict:")]
    assert verdict, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert list(empty.iterdir()) == []  # --out took everything
    print("\nwheel install test: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"\n{verdict[0]}")
