"""draw/compare without matplotlib (the ``plot`` extra): SVG needs nothing, PNG is one ``Error:`` line, exit 2."""

from __future__ import annotations

import sys

from click.testing import CliRunner
from trt_fixtures import CONVONLY_GRAPH, RESIDUAL_GRAPH

from trtqat.cli import main

PLOT_LINE = "Install the plot extra: pip install 'trtqat[plot]'."


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_draw_png_without_matplotlib_is_one_line(fixtures, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    svg = tmp_path / "e.svg"
    r = invoke("draw", fixtures / RESIDUAL_GRAPH, "-o", svg)
    assert r.exit_code == 0 and svg.read_text().startswith("<svg")
    png = tmp_path / "e.png"
    r = invoke("draw", fixtures / RESIDUAL_GRAPH, "-o", png)
    assert r.exit_code == 2 and not png.exists()
    errors = [line for line in _lines(r) if line.startswith("Error:")]
    assert errors == [f"Error: 'matplotlib' is required for PNG engine drawings (use -o file.svg to avoid it) but is "
                      f"not installed. {PLOT_LINE}"]


def test_compare_plot_without_matplotlib_is_one_line(fixtures, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    plot = tmp_path / "cmp.png"
    r = invoke("compare", fixtures / CONVONLY_GRAPH, fixtures / RESIDUAL_GRAPH, "--plot", plot)
    assert r.exit_code == 2 and not plot.exists()
    assert _lines(r) == [f"Error: 'matplotlib' is required for the compare bar chart (--plot) but is not installed. "
                         f"{PLOT_LINE}"]
