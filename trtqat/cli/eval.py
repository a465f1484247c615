"""``trtqat eval``: the accuracy of what you ship — checkpoints, ONNX exports and engines, one table."""
from __future__ import annotations

from pathlib import Path

import click

from .options import PICKLE_WARNING, device_option, json_option, progress_bar, repo_option
from .output import emit_json, print_table, say


@click.command(name="eval", help=f"""Score MODELs on a labelled folder with one letterbox, NMS and COCO metric.

\b
MODEL: an upstream train.py checkpoint (fused float), a trtqat PTQ/QAT checkpoint (fake-quant on),
an exported ONNX (float or Q/DQ, static or dynamic batch, decoded or raw head; onnxruntime, CPU, or
the CUDA provider with --device cuda), or a TensorRT engine (.engine/.plan; needs tensorrt and a GPU).
Several MODELs print one comparison table: mAP@0.5:0.95, mAP@0.5, detections and images/s (the
model call only: letterbox, NMS and scoring excluded).

\b
Examples:
  trtqat eval yolov7.pt qat.pt qat.onnx --repo ~/yolov7 --val val2017/ --val-ann instances_val2017.json
  trtqat eval fp16.onnx qat.onnx --val shapes/val/images --size 320 --json

--size: default the fixed input size of the models that have one, else the size an export records,
else 640. Labels: YOLO txt files in labels/ beside images/, or --val-ann (COCO JSON).

--bootstrap N resamples the images N times: a 95% interval for each mAP@0.5:0.95 and for each model's
difference to the first MODEL (paired: the same resampled images for both), in points. A difference
whose interval holds 0 is not resolved by these images.

\b
Output layouts (read from the file's metadata, the checkpoint's head or the output shape; checked
against the shape and the first batch; --layout forces one for every MODEL):
  yolov5       [B, N, 5+nc]  cx, cy, w, h, objectness, classes (YOLOv5, YOLOv7, trtqat export)
  ultralytics  [B, 4+nc, N]  cx, cy, w, h, class scores (YOLOv8, YOLO11)
  end2end      [B, K, 6]     x1, y1, x2, y2, score, class; no NMS (YOLO26, YOLOv10)

{PICKLE_WARNING}""")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--val", "val_dir", type=click.Path(path_type=Path), required=True,
              help="Labelled images (YOLO labels in the sibling labels/ folder, or --val-ann).")
@click.option("--val-ann", type=click.Path(path_type=Path), default=None, help="COCO JSON annotations for --val.")
@click.option("--val-images", type=int, default=None, help="Evaluate the first N images only [default: all].")
@repo_option
@click.option("--size", type=int, default=None,
              help="Square input size [default: the models' fixed size, else the exported size, else 640].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Images per batch.")
@device_option
@click.option("--conf-thres", type=float, default=0.001, show_default=True, help="Confidence threshold.")
@click.option("--iou-thres", type=float, default=0.65, show_default=True, help="NMS IoU threshold.")
@click.option("--layout", type=click.Choice(["yolov5", "ultralytics", "end2end"]), default=None,
              help="Output layout of every MODEL [default: each model's own, from its metadata, head or shape].")
@click.option("--bootstrap", type=int, default=0, show_default=True, metavar="N",
              help="Resample the images N times (e.g. 1000) for 95% intervals of mAP and of differences.")
@json_option
def eval_models(models, val_dir, val_ann, val_images, repo, size, batch_size, device, conf_thres, iou_thres,
                layout, bootstrap, as_json):
    from ..eval.job import EvalJob, run_eval

    job = EvalJob(models=tuple(models), val_dir=val_dir, val_ann=val_ann, repo=repo, size=size,
                  batch_size=batch_size, device=device, conf_thres=conf_thres, iou_thres=iou_thres,
                  val_images=val_images, layout=layout, bootstrap=bootstrap)
    result = run_eval(job, progress=progress_bar)
    if as_json:
        emit_json(result)
        return
    print_table(f"trtqat eval: {result['images']} images, {result['objects']} objects ({result['labels']} labels), "
                f"size {result['size']}",
                ["model", "format", "mAP@0.5:0.95", "mAP@0.5", "detections", "images/s", "run on"],
                [(r["name"], _format(r), _pct(r["map"]), _pct(r["map50"]), r["detections"], r["images_per_s"],
                  r["device"]) for r in result["rows"]],
                justify=["left", "left", "right", "right", "right", "right", "left"])
    if "bootstrap" in result:
        _print_intervals(result["bootstrap"])
    for r in result["rows"]:
        for note in r["notes"]:
            say(f"note: {r['name']}: {note}")


def _print_intervals(b: dict) -> None:
    level = f"{100 * b['level']:g}%"
    rows = [(name, f"{i['value']:.2f}", f"[{i['low']:.2f}, {i['high']:.2f}]", "") for name, i in b["artifacts"].items()]
    rows += [(name, f"{i['value']:+.2f}", f"[{i['low']:+.2f}, {i['high']:+.2f}]",
              "yes" if i["low"] > 0 or i["high"] < 0 else "no: the interval holds 0")
             for name, i in b["differences"].items()]
    print_table(f"bootstrap: {b['samples']} resamples of {b['images']} images, {level} intervals, mAP@0.5:0.95 in points",
                ["model / difference", "mAP", f"{level} interval", "resolved"], rows,
                justify=["left", "right", "right", "left"])


def _format(row: dict) -> str:
    parts = [row["format"], row["kind"] or "?"]
    if row.get("family") and row.get("version"):  # Ultralytics models: which one (the layout names the family)
        parts += [f"{row['family']} {row['version']}"]
    if row["format"] != "checkpoint":
        parts += [row["head"]]
    if row.get("layout"):
        parts += [f"{row['layout']} ({row['layout_from']})"]
    if row["format"] != "checkpoint":
        parts += [f"batch {row['batch']}"]
    return ", ".join(parts)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
