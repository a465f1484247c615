"""Layer boundaries (Polygraphy's test_dependencies idea): light modules must not drag heavy ones in.

``trtqat --help``, the ONNX analysis and the trtexec driver have to work on machines without torch,
TensorRT or a display; torchvision must never be imported at module load (it is broken on CPU-only torch).
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trtqat.cli import COMMANDS

HEAVY = {"torch", "torchvision", "pytorch_quantization", "tensorrt", "pycuda", "matplotlib", "pandas"}
NEVER_AT_LOAD = {"torchvision", "tensorrt", "pycuda"}


def imported_modules(code: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize("module", ["trtqat", "trtqat.graph.lint", "trtqat.graph.scale_groups", "trtqat.graph.policy",
                                    "trtqat.trt.plan", "trtqat.trt.trtexec", "trtqat.trt.report", "trtqat.cli",
                                    "trtqat.calib.amax", "trtqat.calib.histogram", "trtqat.calib.ort_collect",
                                    "trtqat.optimize", "trtqat.graph.retie", "trtqat.graph.insert_qdq",
                                    "trtqat.graph.normalize_qdq", "trtqat.graph.strip_qdq",
                                    "trtqat.graph.family_detect", "trtqat.graph.float_head",
                                    "trtqat.cli.optimize"])
def test_light_modules_import_no_heavy_dependency(module):
    assert not imported_modules(f"import {module}") & HEAVY


def test_help_imports_nothing_heavy():
    mods = imported_modules("from trtqat.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert not mods & HEAVY


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_works_without_tensorrt_or_torchvision(command):
    code = (f"from trtqat.cli import main\ntry:\n    main([{command!r}, '--help'])\nexcept SystemExit as e:\n"
            f"    assert e.code == 0, e.code")
    mods = imported_modules(code)
    assert not mods & NEVER_AT_LOAD


@pytest.mark.parametrize("module", ["trtqat.quant.ptq", "trtqat.quant.export", "trtqat.quant.qat",
                                    "trtqat.eval.evaluate", "trtqat.models.checkpoint", "trtqat.demo.pipeline"])
def test_torch_side_never_imports_torchvision_or_tensorrt(module):
    assert not imported_modules(f"import {module}") & NEVER_AT_LOAD


def test_help_mentions_pickle_warning():
    from click.testing import CliRunner

    from trtqat.cli import main

    for args in (["--help"], ["quantize", "--help"]):
        out = CliRunner().invoke(main, args).output
        assert "pickle" in out.lower()


def _quant_imports() -> dict[str, set[str]]:
    """quant module -> the quant modules it imports, lazy (function-level) imports included."""
    root = Path(__file__).resolve().parents[1] / "trtqat" / "quant"
    out: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                deps.add(node.module.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trtqat.quant."):
                deps.add(node.module.split(".")[2])
        out[path.stem] = deps
    return out


def test_quant_modules_import_no_circle():
    """ptq <-> share was a circle (ptq applied the rules, share's report prepared a PTQ model): none may return."""
    graph = _quant_imports()
    assert "ptq" in graph["rules_report"] and "share" in graph["rules_report"]

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen))
                   for d in graph.get(start, ()))

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert circles == [], circles
