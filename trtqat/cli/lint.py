"""``trtqat lint``: predict from the ONNX alone how TensorRT will process its Q/DQ nodes."""
from __future__ import annotations

import click

from .output import emit_json, print_table


@click.command(name="lint")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@click.option("--max-reformats", type=click.IntRange(min=0), default=None,
              help="Exit 1 when more Q/DQ than this are predicted to stay standalone (CI gate).")
@click.option("--engine-layers", type=click.Path(dir_okay=False), default=None,
              help="trtexec --exportLayerInfo JSON of an engine built from MODEL: show where it disagrees.")
@click.option("--trt-version", type=click.Choice(["8.6", "10", "11"]), default="10", show_default=True,
              help="TensorRT version whose Q/DQ behaviour to simulate.")
@click.option("--verbose", "-v", is_flag=True,
              help="Also list every standalone Q/DQ, float layer and finding, one row per node.")
@click.option("--all-layers", is_flag=True, help="Like --verbose, and list every compute layer (INT8 ones too).")
def lint(model: str, as_json: bool, max_reformats: int | None, engine_layers: str | None,
         trt_version: str, verbose: bool, all_layers: bool) -> None:
    """Predict how TensorRT will process the Q/DQ nodes of MODEL (no GPU needed).

    \b
    Output: the verdict line first (standalone Q/DQ, INT8 share, precision boundaries), then the
    standalone Q/DQ grouped by reason with counts; --verbose / --all-layers add the per-node tables.
    \b
    JSON (--json):
      summary   standalone_qdq (Q/DQ predicted to run as Reformat layers, network-input Q included),
                standalone_q, standalone_dq, standalone_by_rule {rule: count}, compute_layers,
                int8_layers, int8_share (by count), int8_share_macs, macs, precision_boundaries,
                trt_version, float_precision, refused (true: the parser would reject the model, no
                prediction; the counts are then null), refused_by, parse_errors [error-severity
                PARSE rule ids], float_model (true: no QuantizeLinear/DequantizeLinear at all),
                family (yolov5|yolov7|ultralytics|unknown), family_from (metadata|structure|null),
                version (ultralytics: v8|11|26; null when not told)
      layers    [{name, op, precision: INT8|float, output: INT8|float, fused: [node names], kind,
                  macs, why_float}]
      standalone [{name, op, tensor, rule_id, reason, aliases: [merged Q names]}]
      findings  [{rule_id, severity, nodes, hazard, mitigation, help}]
      engine    (with --engine-layers) {engine_standalone_qdq, agree, predicted_only, engine_only,
                  engine_unknown, precision_agree, precision_disagree}
    Exit codes: 0 ok, 1 after the report when a PARSE finding of severity error says TensorRT's
    parser would reject or mis-build the model (no prediction at all for PARSE010/PARSE011), or
    --max-reformats is exceeded; 2 unreadable model or layer file.
    """
    from ..errors import LintFailure
    from ..graph.lint import lint_model
    from ..graph.qdq import DQ_OP, Q_OP, load_model

    onnx_model = load_model(model)
    report = lint_model(onnx_model, trt_version=trt_version, label=model)
    payload = report.to_dict()
    comparison = None
    if engine_layers and not report.refused:
        from ..graph.engine_compare import compare_with_engine, load_layer_info

        names = {n.name for n in onnx_model.graph.node if n.op_type in (Q_OP, DQ_OP)}
        comparison = compare_with_engine(report, load_layer_info(engine_layers), names)
        payload["engine"] = comparison.to_dict()
    if as_json:
        emit_json(payload)
    else:
        _print(report, comparison, verbose or all_layers, all_layers)
    if report.refused:
        rules = ", ".join(report.summary["refused_by"])
        raise LintFailure(f"TensorRT's parser would reject {model} ({rules}); no prediction made",
                          "Fix the findings listed above and lint again")
    if report.parse_errors:
        raise LintFailure(f"TensorRT's parser would reject or mis-build {model} ({', '.join(report.parse_errors)})",
                          "Fix the PARSE findings listed above and lint again")
    n = report.summary["standalone_qdq"]
    if max_reformats is not None and n > max_reformats:
        raise LintFailure(f"{n} standalone Q/DQ predicted in {model}, more than --max-reformats {max_reformats}",
                          "See 'standalone Q/DQ by reason' (and --verbose for every node)")


