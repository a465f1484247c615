"""Accuracy benchmark (``accuracy.json``): what each quantization choice costs in mAP, on trained models, and
whether the instrument can tell.

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
* QAT from the default PTQ with the default recipe for a fixed budget (epochs x iterations x batch over a
  folder of unlabelled training images, stated in the result), last epoch;
* the QAT checkpoint and its exported Q/DQ ONNX (dynamic batch) through ``trtqat eval`` (same images).

How sure each number is (:mod:`benchmarks.accuracy_stats`): every row carries a 95 % bootstrap interval over
the images, and every difference (each PTQ - float, QAT - float, QAT - best PTQ, ONNX - QAT) a *paired* one.
As each child finishes, its saved artifacts (float, default and best PTQ, QAT, QAT ONNX) are rescored
with ``trtqat eval`` in fresh processes under other kernel settings (reloaded as is, AVX2-only kernels, another
thread count); the spread of each artifact and difference over those runs and the in-memory one is its kernel
spread. A difference is *resolved* only when it exceeds both its interval's half-width and its kernel spread,
and the larger of the two is its noise floor.

Headline keys (mAP@0.5:0.95 points, i.e. x100; positive = worse than the reference; the worse family is the
headline, every family is in the file): ``ptq_map_drop`` (float minus the best PTQ; a *lower* bound: the
fixture must lose accuracy to PTQ as real models do, else QAT has nothing to recover), ``qat_map_drop``
(float minus QAT), ``qat_gain_over_best_ptq`` (QAT minus the best PTQ, with ``qat_gain_resolved``),
``noise_floor_map`` (the largest noise floor of those three differences), ``onnx_vs_torch_map`` (|ONNX minus
the reloaded torch QAT|), ``rules_map_cost`` (no sharing minus sharing), ``tq007_map_cost`` (TQ007 report minus
quantize-input). Each family runs in its own child Python (the YOLOv5/YOLOv7 fake repos both provide a
top-level ``models`` package), all at once. The YOLOv8 row has no TQ007 line (that rule is YOLOv5's
detect-input rule; Ultralytics' head output convs and DFL are float by the family's ignore policy).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from trtqat.demo.trained import TRAINED_FAMILIES

from .accuracy_stats import IN_MEMORY, KERNEL_SETTINGS, artifact_spreads, difference, setting_env
from .common import Config, Workspace, carried_over, chosen_families, log

FAMILIES = TRAINED_FAMILIES  # every committed trained fixture
METHODS = ("mse", "entropy", "percentile", "max")
#: upper bounds (points)
TARGETS = {"qat_map_drop": 0.3, "noise_floor_map": 0.1, "onnx_vs_torch_map": 0.2, "rules_map_cost": 0.3,
           "tq007_map_cost": 0.3}
#: lower bounds (points): what the fixtures must lose to PTQ for QAT to have something to recover
MIN_TARGETS = {"ptq_map_drop": 0.5}
SHORT = {"mse": "PTQ mse", "entropy": "entropy", "percentile": "percentile", "max": "max",
         "mse_no_share": "no sharing", "mse_tq007_report": "TQ007 report", "qat": "QAT", "eval_qat_onnx": "QAT ONNX"}
HEADLINE_KEYS = ("ptq_map_drop", "qat_map_drop", "qat_gain_over_best_ptq", "noise_floor_map", "onnx_vs_torch_map",
                 "rules_map_cost", "tq007_map_cost")
LABELS = {"ptq_map_drop": "PTQ mAP drop, float - best PTQ", "qat_map_drop": "QAT mAP drop, float - QAT",
          "qat_gain_over_best_ptq": "QAT gain, QAT - best PTQ (must exceed the noise floor)",
          "noise_floor_map": "noise floor: larger of bootstrap half-width and kernel spread",
          "onnx_vs_torch_map": "|exported QAT ONNX - torch QAT| mAP",
          "rules_map_cost": "scale sharing cost at PTQ",
          "tq007_map_cost": "TQ007 (YOLOv5 detect inputs) cost at PTQ"}
#: the files the child saves for rescoring, by row name (PTQ rows: ``ptq_<method>.pt``)
ARTIFACTS = {"float": "float.pt", "qat": "qat.pt", "eval_qat_onnx": "qat.onnx"}
#: headline keys that only runs with bootstrap intervals and kernel spreads measure
INTERVAL_KEYS = ("qat_gain_over_best_ptq", "noise_floor_map")
#: the differences behind the headline (``a - b``; ``best`` stands for the best PTQ method by mAP)
HEADLINE_DIFFERENCES = (("best", "float"), ("qat", "float"), ("qat", "best"))


def settings(cfg: Config) -> dict:
    """Sizes of the run: ``make bench`` or the smoke test's tiny one. 1000 held-out images: the paired
    differences' 95 % half-widths measured 0.11-0.17 pt there (0.1 pt needs about 2500-3000, docs/accuracy.md)."""
    if cfg.smoke:
        return {"size": 64, "val": 4, "train": 4, "batch": 2, "calib_batches": 1, "qat_epochs": 1, "qat_iters": 1,
                "bootstrap": 100}
    return {"size": 320, "val": 1000, "train": 1000, "batch": 8, "calib_batches": 8, "qat_epochs": 10,
            "qat_iters": 100, "bootstrap": 1000}


