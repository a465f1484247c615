"""What ``pip install trtqat`` brings is what trtqat imports; a missing optional package is one line naming its extra.

The static audit reads every ``import`` in trtqat/ (the fake upstream repos of the demo excepted) and checks
each third-party top-level module against pyproject.toml: a dependency of the plain install, or one of the
optional packages that trtqat reaches only through :func:`trtqat._deps.require` inside a function (never at
module level), with an extra in ``[project.optional-dependencies]`` that installs it.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

if sys.version_info >= (3, 11):
    import tomllib
else:  # the dev extra installs tomli there
    import tomli as tomllib

from trtqat import _deps
from trtqat.cli import main
from trtqat.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "trtqat"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

#: import name -> distribution name, where they differ
DIST = {"PIL": "pillow", "yaml": "pyyaml", "onnx_graphsurgeon": "onnx-graphsurgeon",
        "pytorch_quantization": "pytorch-quantization", "modelopt": "nvidia-modelopt"}
#: imported, but neither a dependency nor an extra, each for its reason
NOT_DECLARED = {
    "torchvision": "used for NMS only when it imports (trtqat.eval.nms has an exact fallback); upstream repos need it",
    "absl": "a dependency of pytorch-quantization, quieted when present (trtqat.quant._compat)",
    "ultralytics": "AGPL, never a dependency: only `make fixtures` imports it, the scratch package it writes (train_fixtures)",
}
#: the optional packages and their extras: the only ones a plain install may lack
OPTIONAL = {"tensorrt": "tensorrt", "pycuda": "tensorrt", "matplotlib": "plot", "onnxslim": "simplify",
            "modelopt": "peers"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _imports() -> dict[str, list[tuple[str, bool]]]:
    """top-level module -> [(file:line, imported at module level)] for every import in trtqat/."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[:3] == ("trtqat", "demo", "repos"):
            continue  # the fake upstream repos (their `models`/`utils` are theirs)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append((f"{rel}:{node.lineno}", id(node) in top_level))
    return found


def _third_party(found):
    local = {"trtqat", "models", "utils", "__future__"}  # models/utils: the user's upstream repo on sys.path
    return {m: where for m, where in found.items() if m not in sys.stdlib_module_names and m not in local}


def test_every_third_party_import_is_declared():
    deps = {_name(r) for r in PYPROJECT["dependencies"]}
    extras = {extra: {_name(r) for r in reqs} for extra, reqs in PYPROJECT["optional-dependencies"].items()}
    undeclared = {}
    for module, where in _third_party(_imports()).items():
        dist = DIST.get(module, module).lower()
        if module in OPTIONAL:
            assert dist in extras[OPTIONAL[module]], f"{module} is not in the [{OPTIONAL[module]}] extra"
        elif dist not in deps and module not in NOT_DECLARED:
            undeclared[module] = [w for w, _ in where]
    assert not undeclared, f"imported by trtqat but not a dependency in pyproject.toml: {undeclared}"


def test_ultralytics_is_imported_only_to_train_the_scratch_fixture():
    """Ultralytics checkpoints import the package by unpickling; trtqat's own code names it in one place only."""
    files = {w.split(":")[0] for w, _ in _imports().get("ultralytics", [])}
    assert files <= {"trtqat/demo/train_fixtures.py"}, files


def test_optional_packages_are_imported_lazily():
    eager = {m: [w for w, top in where if top] for m, where in _third_party(_imports()).items()
             if m in OPTIONAL or m in NOT_DECLARED}
    assert not any(eager.values()), f"optional packages imported at module level: {eager}"


def test_plain_install_covers_demo_eval_and_images():
    deps = {_name(r) for r in PYPROJECT["dependencies"]}
    assert {"pillow", "pycocotools", "torch", "onnx", "onnxruntime", "onnx-graphsurgeon"} <= deps
    assert not deps & {"matplotlib", "onnxslim", "tensorrt", "pycuda", "nvidia-modelopt"}


@pytest.mark.parametrize("module, extra", sorted(OPTIONAL.items()))
def test_missing_optional_package_is_one_line_naming_its_extra(monkeypatch, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # what an environment without it gives
    with pytest.raises(InputError) as info:
        _deps.require(module, purpose="the thing")
    err = info.value
    assert err.exit_code == 2
    line = err.one_line()
    assert "\n" not in line
    assert line.startswith(f"'{module}' is required for the thing but is not installed.")
    assert f"Install the {extra} extra: pip install 'trtqat[{extra}]'" in line


def test_submodule_of_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot", raising=False)  # imported by an earlier test
    with pytest.raises(InputError) as info:
        _deps.require("matplotlib.pyplot", purpose="x")
    assert info.value.one_line() == ("'matplotlib' is required for x but is not installed. "
                                     "Install the plot extra: pip install 'trtqat[plot]'.")


def test_broken_optional_package_shows_why(monkeypatch, tmp_path):
    (tmp_path / "onnxslim").mkdir()
    (tmp_path / "onnxslim" / "__init__.py").write_text("import trtqat_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "onnxslim", raising=False)
    with pytest.raises(InputError) as info:
        _deps.require("onnxslim", purpose="--simplify")
    line = info.value.one_line()
    assert "could not be imported (No module named 'trtqat_no_such_dependency_xyz')" in line
    assert "Install the simplify extra" in line


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_export_simplify_without_onnxslim_fails_before_tracing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxslim", None)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not read: the check comes first")
    r = CliRunner().invoke(main, ["export", str(ckpt), "--simplify", "--save", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2, r.output
    assert _error_lines(r) == ["Error: 'onnxslim' is required for --simplify but is not installed. "
                               "Install the simplify extra: pip install 'trtqat[simplify]'."]
    assert not (tmp_path / "m.onnx").exists()


def test_sensitive_plot_without_matplotlib_fails_before_calibrating(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not read: the check comes first")
    r = CliRunner().invoke(main, ["sensitive", str(ckpt), "--calib", str(tmp_path), "--plot", str(tmp_path / "s.png")])
    assert r.exit_code == 2, r.output
    assert _error_lines(r) == ["Error: 'matplotlib' is required for the sensitivity bar chart (--plot) but is not "
                               "installed. Install the plot extra: pip install 'trtqat[plot]'."]
