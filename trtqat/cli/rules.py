"""``trtqat rules``: show the scale-sharing groups and the ignore policy for a checkpoint (changes nothing)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import click

from .options import (
    PICKLE_WARNING,
    ignore_option,
    json_option,
    repo_option,
    rule_option,
    rules_file_option,
    size_option,
)
from .output import emit_json, print_table, say


@click.command(name="rules", help=f"""Show which quantizers of CKPT will share one scale, and why.

Discovery runs on the ONNX graph of the quantized model (Concat, MaxPool, nearest Resize, data movement,
residual Add, sibling readers of one tensor); nothing is written. Given a trtqat PTQ/QAT checkpoint, it
shows what that run applied (stored in the checkpoint).

\b
Examples:
  trtqat rules yolov7.pt --repo ~/yolov7
  trtqat rules yolov5s.pt --repo ~/yolov5 --json
  trtqat rules yolov5s.pt --repo ~/yolov5 --rule TQ007=report
  trtqat rules --list

{PICKLE_WARNING}""")
@click.argument("ckpt", type=click.Path(path_type=Path), required=False)
@repo_option
@rules_file_option
@rule_option
@size_option
@ignore_option
@click.option("--list", "list_rules", is_flag=True, help="List every rule id, name and reason, then exit.")
@json_option
def rules(ckpt, repo, rules_file, rule_overrides, size, ignore, list_rules, as_json):
    from ..errors import UsageError

    if list_rules:
        return _list(rules_file, as_json)
    if ckpt is None:
        raise UsageError("missing argument CKPT", "Pass a checkpoint, or --list to list the rules")
    from ..quant.rules_report import rules_report

    report = rules_report(ckpt, repo=repo, rules_file=rules_file, size=size, ignore=tuple(ignore),
                          overrides=tuple(rule_overrides))
    if as_json:
        emit_json(report)
        return
    _print(report)


def _ops(ops: list[str]) -> str:
    counts = Counter(op.rsplit("/", 1)[-1].split("_")[0] for op in ops)
    return " ".join(f"{k}x{v}" if v > 1 else k for k, v in counts.items()) or "-"


def _print(r: dict) -> None:
    say(f"family {r['family']}; policy {' <- '.join(reversed(r['policy']))}")
    print_table(f"Scale-sharing groups ({len(r['groups'])})", ["#", "rule", "members", "tied by"],
                [(i, f"{g['rule']} {g['rule_name']}", ", ".join(g["members"]), _ops(g["ops"]))
                 for i, g in enumerate(r["groups"], 1)])
    if r["aligned"]:
        print_table(f"Aligned, one quantizer, nothing to share ({len(r['aligned'])})", ["rule", "member", "tied by"],
                    [(g["rule"], ", ".join(g["members"]), _ops(g["ops"])) for g in r["aligned"]])
    if r["fanouts"]:
        print_table("Float fan-out (a quantized tensor also read in float)",
                    ["tensor", "INT8 input given to", "still float", "TensorRT"],
                    [(f["tensor"], ", ".join(f["converted"]) or "-", ", ".join(f["float_readers"]) or "-",
                      "standalone Quantize (reformat)" if f["standalone_q"] else "fused")
                     for f in r["fanouts"]])
    if r.get("stored"):
        say(f"stored in the checkpoint; placement: {r.get('placement') or 'not recorded'}")
    if r.get("converted"):
        say(f"INT8 input, float output: {', '.join(r['converted'])}")
    if r.get("block_ops"):
        per_rule = Counter(r["block_ops"].values())
        say("quantizers inside blocks: " + ", ".join(f"{rule} x{n}" for rule, n in sorted(per_rule.items()))
            + f" ({', '.join(list(r['block_ops'])[:3])}{', ...' if len(r['block_ops']) > 3 else ''})")
    floats = r.get("float") or dict.fromkeys(r["ignored"], "ignored")
    if r.get("stored") and not floats:
        say("kept float: not recorded in this checkpoint")
    else:
        say("kept float: " + ("none" if not floats else "; ".join(f"{m} ({why})" for m, why in floats.items())))
    say(f"ignore policy: {' | '.join(r['ignore_policy']) or '-'}")
    if r["fanouts"]:
        say(f"float-fanout mode: {r['fanout_mode']} ({r['fanout_why']})")


def _list(rules_file, as_json: bool) -> None:
    from ..graph.policy import RULES_DIR, load_policy_file

    names = ("default", "yolov5", "yolov7", "ultralytics")
    files = [Path(rules_file)] if rules_file else [RULES_DIR / f"{n}.yaml" for n in names]
    policies = [load_policy_file(f) for f in files]
    labels = [f.stem for f in files]
    rows = []
    for rule in policies[0].rules:
        settings = {}
        for label, pol in zip(labels, policies):
            r = pol.rule(rule.id)
            settings[label] = "-" if r is None else ("off" if not r.enabled else (r.mode or "on"))
        rows.append({**rule.to_dict(), "settings": settings})
    for label, pol in zip(labels[1:], policies[1:]):
        known = {r["id"] for r in rows}
        rows += [{**r.to_dict(), "settings": {label: r.mode or "on"}} for r in pol.rules if r.id not in known]
    overrides = [{"file": label, "id": r.id, "setting": r.mode or ("on" if r.enabled else "off"), "why": r.why}
                 for label, pol in zip(labels[1:], policies[1:]) for r in pol.rules
                 if policies[0].rule(r.id) is None or policies[0].rule(r.id).why != r.why]
    if as_json:
        emit_json({"rules": rows, "overrides": overrides})
        return
    print_table("trtqat scale-sharing rules", ["id", "name", "kind", *labels, "why"],
                [(r["id"], r["name"], r["kind"], *[r["settings"].get(x, "-") for x in labels], r["why"])
                 for r in rows])
    if overrides:
        print_table("Per-family settings and their reasons", ["file", "id", "setting", "why"],
                    [(o["file"], o["id"], o["setting"], o["why"]) for o in overrides])