def run(ws: Workspace, cfg: Config) -> dict:
    """Every family at once, each child on its share of the cores; then every family's artifacts rescored under
    each kernel setting (only mAP is measured here, no time)."""
    s = settings(cfg)
    families, failed = {}, {}
    chosen = chosen_families(FAMILIES)
    # each family gets its share of a full run even when fewer run now: the thread count moves int8 roundings
    # (and with them mAP by up to ~0.25 points), so a partial run must measure as the full run did
    threads = max(1, (os.cpu_count() or 1) // len(FAMILIES))
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="trtqat-acc-") as tmp:
        children = {}
        for family in chosen:
            out, work = Path(tmp) / f"{family}.json", Path(tmp) / family
            cmd = [sys.executable, "-m", "benchmarks.accuracy", "--family", family, "--out", str(out),
                   "--settings", json.dumps(s), "--work", str(work)]
            log(f"accuracy: {family} ({s['val']} held-out images at {s['size']} px, {threads} thread(s))")
            children[family] = (out, work, subprocess.Popen(cmd, cwd=root, text=True,
                                                            env={**os.environ, "OMP_NUM_THREADS": str(threads)}))
        # each family is rescored as soon as its own child ends, while the others still run
        with ThreadPoolExecutor(max_workers=len(children)) as pool:
            jobs = {family: pool.submit(_finish, family, *child, s, threads, root)
                    for family, child in children.items()}
            for family, job in jobs.items():
                try:
                    families[family] = job.result()
                except RuntimeError as exc:  # keep the other family's numbers; the failure is reported, not hidden
                    failed[family] = str(exc)
    if not families:
        raise RuntimeError(f"accuracy failed for every family: {failed}")
    families = {**carried_over("accuracy", set(FAMILIES) - set(chosen)), **families}
    return {"settings": s, "kernel_settings": {k: v or "(see accuracy_stats)" for k, v in KERNEL_SETTINGS.items()},
            "families": families, "failed_families": failed, **headline(families), "targets": TARGETS,
            "min_targets": MIN_TARGETS}


def _finish(family: str, out: Path, work: Path, proc: subprocess.Popen, s: dict, threads: int, root: Path) -> dict:
    """Wait for ``family``'s child, rescore its artifacts under every kernel setting, summarize."""
    if proc.wait() != 0:
        raise RuntimeError(f"child exited {proc.returncode} (traceback above in the log)")
    result = json.loads(out.read_text())
    for name in KERNEL_SETTINGS:
        log(f"accuracy {family}: rescoring the artifacts ({name})")
        result["kernel_runs"][name] = rescore(work, result, s, setting_env(name, os.environ, threads), root)
    return summarize(result)


def _artifact_files(result: dict) -> dict[str, str]:
    """Row name -> file name of the rescored artifacts."""
    best = result["best_method_by_map"]
    return {"float": ARTIFACTS["float"], **{m: f"ptq_{m}.pt" for m in dict.fromkeys(("mse", best))},
            "qat": ARTIFACTS["qat"], "eval_qat_onnx": ARTIFACTS["eval_qat_onnx"]}


def rescore(work: Path, result: dict, s: dict, env: dict, root: Path) -> dict[str, float]:
    """The saved artifacts' mAP points from ``trtqat eval --json`` in a fresh process under ``env``."""
    files = _artifact_files(result)
    cmd = [sys.executable, "-m", "trtqat", "eval", *(str(work / "artifacts" / f) for f in files.values()),
           "--val", str(work / "shapes" / "images" / "val"), "--val-ann", str(work / "shapes" / "val.json"),
           "--repo", str(work / "repo"), "--size", str(s["size"]), "--batch-size", str(s["batch"]), "--json"]
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"rescoring failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    rows = json.loads(out.stdout)["rows"]
    return {name: round(100 * row["map"], 4) for name, row in zip(files, rows)}


