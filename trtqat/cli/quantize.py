"""``trtqat quantize``: PTQ (Histogram calibration), then optional QAT and a float / PTQ / QAT accuracy table."""
from __future__ import annotations

from pathlib import Path

import click

from .options import (
    PICKLE_WARNING,
    calib_config,
    calib_options,
    checkpoint_argument,
    ignore_option,
    json_option,
    placement_options,
    progress_bar,
    repo_option,
)
from .output import emit_json, print_table, say


@click.command(name="quantize", help=f"""Quantize CKPT (a YOLOv5/YOLOv7 train.py checkpoint, or an Ultralytics
YOLOv8/YOLO11/YOLO26 one: YOLO(...).save() or a trainer last.pt/best.pt) with PTQ, optionally QAT.

A trtqat PTQ/QAT checkpoint is refused (it is calibrated already): measure it with 'trtqat eval'.

\b
Examples:
  trtqat quantize yolov7.pt --repo ~/yolov7 --calib images/ --ptq ptq.pt
  trtqat quantize yolo11n.pt --calib images/ --ptq ptq.pt          (Ultralytics: no --repo)
  trtqat quantize yolov7.pt --repo ~/yolov7 --calib images/ --ptq ptq.pt \\
      --qat qat.pt --train train_images/ --val val2017/ --val-ann instances_val2017.json \\
      --eval-origin --eval-ptq
  torchrun --nproc_per_node 4 -m trtqat quantize ... --qat qat.pt --train DIR   (multi-GPU PTQ + QAT)

QAT needs no labels: the calibrated model with quantization off is the teacher and the loss is the MSE of
every layer's output before the detect head. Learning rate: the first 30 % of the epochs (rounded down)
use LR/10, the last 20 % LR/10, the rest LR (LR = --lr, default 3e-5; 10 epochs give
3e-6 / 3e-5 / 3e-6, the reference schedule at 3x its peak; 3 epochs or fewer all run at LR). Each epoch
writes <qat>.last.pt and <qat>.state.pt atomically; --resume continues after Ctrl-C or a crash. The
best epoch is written to --qat: it is chosen on every 4th --val image (mAP with labels, else SQNR against
the float model), and the float / PTQ / QAT table uses the other --val images; without --val, by SQNR on
--train images. The table is written to <qat or ptq stem>.summary.json.

{PICKLE_WARNING}""")
@checkpoint_argument
@repo_option
@calib_options
@ignore_option
@placement_options
@click.option("--ptq", "ptq_out", type=click.Path(path_type=Path), default=None,
              help="Write the PTQ checkpoint here.")
@click.option("--qat", "qat_out", type=click.Path(path_type=Path), default=None,
              help="Run QAT and write the best epoch here (needs --train).")
@click.option("--train", "train_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of training images for QAT (labels not needed).")
@click.option("--epochs", type=int, default=10, show_default=True,
              help="QAT epochs (30 % warm-up and 20 % cool-down at LR/10, rounded down; the rest at --lr).")
@click.option("--iters", type=int, default=200, show_default=True, help="QAT batches per epoch (of --batch-size).")
@click.option("--lr", type=float, default=3e-5, show_default=True,
              help="Peak learning rate, reached by every run (10 epochs: epochs 3-7; 0-2 and 8-9 use LR/10).")
@click.option("--supervision-stride", type=int, default=1, show_default=True,
              help="Distil every N-th top-level layer (plus the last before the detect head).")
@click.option("--clip-grad", type=float, default=None, help="Clip the gradient norm to this value [default: off].")
@click.option("--learn-amax/--fixed-amax", "learn_amax", default=True, show_default=True,
              help="QAT also trains each activation scale (LSQ step-size gradient), or keeps the calibrated ones.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision for QAT (CUDA only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the QAT data order and flips.")
@click.option("--resume", is_flag=True, help="Continue an interrupted QAT run from <qat>.state.pt.")
@click.option("--val", "val_dir", type=click.Path(path_type=Path), default=None,
              help="Validation images (YOLO labels in the sibling labels/ folder, or --val-ann).")
@click.option("--val-ann", type=click.Path(path_type=Path), default=None, help="COCO JSON annotations for --val.")
@click.option("--val-images", type=int, default=None,
              help="Evaluate at most N images [default: all of --val; 32 of --train for QAT epoch selection].")
