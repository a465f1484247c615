"""``trtqat compare``: several engines in one table, a bar chart, and a per-layer diff for two."""

from __future__ import annotations

import click

from .output import emit_json, print_table, say


def _pct(value):
    return None if value is None else f"{100 * value:.1f}%"


@click.command(name="compare")
@click.argument("engines", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a bar chart (PNG/SVG).")
@click.option(
    "--top", type=int, default=10, show_default=True, help="Layers with the largest time change (2 engines)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
def compare(engines, plot, top, as_json):
    """Compare ENGINES (e.g. fp16, TensorRT PTQ, QAT without rules, QAT with rules).

    Each ENGINE contributes its stored benchmark (ENGINE.bench.json from trtqat bench) and its layer
    info (ENGINE.graph.json from trtqat build); a layer-info JSON may be given instead of an engine.
    With exactly two engines, also lists reformats only one of them has, ONNX nodes computed in a
    different precision, and the layers whose time changed most.

    JSON (--json): {"engines": [{"label", "qps", "images_per_s", "batch", "latency_median_ms",
    "gpu_median_ms", "layers", "reformats", "qdq_reformats", "layout_reformats", "int8_share_layers",
    "int8_share_time"}], "diff": {...} (two engines only)}.
    """
    from pathlib import Path

    from ..errors import InputError
    from ..trt.compare import diff_plans, engine_row, plot_rows
    from ..trt.engine import read_bench
    from ..trt.plan import EnginePlan

    plans, rows = [], []
    for item in engines:
        path = Path(item)
        if path.suffix == ".json":
            plan, bench = EnginePlan.from_files(path), None
        else:
            has_graph = path.with_name(path.name + ".graph.json").is_file()
            plan = EnginePlan.from_engine(path) if has_graph else None
            bench = read_bench(path)
            if plan is None and bench is None:
                raise InputError(
                    f"nothing to compare for {path}: no {path.name}.graph.json and no {path.name}.bench.json",
                    "Build it with trtqat build and time it with trtqat bench",
                )
        plans.append(plan)
        rows.append(engine_row(path.name, plan, bench))
    diff = None
    if len(engines) == 2 and all(plans):
        diff = diff_plans(plans[0], plans[1], label_a=rows[0].label, label_b=rows[1].label, top=top)
    if plot:
        plot_rows(rows, plot)
        say(f"Wrote {plot}")
    if as_json:
        emit_json({"engines": [r.to_dict() for r in rows], "diff": diff.to_dict() if diff else None})
        return
    print_table(
        "Engines",
        [
            "engine",
            "qps",
            "images/s",
            "batch",
            "latency median (ms)",
            "GPU median (ms)",
            "layers",
            "reformats (Q/DQ+layout)",
            "INT8 layers",
            "INT8 time",
        ],
        [
            [
                r.label,
                r.qps,
                r.images_per_s,
                r.batch,
                r.latency_median_ms,
                r.gpu_median_ms,
                r.layers,
                None if r.reformats is None else f"{r.reformats} ({r.qdq_reformats}+{r.layout_reformats})",
                _pct(r.int8_share_layers),
                _pct(r.int8_share_time),
            ]
            for r in rows
        ],
        justify=["left"] + ["right"] * 9,
    )
    if diff:
        _print_diff(diff)


def _print_diff(diff) -> None:
    rows = [[name, f"only in {diff.a}"] for name in diff.reformats_only_a]
    rows += [[name, f"only in {diff.b}"] for name in diff.reformats_only_b]
    if rows:
        print_table("Reformat layers present in one engine only", ["layer", "where"], rows)
    if diff.precision_changes:
        print_table(
            "ONNX nodes computed in a different precision",
            ["ONNX node", diff.a, diff.b],
            [list(c) for c in diff.precision_changes],
        )
    if diff.time_changes:
        print_table(
            "Largest per-layer time changes (same layer name)",
            ["layer", f"{diff.a} (us)", f"{diff.b} (us)"],
            [[n, f"{a * 1000:.1f}", f"{b * 1000:.1f}"] for n, a, b in diff.time_changes],
        )
    say(f"Layers only in {diff.a}: {diff.layers_only_a}; only in {diff.b}: {diff.layers_only_b}")
