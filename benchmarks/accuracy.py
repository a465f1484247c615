"""Accuracy benchmark (``accuracy.json``): what each quantization choice costs in mAP, on trained models.

Why trained fixtures: on random weights every mAP is 0 and nothing can be compared. The committed
reference detectors (:mod:`trtqat.demo.trained`: YOLOv5-, YOLOv7- and Ultralytics YOLOv8-shaped) are
scored on the held-out split of the generated shapes dataset they were trained on (never seen in training,
calibration or QAT), all at 320 px, with the one evaluation path every trtqat command uses (letterbox, NMS,
pycocotools COCO mAP).

Per family, side by side in one run:

* ``float``: the fused float model;
* PTQ with each calibration method (``mse`` (trtqat's default), ``entropy``, ``percentile`` 99.99, ``max``),
  each with label mAP AND label-free fidelity to the float model (mean SQNR over the outputs, agreement mAP:
  the float model's confident detections taken as ground truth), since the two can rank methods differently;
* PTQ without scale sharing (``--no-share``: same placement, every quantizer its own scale): what sharing costs;
* YOLOv5 only: the detect-head rule TQ007 in ``report`` mode (detect convs fully float) against its default
  ``quantize-input``: what TQ007 costs;
* QAT from the default PTQ after a fixed budget (epochs x iterations x batch, stated in the result), last epoch;
* the QAT checkpoint and its exported Q/DQ ONNX (dynamic batch) through ``trtqat eval`` (same images);
* the noise floor of that comparison: the QAT checkpoint's mAP when its input is nudged by Gaussian noise of
  sigma 1e-5 (``NUDGES`` seeds). Any two implementations of the same int8 model (PyTorch fake-quant,
  onnxruntime, TensorRT) round a few values differently, and a sharp detector turns such ulp-level changes
  into moved boxes: the spread of the nudged mAPs says how far apart two correct implementations can land.

Headline keys (mAP@0.5:0.95 points, i.e. x100; positive = worse than the reference; the worse family is the
headline, every family is in the file): ``ptq_map_drop`` (float minus the best PTQ), ``qat_map_drop`` (float
minus QAT), ``onnx_vs_torch_map`` (|ONNX minus torch QAT|), ``rules_map_cost`` (no sharing minus sharing),
``tq007_map_cost`` (TQ007 report minus quantize-input); ``noise_floor_map`` (max minus min of the nudged QAT
mAPs, no target: it is the yardstick of ``onnx_vs_torch_map``). Each family runs in its own child Python (the
YOLOv5/YOLOv7 fake repos both provide a top-level ``models`` package), all at once. The YOLOv8 row has no
TQ007 line (that rule is YOLOv5's detect-input rule; Ultralytics' head output convs and DFL are float by the
family's ignore policy).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from trtqat.demo.trained import TRAINED_FAMILIES

from .common import Config, Workspace, carried_over, chosen_families, log

FAMILIES = TRAINED_FAMILIES  # every committed trained fixture
METHODS = ("mse", "entropy", "percentile", "max")
NUDGES, NUDGE_SIGMA = 3, 1e-5
TARGETS = {"qat_map_drop": 0.5, "onnx_vs_torch_map": 0.2, "rules_map_cost": 0.3, "tq007_map_cost": 0.3}
SHORT = {"mse": "PTQ mse", "entropy": "entropy", "percentile": "percentile", "max": "max",
         "mse_no_share": "no sharing", "mse_tq007_report": "TQ007 report", "qat": "QAT", "eval_qat_onnx": "QAT ONNX"}
HEADLINE_KEYS = ("ptq_map_drop", "qat_map_drop", "onnx_vs_torch_map", "noise_floor_map", "rules_map_cost",
                 "tq007_map_cost")
LABELS = {"ptq_map_drop": "PTQ mAP drop, float - best PTQ", "qat_map_drop": "QAT mAP drop, float - QAT",
          "onnx_vs_torch_map": "|exported QAT ONNX - torch QAT| mAP",
          "noise_floor_map": "noise floor: spread of torch QAT mAP under 1e-5 input nudges",
          "rules_map_cost": "scale sharing cost at PTQ",
          "tq007_map_cost": "TQ007 (YOLOv5 detect inputs) cost at PTQ"}


def settings(cfg: Config) -> dict:
    """Sizes of the run: ``make bench`` or the smoke test's tiny one."""
    if cfg.smoke:
        return {"size": 64, "val": 4, "train": 4, "batch": 2, "calib_batches": 1, "qat_epochs": 1, "qat_iters": 1}
    return {"size": 320, "val": 200, "train": 128, "batch": 8, "calib_batches": 8, "qat_epochs": 10, "qat_iters": 100}