@click.option("--eval-origin", is_flag=True, help="Also evaluate the float model (fused, quantization off).")
@click.option("--eval-ptq", is_flag=True, help="Also evaluate the PTQ model (when QAT runs).")
@click.option("--conf-thres", type=float, default=0.001, show_default=True, help="Evaluation confidence threshold.")
@click.option("--iou-thres", type=float, default=0.65, show_default=True, help="Evaluation NMS IoU threshold.")
@json_option
def quantize(ckpt: Path, repo, ignore, rules_file, rule_overrides, no_share, no_rules, ptq_out, qat_out, train_dir,
             epochs, iters, lr,
             supervision_stride, clip_grad, learn_amax, amp, seed, resume, val_dir, val_ann, val_images, eval_origin, eval_ptq,
             conf_thres, iou_thres, as_json, **calib_kw):
    from ..quant.ptq import QuantConfig
    from ..quant.qat import QatConfig
    from ..workflow import EvalOptions, QuantizeJob, run_quantize

    calib = calib_config(**calib_kw)
    qcfg = None
    if qat_out is not None:
        qcfg = QatConfig(epochs=epochs, iters=iters, batch_size=calib.batch_size, size=calib.size, lr=lr,
                         supervision_stride=supervision_stride, clip_grad=clip_grad, amp=amp, seed=seed,
                         device=calib.device, learn_amax=learn_amax)
    job = QuantizeJob(ckpt=ckpt, repo=repo, calib=calib,
                      qconf=QuantConfig(ignore=tuple(ignore), rules_file=rules_file, use_rules=not no_rules,
                                        share=not no_share, rule_overrides=tuple(rule_overrides)),
                      ptq_out=ptq_out, qat_out=qat_out, train_dir=train_dir, qat=qcfg, resume=resume,
                      evaluation=EvalOptions(val_dir=val_dir, val_ann=val_ann, val_images=val_images,
                                             conf_thres=conf_thres, iou_thres=iou_thres, origin=eval_origin,
                                             ptq=eval_ptq))

    def on_epoch(rec: dict, labelled: bool) -> None:
        if not as_json:
            score = "-" if rec["score"] is None else f"{rec['score']:.4g}"
            say(f"epoch {rec['epoch']}: lr {rec['lr']:.1e}  loss {rec['loss']:.5g}  "
                f"{'mAP' if labelled else 'SQNR dB'} {score}{'  (best)' if rec['best'] else ''}")

    outcome = run_quantize(job, progress=progress_bar, on_epoch=on_epoch)
    if not outcome.is_main:
        return
    out = outcome.summary
    if as_json:
        emit_json(out)
        return
    if outcome.ptq is not None:
        print_table("trtqat quantize: PTQ", ["item", "value"], _rows(out))
        if outcome.ptq.saved:
            say(f"PTQ checkpoint written to {outcome.ptq.saved}")
    if "eval" in out:
        _print_eval(out["eval"], out["eval"]["origin_skipped"])
        if out["eval"].get("epoch_selection"):
            say(out["eval"]["epoch_selection"])
    if "summary" in out:
        say(f"summary written to {out['summary']}")


def _print_eval(result: dict, origin_skipped: bool) -> None:
    rows = result["rows"]
    if result["labelled"]:
        print_table(f"accuracy on {result['images']} images ({result['labels']} labels)",
                    ["model", "mAP@0.5:0.95", "mAP@0.5", "detections"],
                    [(r["name"], r["map"], r["map50"], r["detections"]) for r in rows],
                    justify=["left", "right", "right", "right"])
        return
    outputs = list(rows[0]["fidelity"]) if rows and rows[0]["fidelity"] else []
    print_table(f"fidelity to the float model on {result['images']} unlabelled images",
                ["model", *[f"{o} cos / SQNR dB" for o in outputs], "agreement mAP", "agreement mAP@0.5"],
                [(r["name"], *[f"{r['fidelity'][o]['cosine']:.5f} / {r['fidelity'][o]['sqnr_db']:.1f}" for o in outputs],
                  r["agreement"]["map"], r["agreement"]["map50"]) for r in rows])
    if origin_skipped:
        say("--eval-origin: without labels the float model is the reference (fidelity 1.0, agreement 1.0)")


#: FamilyInfo.output_layout -> what the decoded output holds
_LAYOUTS = {"yolov5": "yolov5 [B, N, 5+nc]", "ultralytics": "ultralytics [B, 4+nc, N]",
            "end2end": "end2end [B, max_det, 6] (NMS-free)"}


def _listing(why: dict[str, str], limit: int = 8) -> str:
    """``module: reason`` lines, at most ``limit`` of them."""
    lines = [f"{m}: {r}" for m, r in list(why.items())[:limit]]
    return "\n".join(lines + ([f"... {len(why) - limit} more (--json lists all)"] if len(why) > limit else [])) or "none"


def _block_ops(ops: dict) -> str:
    """``TQ008 x8, TQ010 x4`` for the quantizers a policy ``block`` rule put inside blocks."""
    counts: dict[str, int] = {}
    for rule in ops.values():
        counts[rule] = counts.get(rule, 0) + 1
    return ", ".join(f"{rule} x{n}" for rule, n in sorted(counts.items()))


def _rows(s: dict) -> list[tuple[str, str]]:
    calib = s["calib"] or {}
    family = f"{s['family']} {s['version']}" if s.get("version") else s["family"]
    rows = [("family", f"{family} (detect: {s['detect']})"),
            ("output layout", _LAYOUTS.get(s.get("output_layout") or "", s.get("output_layout") or "-")),
            ("quantized modules", ", ".join(f"{k}: {v}" for k, v in sorted(s["quantized"].items())) or "none"),
            ("placement", s.get("placement") or "-"),
            ("kept float (why)", _listing(s.get("float") or dict.fromkeys(s["ignored"], "ignored"))),
            ("INT8 input, float output", _listing(s.get("converted") or {})),
            *([("quantizers inside blocks", _block_ops(s["block_ops"]))] if s.get("block_ops") else []),
            ("ignore patterns (regex)", " | ".join(s["ignore_policy"]) or "-"),
            *([("ignore patterns matching nothing", " | ".join(s["unmatched_ignore"]))] if s.get("unmatched_ignore") else []),
            ("scale-sharing groups", str(s["groups"])),
            ("calibration", f"{calib.get('method')} on {calib.get('images')} images in {calib.get('batches')} batches"),
            ("unreadable images skipped", str(s["skipped_images"])),
            ("time", f"{s['seconds']:.1f} s (collect {calib.get('seconds_collect')} s, amax {calib.get('seconds_amax')} s)")]
    if calib.get("unseen"):
        rows.append(("quantizers that saw no tensor", ", ".join(calib["unseen"])))
    return rows
