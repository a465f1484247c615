"""``trtqat sensitive``: rank top-level layers by the accuracy their int8 quantization costs."""
from __future__ import annotations

from pathlib import Path

import click

from .options import (
    PICKLE_WARNING,
    calib_config,
    calib_options,
    checkpoint_argument,
    json_option,
    progress_bar,
    repo_option,
)
from .output import emit_json, print_table, say


@click.command(name="sensitive", help=f"""Rank CKPT's layers by quantization sensitivity.

Everything is quantized (no ignore policy, no scale-sharing rules) and calibrated on --calib; then each
top-level layer is measured with its quantizers disabled (--mode drop: the accuracy it recovers in float)
or as the only quantized layer (--mode single: the accuracy it costs alone). Accuracy is COCO mAP@0.5:0.95
on --val with labels (YOLO txt or --val-ann), else the mean SQNR (dB) of the outputs against the float
model on --val or the calibration images. Prints the --ignore-policy keeping the --top-k layers in float.
CKPT is a float train.py checkpoint; a trtqat PTQ/QAT checkpoint is refused (exit 2).

\b
Example:
  trtqat sensitive yolov7.pt --repo ~/yolov7 --calib images/ --summary sens.json --plot sens.png

{PICKLE_WARNING}""")
@checkpoint_argument
@repo_option
@calib_options
@click.option("--val", "val_dir", type=click.Path(path_type=Path), default=None,
              help="Evaluation images [default: the calibration images].")
@click.option("--val-ann", type=click.Path(path_type=Path), default=None, help="COCO JSON annotations for --val.")
@click.option("--val-images", type=int, default=64, show_default=True, help="Evaluate at most N images.")
@click.option("--mode", type=click.Choice(["drop", "single"]), default="drop", show_default=True,
              help="drop: each layer in float, the rest int8; single: only that layer int8.")
@click.option("--top-k", type=int, default=3, show_default=True, help="Layers to keep in float in the policy.")
@click.option("--summary", "summary_path", type=click.Path(path_type=Path), default=None,
              help="Write the ranking as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="Write a bar chart PNG here.")
@click.option("--conf-thres", type=float, default=0.001, show_default=True, help="Evaluation confidence threshold.")
@click.option("--iou-thres", type=float, default=0.65, show_default=True, help="Evaluation NMS IoU threshold.")
@json_option
def sensitive(ckpt: Path, repo, val_dir, val_ann, val_images, mode, top_k, summary_path, plot_path, conf_thres,
              iou_thres, as_json, **calib_kw):
    from ..errors import InputError, UsageError

    if val_ann is not None and val_dir is None:
        raise UsageError("--val-ann needs --val DIR (the images it annotates)")
    if val_ann is not None and not Path(val_ann).is_file():
        raise InputError(f"annotation file not found: {val_ann}", "Pass a COCO JSON file")
    if top_k < 0:
        raise UsageError(f"--top-k must be >= 0, got {top_k}")
    if plot_path is not None and Path(plot_path).suffix.lower() != ".png":
        raise UsageError(f"--plot {plot_path}: only .png is written")
    if plot_path is not None:  # the optional matplotlib: fail with its one line now, not after the whole ranking
        from .._deps import require

        require("matplotlib", purpose="the sensitivity bar chart (--plot)")
    if val_dir is not None:  # labelled --val ranks by COCO mAP: a missing pycocotools must fail before calibration
        from .._deps import require
        from ..data.images import find_images
        from ..eval.labels import has_yolo_labels

        if val_ann is not None or has_yolo_labels(find_images(val_dir)):
            require("pycocotools", purpose="ranking layers by mAP on a labelled --val")

    from ..eval.evaluate import EvalConfig, eval_set
    from ..quant.ptq import QuantConfig, run_ptq
    from ..quant.sensitivity import plot_sensitivity

    calib = calib_config(**calib_kw)
    ecfg = EvalConfig(size=calib.size, batch_size=calib.batch_size, conf_thres=conf_thres, iou_thres=iou_thres,
                      max_images=val_images)
    prog, advance, set_total = progress_bar("calibrating")
    with prog:
        ptq = run_ptq(ckpt, repo=repo, calib=calib, qconf=QuantConfig(family_ignore=False, use_rules=False),
                      progress=advance, on_total=set_total)
    model = ptq.model
    nc = int(getattr(model.model[-1], "nc", 80))
    # on the calibration images (no --val) the measure is label-free fidelity even when labels exist
    data = eval_set(val_dir or calib.calib_dir, ecfg, ann=val_ann, nc=nc, cache=True, labels=val_dir is not None)
    from ..quant.device import resolve_device

    model.to(resolve_device(calib.device))
    result = _rank(model, data, mode)
    summary = result.to_dict(top_k)
    summary.update({"family": ptq.loaded.family.name, "images": len(data.files), "checkpoint": str(ckpt)})
    if summary_path is not None:
        from .._io import write_json

        write_json(summary_path, summary)
    if plot_path is not None:
        plot_sensitivity(result, plot_path)
    if as_json:
        emit_json(summary)
        return
    _print(result, top_k, len(data.files))
    for label, path in (("summary", summary_path), ("chart", plot_path)):
        if path is not None:
            say(f"{label} written to {path}")


def _rank(model, data, mode: str):
    from ..eval.evaluate import evaluate
    from ..quant.sensitivity import quantizers_by_layer, run_sensitivity

    cache: dict = {}
    if data.labelled:
        def score(m):
            return evaluate(m, data, quantized=None).score()
        float_score = evaluate(model, data, quantized=False).score()
        metric = "mAP@0.5:0.95"
    else:
        def score(m):
            return evaluate(m, data, quantized=None, reference=m, reference_cache=cache).score()
        float_score = None
        metric = "SQNR dB"
    prog, advance, set_total = progress_bar(f"sensitivity ({mode})")
    set_total(len(quantizers_by_layer(model)))
    with prog:
        return run_sensitivity(model, score, mode=mode, metric=metric, float_score=float_score, progress=advance)


def _print(result, top_k: int, images: int) -> None:
    rows = [(i + 1, r.name, r.quantizers, r.score, r.impact) for i, r in enumerate(result.rows[:max(top_k, 10)])]
    print_table(f"sensitivity ({result.mode}, {result.metric} on {images} images; all quantized: "
                f"{result.baseline:.4g})", ["rank", "layer", "quantizers", result.metric, "impact"], rows,
                justify=["right", "left", "right", "right", "right"])
    policy = result.ignore_policy(top_k)
    if policy:
        say(f"keep the top {top_k} layers in float with:  --ignore-policy '{policy}'")