def run(ws: Workspace, cfg: Config) -> dict:
    """Every family at once, each child on its share of the cores (only mAP is measured here, no time)."""
    s = settings(cfg)
    families, failed = {}, {}
    chosen = chosen_families(FAMILIES)
    # each family gets its share of a full run even when fewer run now: the thread count moves int8 roundings
    # (and with them mAP by up to ~0.25 points), so a partial run must measure as the full run did
    threads = str(max(1, (os.cpu_count() or 1) // len(FAMILIES)))
    with tempfile.TemporaryDirectory(prefix="trtqat-acc-") as tmp:
        children = {}
        for family in chosen:
            out = Path(tmp) / f"{family}.json"
            cmd = [sys.executable, "-m", "benchmarks.accuracy", "--family", family, "--out", str(out),
                   "--settings", json.dumps(s)]
            log(f"accuracy: {family} ({s['val']} held-out images at {s['size']} px, {threads} thread(s))")
            children[family] = (out, subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], text=True,
                                                      env={**os.environ, "OMP_NUM_THREADS": threads}))
        for family, (out, proc) in children.items():
            if proc.wait() != 0:  # keep the other family's numbers; the failure is reported, not hidden
                failed[family] = f"child exited {proc.returncode} (traceback above in the log)"
                continue
            families[family] = json.loads(out.read_text())
    if not families:
        raise RuntimeError(f"accuracy failed for every family: {failed}")
    families = {**carried_over("accuracy", set(FAMILIES) - set(chosen)), **families}
    return {"settings": s, "families": families, "failed_families": failed, **headline(families), "targets": TARGETS}


def headline(families: dict) -> dict:
    """The worse family's value of each headline key (points of mAP@0.5:0.95)."""
    out = {}
    for key in HEADLINE_KEYS:
        values = [f[key] for f in families.values() if f.get(key) is not None]
        out[key] = max(values) if values else None
    out["targets_met"] = {k: out[k] is not None and out[k] <= t for k, t in TARGETS.items()}
    return out


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((a - b) * 100, 3)