def verdict(summary: dict) -> str:
    """The one line ``trtqat lint`` starts with."""
    s = summary
    if s.get("refused"):
        return (f"lint (TensorRT {s['trt_version']}): no prediction: the TensorRT parser would reject the model "
                f"({', '.join(s['refused_by'])})")
    name = f"{s['family']} {s['version']}" if s.get("version") else s.get("family")
    family = f"; family: {name} ({s['family_from']})" if s.get("family_from") else ""
    if s.get("float_model"):
        return (f"lint (TensorRT {s['trt_version']}): no Q/DQ nodes: a float model; quantize it first "
                f"({s['compute_layers']} compute layers, all float; float layers run in {s['float_precision']}){family}")
    expected = s["standalone_by_rule"].get("LINT001", 0)
    avoidable = s["standalone_qdq"] - expected
    head = (f"{avoidable} avoidable standalone Q/DQ + {expected} network-input Quantize" if avoidable
            else f"fully fused: only the {expected} network-input Quantize stay{'s' if expected == 1 else ''} "
                 "standalone" if expected else "fully fused: no standalone Q/DQ")
    return (f"lint (TensorRT {s['trt_version']}): {head}; INT8 {s['int8_layers']}/{s['compute_layers']} compute "
            f"layers ({s['int8_share']:.0%}, {s['int8_share_macs']:.0%} of MACs); "
            f"{s['precision_boundaries']} precision boundaries; float layers run in {s['float_precision']}{family}")


def _examples(names: list[str], k: int = 3) -> str:
    more = f" (+{len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def _print(report, comparison, verbose: bool, all_layers: bool) -> None:
    from ..graph.lint import RULE_TITLES, standalone_by_rule

    click.echo(verdict(report.summary))
    groups = standalone_by_rule(report.standalone)
    if groups:
        print_table("standalone Q/DQ by reason", ["rule", "count", "reason", "nodes"],
                    [(rule, len(names), RULE_TITLES.get(rule, ""), _examples(names)) for rule, names in groups.items()],
                    justify=["left", "right", "left", "left"])
    other = [f for f in report.findings if f.rule_id not in groups]
    by_rule: dict[str, list] = {}
    for f in other:
        by_rule.setdefault(f.rule_id, []).append(f)
    if by_rule and not verbose:
        print_table("other findings", ["rule", "severity", "count", "what", "nodes"],
                    [(r, fs[0].severity, len(fs), RULE_TITLES.get(r) or fs[0].hazard,
                      _examples([f.nodes[0] for f in fs])) for r, fs in by_rule.items()],
                    justify=["left", "left", "right", "left", "left"])
    if verbose:
        if report.standalone:
            print_table("standalone Q/DQ (Reformat layers)", ["node", "op", "rule", "why"],
                        [(x.name + (f" (+{len(x.aliases)} merged)" if x.aliases else ""), x.op, x.rule_id, x.reason)
                         for x in report.standalone])
        rows = [(x.name, x.op, x.precision, x.output, len(x.fused), x.why_float)
                for x in report.layers if all_layers or x.precision != "INT8"]
        if rows:
            print_table("compute layers" + ("" if all_layers else " running in float"),
                        ["layer", "op", "precision", "writes", "fused", "why float"], rows)
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
    if not verbose and (report.standalone or report.layers):
        click.echo("(--verbose: one row per standalone Q/DQ, float layer and finding; --all-layers: every layer)")