def summarize(result: dict) -> dict:
    """Differences, kernel spreads, resolution and the family's headline keys from a child's result and the
    rescoring runs (points of mAP@0.5:0.95)."""
    rows, runs, best = result["rows"], result["kernel_runs"], result["best_method_by_map"]
    for name, value in artifact_spreads(runs).items():
        rows[name]["kernel_spread"] = value
    diffs = {}
    for key, interval in result["intervals"].items():
        a, b = key.split(" - ")
        diffs[key] = difference(a, b, interval, runs)
    diffs["eval_qat_onnx - qat"] = difference("eval_qat_onnx", "qat", result["onnx_interval"],
                                              {k: v for k, v in runs.items() if k != IN_MEMORY})
    headline_diffs = [diffs[f"{a.replace('best', best)} - {b.replace('best', best)}"] for a, b in HEADLINE_DIFFERENCES]
    ptq, qat, gain = headline_diffs
    return {**result, "differences": diffs,
            "ptq_map_drop": round(-ptq["value"], 3), "default_ptq_map_drop": _points(rows["float"]["map"],
                                                                                     rows["mse"]["map"]),
            "qat_map_drop": round(-qat["value"], 3), "qat_gain_over_best_ptq": round(gain["value"], 3),
            "qat_gain_resolved": gain["resolved"] and gain["value"] > 0,
            "qat_over_ptq": _points(rows["qat"]["map"], rows["mse"]["map"]),
            "noise_floor_map": max(d["noise_floor"] for d in headline_diffs),
            "onnx_vs_torch_map": abs(diffs["eval_qat_onnx - qat"]["value"]),
            "rules_map_cost": _points(rows["mse_no_share"]["map"], rows["mse"]["map"]),
            "tq007_map_cost": _points(rows["mse_tq007_report"]["map"], rows["mse"]["map"])
            if "mse_tq007_report" in rows else None}


def headline(families: dict) -> dict:
    """The worse family's value of each headline key (points of mAP@0.5:0.95): the largest for upper bounds,
    the smallest for ``ptq_map_drop`` and ``qat_gain_over_best_ptq``."""
    out = {}
    for key in HEADLINE_KEYS:
        # a family carried over from a run before the intervals had a nudge spread under noise_floor_map: not
        # the same quantity, so only families with paired differences count for the keys built on them
        values = [f[key] for f in families.values() if f.get(key) is not None
                  and (key not in INTERVAL_KEYS or "differences" in f)]
        worst = min if key in MIN_TARGETS or key == "qat_gain_over_best_ptq" else max
        out[key] = worst(values) if values else None
    # None: no family measured the key (TQ007 is YOLOv5's alone)
    met = {k: None if out[k] is None else out[k] <= t for k, t in TARGETS.items()}
    met.update({k: None if out[k] is None else out[k] >= t for k, t in MIN_TARGETS.items()})
    met["qat_gain_resolved"] = bool(families) and all(f.get("qat_gain_resolved") for f in families.values())
    out["targets_met"] = met
    return out


def _points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((a - b) * 100, 3)


