"""``trtqat quantize``: PTQ (Histogram calibration) of a YOLOv5/YOLOv7 checkpoint."""
from __future__ import annotations

from pathlib import Path

import click

from .options import PICKLE_WARNING, calib_config, calib_options, checkpoint_argument, ignore_option, json_option
from .options import progress_bar, repo_option
from .output import emit_json, print_table, say


@click.command(name="quantize", help=f"""Quantize CKPT (a YOLOv5/YOLOv7 train.py checkpoint) with PTQ.

\b
Example:
  trtqat quantize yolov7.pt --repo ~/yolov7 --calib images/ --ptq ptq.pt

{PICKLE_WARNING}""")
@checkpoint_argument
@repo_option
@calib_options
@ignore_option
@click.option("--rules", "rules_file", type=click.Path(path_type=Path), default=None,
              help="Policy file (YAML) instead of rules/<family>.yaml.")
@click.option("--no-rules", is_flag=True, help="Do not share scales (baseline placement).")
@click.option("--ptq", "ptq_out", type=click.Path(path_type=Path), default=None,
              help="Write the PTQ checkpoint here.")
@json_option
def quantize(ckpt: Path, repo, ignore, rules_file, no_rules, ptq_out, as_json, **calib_kw):
    from ..quant.ptq import QuantConfig, run_ptq

    calib = calib_config(**calib_kw)
    qconf = QuantConfig(ignore=tuple(ignore), rules_file=rules_file, use_rules=not no_rules)
    prog, advance, set_total = progress_bar("calibrating")
    with prog:
        result = run_ptq(ckpt, repo=repo, calib=calib, qconf=qconf, out=ptq_out, progress=advance,
                         on_total=set_total)
    summary = result.summary()
    if as_json:
        emit_json(summary)
        return
    print_table("trtqat quantize: PTQ", ["item", "value"], _rows(summary))
    if result.saved:
        say(f"PTQ checkpoint written to {result.saved}")


def _rows(s: dict) -> list[tuple[str, str]]:
    calib = s["calib"] or {}
    rows = [("family", f"{s['family']} (detect: {s['detect']})"),
            ("quantized modules", ", ".join(f"{k}: {v}" for k, v in sorted(s["quantized"].items())) or "none"),
            ("ignored (float)", f"{len(s['ignored'])}: " + ", ".join(s["ignored"][:6])
             + (" ..." if len(s["ignored"]) > 6 else "")),
            ("ignore policy", " | ".join(s["ignore_policy"]) or "-"),
            ("scale-sharing groups", str(s["groups"])),
            ("calibration", f"{calib.get('method')} on {calib.get('images')} images in {calib.get('batches')} batches"),
            ("unreadable images skipped", str(s["skipped_images"])),
            ("time", f"{s['seconds']:.1f} s (collect {calib.get('seconds_collect')} s, amax {calib.get('seconds_amax')} s)")]
    if calib.get("unseen"):
        rows.append(("quantizers that saw no tensor", ", ".join(calib["unseen"])))
    return rows
