"""Benchmark 5: Q/DQ placement quality from the ONNX alone, per family, under three rule sets.

Families: every scratch fixture (:data:`trtqat.demo.fixtures.ALL_FAMILIES`, random weights: only structure
is measured here): YOLOv5, YOLOv7, and the Ultralytics YOLOv8, YOLO11 (C3k2, C2PSA attention) and YOLO26
(one-to-many head, as Ultralytics 8.4 saves it) at the fixtures' scale ``t``.

- ``no_rules``: trtqat's quantization plan (Conv, MaxPool, residual Add) with no scale sharing
  (``trtqat quantize --no-rules``);
- ``reference_rules``: the reference tool's plan (no MaxPool quantizer; QuantAdd on Bottlenecks) with
  only the pairs its ``find_quantizer_pairs`` would find (reference-qat-tools.md §4), emulated here on the
  torch model from the data flow of one forward pass: for each Concat, the first quantized conv reading
  its output is the major and, per Concat input, the first quantized conv reading that input is paired to
  it (the exporter merges sibling Q/DQ pairs, so only the first reader of a tensor is ever seen); for each
  MaxPool whose first consumer is a quantized conv, the first quantized conv reading the MaxPool input is
  paired to it; every Bottleneck's ``addop`` inputs take ``cv1``'s input quantizer. Only ``Concat``
  modules are seen: a ``torch.cat`` inside a block (YOLOv5's C3, Ultralytics' C2f/C3k2/C2PSA) is not;
- ``trtqat_rules``: trtqat's default (the family's rules file).

Each variant is calibrated on one batch (scales must be real for the exporter), traced with
``trace_onnx`` and linted with ``trtqat.graph.lint.lint_onnx``. Counted: scale-sharing groups (quantizer
objects reachable under more than one name), activation and weight Q/DQ pairs, and the lint prediction
(standalone Q/DQ, INT8 share of compute layers and of MACs).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from trtqat.demo.fixtures import ALL_FAMILIES

from .common import Config, Workspace, log

VARIANTS = ("no_rules", "reference_rules", "trtqat_rules")
FAMILIES = ALL_FAMILIES  # yolov5, yolov7, yolov8, yolo11, yolo26


def reference_pairs(model: torch.nn.Module, size: int) -> list[tuple[str, str]]:
    """(major, sub) module pairs the reference rules would tie on ``model`` (see module docstring)."""
    from pytorch_quantization import nn as qnn

    names = {m: n for n, m in model.named_modules()}
    events: list[tuple[str, torch.nn.Module, list, torch.Tensor]] = []

    def flat(x):
        if isinstance(x, torch.Tensor):
            return [x]
        if isinstance(x, (list, tuple)):
            return [t for v in x for t in flat(v)]
        return []

    def hook(module, inputs, output):
        events.append((names[module], module, flat(inputs), output))

    def hooked(m) -> bool:  # layers, not the quantizers inside them
        if isinstance(m, qnn.TensorQuantizer):
            return False
        return isinstance(m, (qnn.QuantConv2d, torch.nn.MaxPool2d)) or type(m).__name__ == "Concat" or not any(
            not isinstance(c, qnn.TensorQuantizer) for c in m.children())

    handles = [m.register_forward_hook(hook) for m in model.modules() if hooked(m)]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()

    def is_qconv(module) -> bool:
        return isinstance(module, qnn.QuantConv2d)

    readers: dict[int, list[tuple[str, torch.nn.Module]]] = {}
    for name, module, ins, _ in events:
        for t in ins:
            readers.setdefault(id(t), []).append((name, module))

    def first_qconv(t: torch.Tensor) -> str | None:
        return next((n for n, m in readers.get(id(t), []) if is_qconv(m)), None)

    pairs: list[tuple[str, str]] = []
    for _name, module, ins, out in events:
        kind = type(module).__name__
        if kind == "Concat" and isinstance(out, torch.Tensor):
            major = first_qconv(out)
            if major is None:
                continue
            pairs += [(major, sub) for t in ins if (sub := first_qconv(t)) and sub != major]
        elif isinstance(module, torch.nn.MaxPool2d) and isinstance(out, torch.Tensor):
            consumers = readers.get(id(out), [])
            if not consumers or not is_qconv(consumers[0][1]):
                continue
            major = consumers[0][0]
            pairs += [(major, sub) for t in ins if (sub := first_qconv(t)) and sub != major]
    return pairs


def apply_reference_rules(model: torch.nn.Module, size: int) -> int:
    """Tie the reference pairs and the Bottleneck rule in ``model``; returns the number of pairs."""
    pairs = reference_pairs(model, size)
    for major, sub in pairs:
        model.get_submodule(sub)._input_quantizer = model.get_submodule(major)._input_quantizer
    n = len(pairs)
    for _, module in model.named_modules():
        add = getattr(module, "addop", None)
        if isinstance(add, torch.nn.Module) and hasattr(module, "cv1"):
            q = module.cv1.conv._input_quantizer
            add._input0_quantizer = q
            add._input1_quantizer = q
            n += 1
    return n


def build_variant(ws: Workspace, family: str, variant: str, size: int, images: Path):
    """The calibrated quantized model of ``family`` under ``variant``, and the detected family's label."""
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint
    from trtqat.quant.calibrate import calibrate
    from trtqat.quant.ptq import QuantConfig, prepare_quantized

    ckpt, repo = ws.checkpoint(family)
    loaded = load_checkpoint(ckpt, repo)
    if variant == "reference_rules":
        qconf = QuantConfig(use_rules=False, quantize_maxpool=False)
    else:
        qconf = QuantConfig(use_rules=variant == "trtqat_rules")
    model, _, _, _ = prepare_quantized(loaded, qconf)
    pairs = apply_reference_rules(model, size) if variant == "reference_rules" else None
    calibrate(model, image_stream(images, size, 2, max_batches=1))
    return model, pairs, loaded.family.label


