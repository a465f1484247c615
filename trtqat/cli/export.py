"""``trtqat export``: PTQ/QAT checkpoint -> Q/DQ ONNX (dynamic batch), verified in onnxruntime."""
from __future__ import annotations

from pathlib import Path

import click

from .options import PICKLE_WARNING, checkpoint_argument, json_option, repo_option, size_option
from .output import emit_json, print_table, say


@click.command(name="export", help=f"""Export CKPT (a trtqat PTQ/QAT checkpoint) to a Q/DQ ONNX for TensorRT.

\b
Outputs: --head decoded -> 'output' [B, N, 5+nc] (boxes decoded in-graph, N = 3 x sum of H/s x W/s);
         --head raw     -> 's8', 's16', 's32' [B, 3, H/s, W/s, 5+nc].
Ultralytics YOLOv8/YOLO11/YOLO26 (decoded only): 'output0' [B, 4+nc, N], or
         [B, K, 6] (x1, y1, x2, y2, score, class) when YOLO26's end-to-end head runs.
\b
Example:
  trtqat export ptq.pt --repo ~/yolov7 --size 640 --dynamic --save ptq.onnx

{PICKLE_WARNING}""")
@checkpoint_argument
@repo_option
@size_option
@click.option("--save", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output ONNX [default: <checkpoint stem>.onnx beside the checkpoint].")
@click.option("--dynamic", is_flag=True, help="Dynamic batch axis (input and outputs).")
@click.option("--dynamic-hw", is_flag=True, help="Also dynamic height/width (output N becomes unknown).")
@click.option("--opset", type=int, default=13, show_default=True, help="ONNX opset, 13..19 (19 = FP16 Q/DQ).")
@click.option("--head", type=click.Choice(["decoded", "raw"]), default="decoded", show_default=True,
              help="Decoded boxes in one output, or the raw per-stride head tensors (YOLOv5/YOLOv7 only).")
@click.option("--float-dtype", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True,
              help="Dtype of the non-quantized layers (strongly typed TensorRT runs them in it).")
@click.option("--no-quant", is_flag=True, help="Export the float model (FP16 baseline / implicit-PTQ input).")
@click.option("--simplify", is_flag=True, help="Simplify with onnxslim (Q/DQ kept intact).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare onnxruntime with PyTorch; exit 1 above the tolerance.")
@click.option("--calib", "calib_dir", type=click.Path(path_type=Path), default=None,
              help="Images for verification [default: seeded noise].")
@click.option("--batch", type=int, default=4, show_default=True,
              help="Larger verification batch (with --dynamic; batch 1 is always checked).")
@json_option
def export(ckpt: Path, repo, size, save, dynamic, dynamic_hw, opset, head, float_dtype, no_quant, simplify, verify,
           calib_dir, batch, as_json):
    from ..quant.export import ExportConfig, export_model
    from ..quant.verify import CONF_MATTERS, TOP_ROWS

    if simplify:  # the optional onnxslim: fail with its one line before tracing, not after
        from .._deps import require

        require("onnxslim", purpose="--simplify")

    config = ExportConfig(size=size, save=save, dynamic=dynamic, dynamic_hw=dynamic_hw, opset=opset, head=head,
                          float_dtype=float_dtype, no_quant=no_quant, simplify=simplify, verify=verify,
                          calib_dir=calib_dir, batch=batch)
    result = export_model(ckpt, repo, config, progress=None if as_json else say)
    summary = result.to_dict()
    if as_json:
        emit_json(summary)
        return
    print_table(f"trtqat export: {result.path}", ["item", "value"], _rows(summary))
    ver = summary["verification"]
    if ver:
        print_table(f"verification vs PyTorch ({ver['source']}; boxes and max abs errors on the rows that "
                    f"matter: confidence > {CONF_MATTERS} or top {TOP_ROWS})",
                    ["graph", "batch", "output", "part", "rows", "measure", "value", "minimum", "max abs err",
                     "limit", "ok"],
                    [(c["graph"], c["batch"], c["output"], c.get("part", "all"), c.get("rows") or "all",
                      c.get("measure", "cosine"), f"{c['cosine']:.6f}", c["min_cosine"], f"{c['max_abs']:.4g}",
                      "-" if c["limit_max_abs"] is None else f"{c['limit_max_abs']:.4g}",
                      "yes" if c["passed"] else "NO") for c in ver["checks"]],
                    justify=["left", "right", "left", "left", "right", "left", "right", "right", "right", "right",
                             "left"])
    for note in summary["notes"]:
        say(f"note: {note}")
    say(f"ONNX written to {result.path}")


def _rows(s: dict) -> list[tuple[str, str]]:
    q, c = s["qdq"], s["cleanup"]
    family = f"{s['family']} {s['version']}" if s.get("version") else s["family"]
    rows = [("model", f"{family} ({s['kind']})"),
            ("opset / float dtype", f"{s['opset']} / {s['float_dtype']}"),
            ("input", "images " + _shape(s["input"]["images"]))]
    rows += [(f"output {name}", _shape(shape)) for name, shape in s["outputs"].items()]
    if s.get("output_layout"):
        rows.append(("output layout", s["output_layout"]))
    qdq = (f"{q['quantize']} Q / {q['dequantize']} DQ (weights {q['weight']}, per-channel {q['per_channel']}; "
           f"activations {q['activation']})")
    cleaned = (f"{c['nodes_before']} -> {c['nodes_after']} nodes, {c['identities_removed']} Q/DQ-parameter "
               "Identities removed" + (", simplified (onnxslim)" if c["simplified"] else ""))
    rows += [("Q/DQ nodes", qdq), ("graph cleanup", cleaned)]
    if s["fp16"]:
        f = s["fp16"]
        rows.append(("fp16 conversion", (f"Q/DQ in {f['qdq_dtype']}, {f['casts_added']} Casts, "
                                         f"{f['initializers_converted']} initializers converted")))
    ver = s["verification"]
    rows.append(("verification", "skipped (--no-verify)" if ver is None else
                 f"passed on {ver['source']} ({len(ver['checks'])} checks)"))
    rows.append(("time", f"{s['seconds']:.1f} s"))
    return rows


def _shape(dims: list) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"
