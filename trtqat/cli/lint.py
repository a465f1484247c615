"""``trtqat lint``: predict from the ONNX alone how TensorRT will process its Q/DQ nodes."""
from __future__ import annotations

import click

from .output import emit_json, print_table, say


@click.command(name="lint")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--max-reformats", type=click.IntRange(min=0), default=None,
              help="Exit 1 when more Q/DQ than this are predicted to stay standalone (CI gate).")
@click.option("--engine-layers", type=click.Path(dir_okay=False), default=None,
              help="trtexec --exportLayerInfo JSON of an engine built from MODEL: show where it disagrees.")
@click.option("--trt-version", type=click.Choice(["8.6", "10", "11"]), default="10", show_default=True,
              help="TensorRT version whose Q/DQ behaviour to simulate.")
@click.option("--all-layers", is_flag=True, help="List every compute layer, not only the float ones.")
def lint(model: str, as_json: bool, max_reformats: int | None, engine_layers: str | None,
         trt_version: str, all_layers: bool) -> None:
    """Predict how TensorRT will process the Q/DQ nodes of MODEL (no GPU needed).

    \b
    JSON (--json):
      summary   standalone_qdq (Q/DQ predicted to run as Reformat layers, network-input Q included),
                standalone_q, standalone_dq, compute_layers, int8_layers, int8_share (by count),
                int8_share_macs, macs, precision_boundaries, trt_version, float_precision
      layers    [{name, op, precision: INT8|float, output: INT8|float, fused: [node names], kind,
                  macs, why_float}]
      standalone [{name, op, tensor, rule_id, reason, aliases: [merged Q names]}]
      findings  [{rule_id, severity, nodes, hazard, mitigation, help}]
      engine    (with --engine-layers) {engine_standalone_qdq, agree, predicted_only, engine_only,
                  engine_unknown, precision_agree, precision_disagree}
    Exit codes: 0 ok, 1 --max-reformats exceeded, 2 unreadable model or layer file.
    """
    from ..errors import LintFailure
    from ..graph.lint import lint_model
    from ..graph.qdq import DQ_OP, Q_OP, load_model

    onnx_model = load_model(model)
    report = lint_model(onnx_model, trt_version=trt_version, label=model)
    payload = report.to_dict()
    comparison = None
    if engine_layers:
        from ..graph.engine_compare import compare_with_engine, load_layer_info

        names = {n.name for n in onnx_model.graph.node if n.op_type in (Q_OP, DQ_OP)}
        comparison = compare_with_engine(report, load_layer_info(engine_layers), names)
        payload["engine"] = comparison.to_dict()
    if as_json:
        emit_json(payload)
    else:
        _print(report, comparison, all_layers)
    n = report.summary["standalone_qdq"]
    if max_reformats is not None and n > max_reformats:
        raise LintFailure(f"{n} standalone Q/DQ predicted in {model}, more than --max-reformats {max_reformats}",
                          "See the 'standalone Q/DQ' table for where and why")


def _print(report, comparison, all_layers: bool) -> None:
    s = report.summary
    rows = [(x.name, x.op, x.precision, x.output, len(x.fused), x.why_float)
            for x in report.layers if all_layers or x.precision != "INT8"]
    if rows:
        print_table("compute layers" + ("" if all_layers else " running in float"),
                    ["layer", "op", "precision", "writes", "fused", "why float"], rows)
    print_table("standalone Q/DQ (Reformat layers)", ["node", "op", "rule", "why"],
                [(x.name + (f" (+{len(x.aliases)} merged)" if x.aliases else ""), x.op, x.rule_id, x.reason)
                 for x in report.standalone])
    other = [f for f in report.findings if not f.rule_id.startswith("LINT00") or f.rule_id == "LINT008"]
    if other:
        print_table("other findings", ["rule", "severity", "node", "hazard", "mitigation"],
                    [(f.rule_id, f.severity, f.nodes[0], f.hazard, f.mitigation) for f in other])
    if comparison is not None:
        c = comparison
        print_table(f"engine comparison ({c.engine_standalone_qdq} standalone Q/DQ in the engine)",
                    ["result", "nodes"],
                    [("agree", ", ".join(c.agree)), ("predicted only", ", ".join(c.predicted_only)),
                     ("engine only", ", ".join(c.engine_only)),
                     ("engine Q/DQ not in ONNX", ", ".join(c.engine_unknown)),
                     ("precision agrees", str(len(c.precision_agree))),
                     ("precision differs", ", ".join(f"{a}: predicted {b}, engine {e}"
                                                      for a, b, e in c.precision_disagree))])
    say(f"TensorRT {s['trt_version']}: {s['standalone_qdq']} standalone Q/DQ, "
        f"INT8 {s['int8_layers']}/{s['compute_layers']} compute layers ({s['int8_share']:.0%}, "
        f"{s['int8_share_macs']:.0%} of MACs), {s['precision_boundaries']} precision boundaries; "
        f"float layers run in {s['float_precision']}.")
