"""``trtqat draw``: the engine graph as SVG/PNG, coloured by precision, reformats highlighted."""

from __future__ import annotations

import click

from .options import profile_option
from .output import say


@click.command(name="draw")
@click.argument("layers", type=click.Path(dir_okay=False))
@profile_option
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Output .svg (no dependencies) or .png (matplotlib). Default: LAYERS with .svg.",
)
def draw(layers, profile, out):
    """Draw LAYERS (the --exportLayerInfo JSON, or an engine with ENGINE.graph.json beside it).

    Boxes are engine layers in dependency rows, filled by the precision they read (INT8 green, FP16
    blue, FP32 orange); Reformat layers have a red (unfused Q/DQ) or orange (layout) border. Edges are
    coloured by the precision of the tensor they carry. Hover a box in the SVG for the full name.
    """
    from pathlib import Path

    from ..trt.draw import draw as draw_plan
    from ..trt.plan import EnginePlan, resolve_plan_files

    graph, prof = resolve_plan_files(layers, profile)
    plan = EnginePlan.from_files(graph, prof)
    out = out or str(Path(layers).with_name(Path(layers).name.removesuffix(".json") + ".svg"))
    draw_plan(plan, out)
    say(f"Wrote {out} ({len(plan.layers)} layers, {len(plan.reformats)} reformats)")