def measure(family: str, s: dict, work: Path) -> dict:
    """One family, in this (child) process."""
    from trtqat.demo import shapes, trained
    from trtqat.eval.evaluate import EvalConfig, eval_set, evaluate
    from trtqat.eval.fidelity import fidelity_score
    from trtqat.eval.job import EvalJob, run_eval
    from trtqat.quant.export import ExportConfig, export_model
    from trtqat.quant.ptq import CalibConfig, QuantConfig, run_ptq
    from trtqat.quant.qat import QatConfig, train_qat

    ckpt, repo = trained.trained_checkpoint(family, work / "repo")
    data = shapes.write_dataset(work / "shapes", train=s["train"], val=s["val"], seed=0)
    evset = eval_set(data.val_images, EvalConfig(size=s["size"], batch_size=s["batch"]), ann=data.val_json,
                     nc=len(shapes.CLASSES), cache=True)

    def calib(method: str) -> CalibConfig:
        return CalibConfig(calib_dir=data.train_images, size=s["size"], batch_size=s["batch"],
                           calib_batches=s["calib_batches"], method=method)

    def score(result, name: str, reference=None) -> dict:
        """Label mAP and fidelity to the float model: the model's own float self after PTQ (weights unchanged),
        the PTQ model's float self after QAT (QAT changes the weights, so its own float self is no reference)."""
        r = evaluate(result.model, evset, quantized=True, reference=reference or result.model, name=name)
        return {"map": r.map, "map50": r.map50, "sqnr_db": round(fidelity_score(r.fidelity), 3),
                "agreement_map": r.agreement["map"] if r.agreement else None, "detections": r.detections}

    variants = [(m, m, QuantConfig()) for m in METHODS]
    variants.append(("mse_no_share", "mse", QuantConfig(share=False)))
    if family == "yolov5":
        variants.append(("mse_tq007_report", "mse", QuantConfig(rule_overrides=("TQ007=report",))))
    rows, default = {}, None
    for name, method, qconf in variants:
        log(f"accuracy {family}: PTQ {name}")
        res = run_ptq(ckpt, repo=repo, calib=calib(method), qconf=qconf, out=work / f"ptq_{name}.pt")
        if "float" not in rows:
            f = evaluate(res.model, evset, quantized=False, name="float")
            rows["float"] = {"map": f.map, "map50": f.map50, "detections": f.detections}
        rows[name] = score(res, name)
        if name == "mse":
            default = res
    log(f"accuracy {family}: QAT {s['qat_epochs']} x {s['qat_iters']} x {s['batch']}")
    qcfg = QatConfig(epochs=s["qat_epochs"], iters=s["qat_iters"], batch_size=s["batch"], size=s["size"])
    train_files = sorted(data.train_images.glob("*.jpg"))
    # the metadata trtqat quantize writes: the detected family ("ultralytics" for the yolov8 fixture), not the
    # fixture's name
    qat = train_qat(default.model, train_files, work / "qat.pt", qcfg,
                    meta={"family": default.loaded.family.name, "source": str(ckpt), "size": s["size"],
                          "ignore": list(default.ignore)})
    rows["qat"] = score(qat, "qat", reference=default.model)
    log(f"accuracy {family}: export the QAT model and score .pt and .onnx through trtqat eval")
    onnx_path = work / "qat.onnx"
    # verify=False: the quantity measured here is the exported ONNX's own mAP (trtqat eval, below); the
    # export-time verification is covered by tests/export
    export_model(work / "qat.pt", repo, ExportConfig(size=s["size"], save=onnx_path, dynamic=True, verify=False))
    ev = run_eval(EvalJob(models=(work / "qat.pt", onnx_path), val_dir=data.val_images, val_ann=data.val_json,
                          repo=repo, size=s["size"], batch_size=s["batch"]))
    torch_row, onnx_row = ev["rows"]
    rows["eval_qat_pt"] = {"map": torch_row["map"], "map50": torch_row["map50"]}
    rows["eval_qat_onnx"] = {"map": onnx_row["map"], "map50": onnx_row["map50"]}
    log(f"accuracy {family}: noise floor, the QAT checkpoint with its input nudged ({NUDGES} seeds, sigma {NUDGE_SIGMA:g})")
    nudged = [round(torch_row["map"], 5), *nudged_maps(work / "qat.pt", repo, evset)]
    best = max(METHODS, key=lambda m: rows[m]["map"])
    best_fidelity = max(METHODS, key=lambda m: rows[m]["sqnr_db"])
    return {"info": trained.trained_info(family).get("float_eval"), "rows": rows,
            "qat_budget": {"epochs": s["qat_epochs"], "iters": s["qat_iters"], "batch": s["batch"],
                           "lr": f"{qcfg.lr:g}", "amax": "learned" if qcfg.learn_amax else "fixed", "epoch": "last"},
            "best_method_by_map": best, "best_method_by_sqnr": best_fidelity,
            "ptq_map_drop": _points(rows["float"]["map"], rows[best]["map"]),
            "default_ptq_map_drop": _points(rows["float"]["map"], rows["mse"]["map"]),
            "qat_map_drop": _points(rows["float"]["map"], rows["qat"]["map"]),
            "qat_over_ptq": _points(rows["qat"]["map"], rows["mse"]["map"]),
            "onnx_vs_torch_map": abs(_points(onnx_row["map"], torch_row["map"])),
            "nudged_qat_maps": nudged, "noise_floor_map": _points(max(nudged), min(nudged)),
            "rules_map_cost": _points(rows["mse_no_share"]["map"], rows["mse"]["map"]),
            "tq007_map_cost": _points(rows["mse_tq007_report"]["map"], rows["mse"]["map"])
            if "mse_tq007_report" in rows else None}


class _Nudged(torch.nn.Module):
    """``model`` with Gaussian noise of ``sigma`` added to its input (seeded: the same noise every run)."""

    def __init__(self, model, sigma: float, seed: int):
        super().__init__()
        self.model, self.sigma, self.generator = model, sigma, torch.Generator().manual_seed(seed)

    def forward(self, x):
        return self.model(x + self.sigma * torch.randn(x.shape, generator=self.generator).to(x.device))


def nudged_maps(ckpt: Path, repo: Path, evset) -> list[float]:
    """mAP of the checkpoint under ``NUDGES`` seeded input nudges (see the module docstring); its mAP as is
    comes from ``trtqat eval``, run just before."""
    from trtqat.eval.evaluate import evaluate
    from trtqat.eval.layouts import module_hint
    from trtqat.models.checkpoint import torch_load

    obj, _ = torch_load(ckpt, repo)
    model = obj["model"].float().eval()
    # the wrapper hides the detect head the layout is read from: take it from the model itself
    layout = module_hint(model).layout
    return [round(evaluate(_Nudged(model, NUDGE_SIGMA, seed), evset, quantized=True, layout=layout).map, 5)
            for seed in range(NUDGES)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one family of the accuracy benchmark (run by benchmarks.run)")
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--settings", required=True, help="JSON of benchmarks.accuracy.settings()")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"trtqat-acc-{a.family}-") as tmp:
        result = measure(a.family, json.loads(a.settings), Path(tmp))
    a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