def measure(model, path: Path, size: int) -> dict:
    from trtqat.graph.lint import lint_onnx
    from trtqat.graph.qdq import is_q, is_weight_qdq, load_graph
    from trtqat.quant.onnx_trace import trace_onnx
    from trtqat.quant.quantizers import quantizer_aliases

    trace_onnx(model, path, size=size, head="decoded")
    graph = load_graph(path)
    qs = [n for n in graph.nodes if is_q(n)]
    weight_q = sum(1 for n in qs if is_weight_qdq(n))
    report = lint_onnx(path)
    s = report.summary
    shared = [names for names in quantizer_aliases(model).values() if len(names) > 1]
    standalone = [x.to_dict() for x in report.standalone]
    return {"groups": len(shared), "activation_qdq": len(qs) - weight_q, "weight_qdq": weight_q,
            "standalone_qdq": s["standalone_qdq"], "standalone_q": s["standalone_q"],
            "standalone_dq": s["standalone_dq"], "int8_share": s["int8_share"],
            "int8_share_macs": s["int8_share_macs"], "compute_layers": s["compute_layers"],
            "precision_boundaries": s["precision_boundaries"],
            "standalone_other_than_input": [x["name"] for x in standalone
                                            if not (x["rule_id"] == "LINT001")],
            "standalone": [{k: x[k] for k in ("name", "op", "rule_id")} for x in standalone]}


def run(ws: Workspace, cfg: Config) -> dict:
    images = ws.images(cfg.throughput_images)
    out: dict = {"size": cfg.placement_size, "families": {}, "detected_as": {}}
    ok = True
    with tempfile.TemporaryDirectory(prefix="trtqat-bench-placement-") as tmp:
        for family in FAMILIES:
            fam: dict = {}
            for variant in VARIANTS:
                model, pairs, out["detected_as"][family] = build_variant(ws, family, variant, cfg.placement_size,
                                                                         images)
                fam[variant] = measure(model, Path(tmp) / f"{family}_{variant}.onnx", cfg.placement_size)
                if pairs is not None:
                    fam[variant]["reference_pairs"] = pairs
                log(f"placement {family} {variant}: {fam[variant]['standalone_qdq']} standalone, "
                    f"int8 share {fam[variant]['int8_share']} of layers, {fam[variant]['int8_share_macs']} of MACs")
            ok = ok and not fam["trtqat_rules"]["standalone_other_than_input"]
            out["families"][family] = fam
    out["target_no_standalone_but_input"] = ok
    return out
