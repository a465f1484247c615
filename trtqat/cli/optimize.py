"""``trtqat optimize``: make any Q/DQ ONNX TensorRT-friendly (ModelOpt, Ultralytics, pytorch-quantization)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .options import json_option
from .output import emit_json, print_table, say


@click.command(name="optimize")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output ONNX.")
@click.option("--calib", "calib_dir", type=click.Path(path_type=Path), default=None,
              help="Images: recalibrate every scale group through onnxruntime and insert missing Q/DQ.")
@click.option("--size", type=int, default=None, help="Image size for --calib and the check [default: the model's].")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--calib-batches", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Policy file [default: rules/<family>.yaml, family found in the graph].")
@click.option("--method", type=click.Choice(["mse", "entropy", "percentile", "max"]), default="mse",
              show_default=True, help="Amax method with --calib (the same as trtqat quantize).")
@click.option("--percentile", type=float, default=99.99, show_default=True)
@click.option("--recalibrate", type=click.Choice(["groups", "all"]), default="groups", show_default=True,
              help="With --calib: the tied groups only (the input's other scales kept), or every activation "
                   "scale (for a max-calibrated input such as ModelOpt's torch default; weights kept).")
@click.option("--trt-version", type=click.Choice(["8.6", "10", "11"]), default="10", show_default=True,
              help="TensorRT version lint simulates for the before/after table.")
@json_option
def optimize(model: Path, save: Path, calib_dir: Path | None, size: int | None, batch_size: int,
             calib_batches: int, rules_file: Path | None, method: str, percentile: float, recalibrate: str,
             trt_version: str, as_json: bool) -> None:
    """Make MODEL's Q/DQ TensorRT-friendly (head float, scales tied, Q/DQ added); write --save, check it.

    \b
    Reads any Q/DQ ONNX (trtqat, ModelOpt ONNX PTQ incl. FP16, torch.onnx.export of pytorch-quantization or
    ModelOpt models, onnxruntime quantize_static as Ultralytics' quantize=8 runs it). Normalises it (no-op
    Casts, Identity/Constant scales, duplicate Q/DQ; onnxruntime's conv-output Q/DQ, int32 bias DQs and zero
    points to TensorRT's pattern: asymmetric activations need --calib), makes the detect head's output convs
    and the DFL float where that costs no standalone Q/DQ (as the rules keep them), ties every
    scale-sharing group of rules/*.yaml (largest scale, or --calib recalibration, which by default never
    goes below the group's smallest scale), inserts Q/DQ the rules call for (without --calib only where
    an existing scale applies; others are listed), then runs onnx.checker, onnxruntime (IN vs OUT per
    output) and trtqat lint before and after. --calib --recalibrate all derives every activation scale
    again (no floor): for PTQ inputs calibrated with max (ModelOpt's torch default), not for QAT-learned
    scales.
    \b
    JSON (--json): family (yolov5|yolov7|ultralytics|unknown), family_from, version (ultralytics: v8|11|26),
      policy, calibrated, method, recalibrate, normalize {noop_casts_removed, qparams_folded, duplicate_q_merged,
      duplicate_dq_merged, onnxruntime_style, float_readers_rewired, bias_dq_folded, constant_dq_folded,
      weights_shifted, weights_requantized, zero_points_shifted, asymmetric_activations},
      head [{node, kind (output|dfl|decode: a Quantize in the decoding, its Q/DQ removed), tensor, floated,
      reason}],
      groups [{q_nodes, rules, ops, scales_before, scale, source, changed}] (rules ["recalibrate"]: an
      ungrouped Q, --recalibrate all; ["symmetric"]: an ungrouped asymmetric Q given a symmetric scale from
      --calib), groups_changed (tied groups only), recalibrated_alone, symmetric_alone,
      inserted/suggested [{rule, kind, node, tensor, sibling_q, needs_data}],
      lint {before, after: {standalone_qdq, int8_share, int8_share_macs, precision_boundaries}},
      outputs {name: {cosine, max_abs_error, max_abs}}, checker
    Exit codes: 0 ok; 1 a failed check; 2 bad input (unreadable ONNX, no Q/DQ, Q/DQ TensorRT would refuse,
    asymmetric activations without --calib).
    """
    from ..optimize import OptimizeConfig, optimize_file
    from .options import progress_bar

    cfg = OptimizeConfig(rules_file=rules_file, method=method, percentile=percentile, trt_version=trt_version,
                        recalibrate=recalibrate)
    bar, advance, total = progress_bar("collecting activations (onnxruntime)")
    with bar:
        report = optimize_file(model, save, cfg, calib_dir=calib_dir, size=size, batch_size=batch_size,
                               calib_batches=calib_batches, progress=advance, on_total=total)
    if as_json:
        emit_json(report.to_dict())
        return
    _print(report, save)


def _print(r, save: Path) -> None:
    n = r.normalize
    name = f"{r.family} {r.version}" if r.version else r.family
    family = f"{name} ({r.family_from})" if r.family_from else name
    say(f"family {family}; policy {' <- '.join(reversed(r.policy))}; normalised: {n.noop_casts_removed} no-op "
        f"Casts removed, {n.qparams_folded} scale/zero-point producers folded, {n.duplicate_q_merged} duplicate Q "
        f"and {n.duplicate_dq_merged} duplicate DQ merged")
    if (n.onnxruntime_style or n.bias_dq_folded or n.weights_shifted or n.weights_requantized or n.zero_points_shifted
            or n.asymmetric):
        weights = n.weights_shifted + n.weights_requantized
        say(f"onnxruntime QDQ format to TensorRT's pattern: {n.float_readers_rewired} float readers of activation "
            f"DQs (conv-output Q/DQ, shared pairs) moved to the float tensor, {n.bias_dq_folded} int32 bias DQs "
            f"and {n.constant_dq_folded} other constant DQs folded to float, {weights} weights with zero points "
            f"made symmetric ({n.weights_requantized} re-quantized per channel), {n.zero_points_shifted} uint8 "
            f"activations shifted to int8" + (f", {len(n.asymmetric)} asymmetric activation scales derived again "
                                              "from --calib" if n.asymmetric else ""))
    if r.head:
        print_table("detect head (ignore_detect_outputs): output convs, DFL, Q/DQ in the decoding",
                    ["node", "kind", "status"],
                    [(h.node, h.kind, ("Q/DQ removed" if h.kind == "decode" else "made float") if h.floated
                      else h.reason) for h in r.head])
    from ..optimize import is_single

    singles = [g for g in r.groups if is_single(g)]  # --recalibrate all / made symmetric: Qs in no group
    groups = [g for g in r.groups if not is_single(g)]
    changed = [g for g in groups if g.changed]
    print_table(f"scale groups tied ({len(changed)} changed of {len(groups)}; "
                f"{'recalibrated: ' + r.method if r.calibrated else 'largest member scale'})",
                ["#", "rules", "Q nodes", "scales before", "scale"],
                [(i, " ".join(g.rules), len(g.q_nodes), f"{min(g.scales_before):.4g}..{max(g.scales_before):.4g}",
                  f"{g.scale:.4g}") for i, g in enumerate(changed, 1)], justify=["right", "left", "right", "left", "left"])
    if singles:
        ratios = [g.scale / g.scales_before[0] for g in singles if g.scales_before[0] > 0]
        why = "--recalibrate all" if r.recalibrate == "all" else "made symmetric"
        say(f"{why}: {len(singles)} other activation scales derived again ({r.method}); new/old scale "
            f"{min(ratios):.3g}..{max(ratios):.3g}, median {float(np.median(ratios)):.3g}")
    if r.inserted or r.suggested:
        print_table("Q/DQ the rules call for", ["rule", "where", "tensor", "status"],
                    [(i.rule, i.node, i.tensor, "inserted" + (f" (scale of {i.sibling_q})" if i.sibling_q else ""))
                     for i in r.inserted]
                    + [(i.rule, i.node, i.tensor, "suggested: needs --calib") for i in r.suggested])
    b, a = r.lint_before, r.lint_after
    print_table("trtqat lint, before / after", ["", "standalone Q/DQ", "INT8 share (layers)", "INT8 share (MACs)",
                                                "precision boundaries"],
                [("IN", b.get("standalone_qdq"), b.get("int8_share"), b.get("int8_share_macs"),
                  b.get("precision_boundaries")),
                 ("OUT", a.get("standalone_qdq"), a.get("int8_share"), a.get("int8_share_macs"),
                  a.get("precision_boundaries"))])
    print_table("outputs, OUT vs IN (onnxruntime)", ["output", "cosine", "max |error|", "max |IN|"],
                [(k, v["cosine"], v["max_abs_error"], v["max_abs"]) for k, v in r.outputs.items()])
    say(f"wrote {save} (onnx.checker passed)")