def measure(family: str, s: dict, work: Path) -> dict:
    """One family, in this (child) process. ``work`` keeps what the parent rescores under other kernel
    settings: the dataset, the fake repo and ``artifacts/`` (float, best PTQ, default PTQ, QAT, QAT ONNX)."""
    from trtqat.demo import shapes, trained
    from trtqat.eval.bootstrap import bootstrap
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
    art = work / "artifacts"
    art.mkdir(exist_ok=True)
    shutil.copy(ckpt, art / ARTIFACTS["float"])
    tables = {}

    def calib(method: str) -> CalibConfig:
        return CalibConfig(calib_dir=data.train_images, size=s["size"], batch_size=s["batch"],
                           calib_batches=s["calib_batches"], method=method)

    def score(result, name: str, reference=None) -> dict:
        """Label mAP and fidelity to the float model: the model's own float self after PTQ (weights unchanged),
        the PTQ model's float self after QAT (QAT changes the weights, so its own float self is no reference)."""
        r = evaluate(result.model, evset, quantized=True, reference=reference or result.model, name=name)
        tables[name] = r.match_table(evset)
        return {"map": r.map, "map50": r.map50, "sqnr_db": round(fidelity_score(r.fidelity), 3),
                "agreement_map": r.agreement["map"] if r.agreement else None, "detections": r.detections}

    variants = [(m, m, QuantConfig()) for m in METHODS]
    variants.append(("mse_no_share", "mse", QuantConfig(share=False)))
    if family == "yolov5":
        variants.append(("mse_tq007_report", "mse", QuantConfig(rule_overrides=("TQ007=report",))))
    rows, default = {}, None
    for name, method, qconf in variants:
        log(f"accuracy {family}: PTQ {name}")
        res = run_ptq(ckpt, repo=repo, calib=calib(method), qconf=qconf, out=art / f"ptq_{name}.pt")
        if "float" not in rows:
            f = evaluate(res.model, evset, quantized=False, name="float")
            tables["float"] = f.match_table(evset)
            rows["float"] = {"map": f.map, "map50": f.map50, "detections": f.detections}
        rows[name] = score(res, name)
        if name == "mse":
            default = res
    best = max(METHODS, key=lambda m: rows[m]["map"])
    best_fidelity = max(METHODS, key=lambda m: rows[m]["sqnr_db"])
    for name, *_ in variants:  # only the default and the best PTQ are rescored
        if name not in ("mse", best):
            (art / f"ptq_{name}.pt").unlink()
    log(f"accuracy {family}: QAT {s['qat_epochs']} x {s['qat_iters']} x {s['batch']} on {s['train']} images")
    qcfg = QatConfig(epochs=s["qat_epochs"], iters=s["qat_iters"], batch_size=s["batch"], size=s["size"])
    train_files = sorted(data.train_images.glob("*.jpg"))
    # the metadata trtqat quantize writes: the detected family ("ultralytics" for the yolov8 fixture), not the
    # fixture's name
    qat = train_qat(default.model, train_files, art / ARTIFACTS["qat"], qcfg,
                    meta={"family": default.loaded.family.name, "source": str(ckpt), "size": s["size"],
                          "ignore": list(default.ignore)})
    rows["qat"] = score(qat, "qat", reference=default.model)
    log(f"accuracy {family}: export the QAT model and score .pt and .onnx through trtqat eval")
    onnx_path = art / ARTIFACTS["eval_qat_onnx"]
    # verify=False: the quantity measured here is the exported ONNX's own mAP (trtqat eval, below); the
    # export-time verification is covered by tests/export
    export_model(art / ARTIFACTS["qat"], repo, ExportConfig(size=s["size"], save=onnx_path, dynamic=True,
                                                            verify=False))
    ev = run_eval(EvalJob(models=(art / ARTIFACTS["qat"], onnx_path), val_dir=data.val_images,
                          val_ann=data.val_json, repo=repo, size=s["size"], batch_size=s["batch"],
                          bootstrap=s["bootstrap"]))
    torch_row, onnx_row = ev["rows"]
    rows["eval_qat_pt"] = {"map": torch_row["map"], "map50": torch_row["map50"]}
    rows["eval_qat_onnx"] = {"map": onnx_row["map"], "map50": onnx_row["map50"]}
    log(f"accuracy {family}: bootstrap intervals ({s['bootstrap']} resamples of {s['val']} images)")
    pairs = [(m, "float") for m in rows if m in tables and m != "float"] + [("qat", best)]
    if best != "mse":
        pairs.append(("qat", "mse"))
    boot = bootstrap(tables, pairs=pairs, samples=s["bootstrap"])
    for name, interval in boot["artifacts"].items():
        rows[name]["interval"] = [round(interval.low, 4), round(interval.high, 4)]
    onnx_diff = next(iter(ev["bootstrap"]["differences"].values()))
    return {"info": trained.trained_info(family).get("float_eval"), "rows": rows,
            "qat_budget": {"epochs": s["qat_epochs"], "iters": s["qat_iters"], "batch": s["batch"],
                           "images": s["train"], "lr": f"{qcfg.lr:g}",
                           "amax": "learned" if qcfg.learn_amax else "fixed", "epoch": "last"},
            "best_method_by_map": best, "best_method_by_sqnr": best_fidelity,
            "intervals": {k: v.to_dict() for k, v in boot["differences"].items()},
            "onnx_interval": onnx_diff,
            # the in-memory run of the rescored artifacts (the parent adds the reloads under other kernels)
            "kernel_runs": {IN_MEMORY: {n: round(100 * rows[n]["map"], 4)
                                        for n in ("float", "mse", best, "qat", "eval_qat_onnx")}},
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="one family of the accuracy benchmark (run by benchmarks.run)")
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--settings", required=True, help="JSON of benchmarks.accuracy.settings()")
    p.add_argument("--work", type=Path, required=True, help="folder kept for the parent's rescoring runs")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    result = measure(a.family, json.loads(a.settings), a.work)
    a.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
