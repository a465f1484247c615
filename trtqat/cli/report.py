"""``trtqat report``: what TensorRT did with an engine's layers (precisions, reformats, unfused Q/DQ)."""

from __future__ import annotations

import click

from .options import profile_option
from .output import emit_json, print_table, say


def _pct(value):
    return None if value is None else f"{100 * value:.1f}%"


def _us(ms):
    return None if ms is None else f"{ms * 1000:.1f}"


@click.command(name="report")
@click.argument("source", type=click.Path(dir_okay=False))
@profile_option
@click.option("--top", type=int, default=10, show_default=True, help="Slowest layers to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def report(source, profile, top, as_json):
    """Report on SOURCE: an engine (reads ENGINE.graph.json/.profile.json) or the layer-info JSON.

    Shows the layer count, the precision mix by layers and time, Reformat layers split by origin
    (QDQ: a Q/DQ TensorRT could not fuse; REFORMAT: a layout copy) with their cost and tensors, INT8
    convolutions with float outputs, and the slowest layers. TensorRT 8.2 shows a standalone Quantize
    as a Scale layer: it is counted and listed as QDQ ("QDQ (Scale)"); a Quantize TensorRT split
    across a Concat's inputs (<name>_clone_N) counts once per copy.

    JSON (--json): {"name", "layers", "layer_types", "total_time_ms", "precision_mix": [...],
    "int8_share": {"layers", "time"}, "reformat_counts": {"total", "qdq", "layout", "other"},
    "reformat_time_ms", "reformat_time_share", "reformats": [{"name", "origin", "kind", "onnx_nodes",
    "input", "output", "input_precision", "output_precision", "time_ms", "layer_type"}], "qdq_unfused": [names],
    "int8_convs_with_float_output": [...], "top_layers": [...]}.
    """
    from ..trt.plan import EnginePlan, resolve_plan_files
    from ..trt.report import make_report

    graph, prof = resolve_plan_files(source, profile)
    rep = make_report(EnginePlan.from_files(graph, prof), top=top)
    if as_json:
        emit_json(rep.to_dict())
        return
    counts = rep.reformat_counts
    timing = (
        f", {rep.total_time_ms:.4g} ms summed layer time"
        if rep.total_time_ms is not None
        else " (no profile: times unavailable)"
    )
    say(
        f"{rep.name}: {rep.layer_count} layers{timing}; {counts['qdq']} standalone Q/DQ (unfused), "
        f"{counts['layout']} layout reformats"
    )
    print_table(
        "Precision mix (a layer's precision is what its kernel reads)",
        ["precision", "layers", "share", "time (us)", "time share"],
        [
            [
                p.precision,
                p.layers,
                _pct(p.layers / max(rep.layer_count, 1)),
                _us(p.time_ms),
                _pct(p.time_share),
            ]
            for p in rep.precision_mix
        ],
        justify=["left", "right", "right", "right", "right"],
    )
    if rep.reformats:
        print_table(
            "Reformat layers",
            ["layer", "origin", "kind", "converts", "tensors", "time (us)"],
            [
                [
                    r.name,
                    r.origin if r.layer_type == "Reformat" else f"{r.origin} ({r.layer_type})",
                    r.kind,
                    f"{r.input_precision}->{r.output_precision}",
                    f"{r.input_tensor} -> {r.output_tensor}",
                    _us(r.time_ms),
                ]
                for r in rep.reformats
            ],
        )
    if rep.int8_float_out:
        print_table(
            "INT8 convolutions with float output (free at a head; elsewhere the next Q is standalone)",
            ["layer", "output", "time (us)"],
            [[x.name, x.output_precision, _us(x.time_ms)] for x in rep.int8_float_out],
        )
    if rep.top_layers:
        print_table(
            f"Top {len(rep.top_layers)} layers by time",
            ["layer", "type", "precision", "time (us)", "share"],
            [[x.name, x.type, x.precision, _us(x.time_ms), _pct(x.time_share)] for x in rep.top_layers],
        )
