"""``make bench``: run every benchmark, write ``benchmarks/results/*.json`` and the README table.

Usage: ``python -m benchmarks.run [--smoke] [--only NAME ...] [--out DIR] [--no-readme]``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import accuracy, amax_search, export_bench, peers, placement, ptq, qat_step, scaleout, throughput
from .common import RESULTS_DIR, Config, Workspace, log, machine_info, rnd, write_result

#: result name -> module with run(ws, cfg); the order is the order of execution
BENCHMARKS = {"amax_search": amax_search, "ptq": ptq, "calib_throughput": throughput, "qat_step": qat_step,
              "placement": placement, "export": export_bench, "scaleout": scaleout, "peers": peers,
              "accuracy": accuracy}
HEADLINE = ("mse_speedup", "ptq_speedup", "ptq_over_floor", "qat_step_speedup")
README = Path(__file__).resolve().parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def run_all(cfg: Config, out_dir: Path = RESULTS_DIR, only: list[str] | None = None,
            ws: Workspace | None = None, readme: Path | None = README) -> dict:
    """Run the benchmarks (all, or ``only``); returns the summary (also written to ``summary.json``)."""
    import torch

    results: dict[str, dict] = {}
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    if cfg.threads:  # tiny runs: one thread avoids per-op waits for a busy second core
        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="trtqat-bench-") as tmp:
        ws = ws or Workspace(Path(tmp))
        for name, module in BENCHMARKS.items():
            if only and name not in only:
                continue
            log(f"--- {name}")
            t = time.perf_counter()
            try:
                res = module.run(ws, cfg)
            except Exception as exc:  # one failing benchmark must not lose the others' results
                errors[name] = f"{type(exc).__name__}: {exc}"
                log(traceback.format_exc())
                continue
            res["seconds_benchmark"] = time.perf_counter() - t
            write_result(name, res, cfg, out_dir)
            results[name] = res
    torch.set_num_threads(threads)
    if only:  # a partial run: the summary and table keep the last committed result of every other benchmark
        for name in BENCHMARKS:
            if name not in results and name not in errors and (out_dir / f"{name}.json").is_file():
                results[name] = json.loads((out_dir / f"{name}.json").read_text())
    summary = build_summary(results, errors, cfg, time.perf_counter() - t0)
    if only:
        summary["measured_now"] = list(only)
    write_result("summary", summary, cfg, out_dir)
    if readme is not None:
        update_readme(readme, summary)
    return summary


def _get(results: dict, name: str, *path):
    cur = results.get(name)
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def build_summary(results: dict, errors: dict, cfg: Config, seconds: float) -> dict:
    s = {"mse_speedup": _get(results, "amax_search", "mse_speedup"),
         "ptq_speedup": _get(results, "ptq", "ptq_speedup"),
         "ptq_over_floor": _get(results, "ptq", "ptq_over_floor"),
         "qat_step_speedup": _get(results, "qat_step", "qat_step_speedup"),
         "targets": {"mse_speedup": ">= 20", "ptq_speedup": ">= 1.6", "ptq_over_floor": "<= 1.3",
                     "qat_step_speedup": ">= 1.0"},
         "details": {
             "amax_same_within_one_bin": {m: _get(results, "amax_search", "methods", m, "within_one_bin")
                                          for m in ("mse", "entropy", "percentile")},
             "amax_speedup": {m: _get(results, "amax_search", "methods", m, "speedup")
                              for m in ("mse", "entropy", "percentile")},
             "ptq_seconds": _get(results, "ptq", "seconds"),
             "ptq_amax_within_one_bin": _get(results, "ptq", "amax_agreement", "within_one_bin"),
             "ptq_peak_rss_mib": _get(results, "ptq", "peak_rss_mib"),
             "ptq_over_tuned_floor": _get(results, "ptq", "ptq_over_tuned_floor"),
             "qat_seconds_per_step": _get(results, "qat_step", "seconds_per_step"),
             "scaleout_2_over_1": {k: _get(results, "scaleout", f"{k}_speedup_2_over_1") for k in ("calib", "qat_step")},
             "calib_images_per_s": {f: _get(results, "calib_throughput", "families", f, "cpu", "images_per_s")
                                    for f in ("yolov5", "yolov7")},
             "placement": {f: {v: {k: _get(results, "placement", "families", f, v, k)
                                   for k in ("groups", "activation_qdq", "standalone_qdq", "int8_share",
                                             "int8_share_macs")}
                               for v in placement.VARIANTS}
                           for f in (_get(results, "placement", "families") or {})},
             "placement_target_met": _get(results, "placement", "target_no_standalone_but_input"),
             "export": {f: {k: _get(results, "export", "families", f, k)
                            for k in ("seconds", "passed", "worst_cosine", "worst_max_abs")}
                        for f in ("yolov5", "yolov7")},
             "peers": results.get("peers")},
         "accuracy": {**{k: _get(results, "accuracy", k) for k in (*accuracy.HEADLINE_KEYS, "targets_met")},
                      "families": {f: {"rows": {n: {"map": r["map"]} for n, r in v["rows"].items()},
                                       "best_method_by_map": v["best_method_by_map"],
                                       "best_method_by_sqnr": v["best_method_by_sqnr"]}
                                   for f, v in (_get(results, "accuracy", "families") or {}).items()}},
         "errors": errors, "seconds_total": seconds}
    return s


def _fmt(x, nd: int = 2, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{nd}f}{suffix}"
    return f"{x}{suffix}"


def table(summary: dict) -> str:
    """The Markdown table between the README markers."""
    d = summary["details"]
    m = summary.get("machine") or machine_info()  # the run's machine, also when the table is regenerated later
    rows = [("MSE amax search, trtqat vs pytorch-quantization (all quantizers, YOLOv7 fixture)",
             _fmt(summary["mse_speedup"], 1, "x"), ">= 20x"),
            ("entropy / percentile amax search (entropy on a subset)",
             f"{_fmt(d['amax_speedup']['entropy'], 1, 'x')} / {_fmt(d['amax_speedup']['percentile'], 2, 'x')}", ""),
            ("amax equal within one bin (mse / entropy / percentile)",
             " / ".join(_fmt(d["amax_same_within_one_bin"][k]) for k in ("mse", "entropy", "percentile")), "yes"),
            ("PTQ wall time, reference flow / trtqat (YOLOv7 fixture, 640 px)", _fmt(summary["ptq_speedup"], 2, "x"),
             ">= 1.6x"),
            ("PTQ wall time, trtqat / float forward floor", _fmt(summary["ptq_over_floor"], 2, "x"), "<= 1.3x"),
            ("PTQ amax equal to the reference flow's (within one bin)", _fmt(d["ptq_amax_within_one_bin"]), "yes"),
            ("QAT step, reference / trtqat", _fmt(summary["qat_step_speedup"], 2, "x"), ">= 1.0x")]
    so = d.get("scaleout_2_over_1") or {}
    rows.append(("scale-out, 1 / 2 processes on the same CPU cores (gloo): calibration, QAT step",
                 f"{_fmt(so.get('calib'), 2, 'x')}, {_fmt(so.get('qat_step'), 2, 'x')}", ""))
    sec = d.get("ptq_seconds") or {}
    if sec:
        rows.append(("PTQ seconds: floor / tuned floor / trtqat / reference",
                     " / ".join(_fmt(sec.get(k), 1) for k in ("floor", "floor_tuned", "trtqat", "reference")), ""))
    if d.get("ptq_over_tuned_floor") is not None:
        rows.append(("PTQ wall time, trtqat / floor under trtqat's process settings (allocator, channels-last)",
                     _fmt(d["ptq_over_tuned_floor"], 2, "x"), ""))
    rss = d.get("ptq_peak_rss_mib") or {}
    if rss:
        rows.append(("PTQ peak RSS MiB: floor / tuned floor / trtqat / reference",
                     " / ".join(_fmt(rss.get(k), 0) for k in ("floor", "floor_tuned", "trtqat", "reference")), ""))
    for fam in ("yolov5", "yolov7"):
        ips = d["calib_images_per_s"].get(fam) or {}
        rows.append((f"calibration images/s {fam} (CPU, batch 8): trtqat / reference / float forward",
                     " / ".join(_fmt(ips.get(k), 2) for k in ("trtqat", "reference", "float_forward")), ""))
    rows += placement_rows(d["placement"])
    for fam in ("yolov5", "yolov7"):
        e = d["export"][fam]
        rows.append((f"export {fam} (random-weight fixture): seconds, ORT verification passed, worst box cosine",
                     f"{_fmt(e['seconds'], 1)}, {_fmt(e['passed'])}, {_fmt(e['worst_cosine'], 5)}", ""))
    rows += peers_rows(d.get("peers"))
    rows += accuracy_rows(summary.get("accuracy"))
    lines = ["| measure | result | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append("")
    lines.append(f"Measured on {m['processor']}, {m['cpu_usable']} usable CPU cores, torch {m['torch']}, "
                 f"pytorch-quantization {m['pytorch_quantization']}, device {m['device']}; "
                 f"1-min load average at the end {m['loadavg_1m']}; total {summary['seconds_total']:.0f} s.")
    if summary.get("measured_now"):
        lines.append(f"Partial run (`--only {' '.join(summary['measured_now'])}`): only those rows were measured "
                     "now (the line above is theirs); every other row is the last committed result of its benchmark, "
                     "with its own machine block in `benchmarks/results/<name>.json`.")
    if summary.get("errors"):
        lines.append("")
        lines.append("Failed benchmarks: " + "; ".join(f"{k}: {v}" for k, v in summary["errors"].items()))
    return "\n".join(lines)


def placement_rows(p: dict) -> list[tuple[str, str, str]]:
    """Per family (benchmarks/placement.py): standalone Q/DQ under the three placements, then scale groups and
    the INT8 share of compute layers and of MACs (older results have no MAC share: n/a)."""
    rows = []
    for fam, v in p.items():
        rows.append((f"standalone Q/DQ {fam}: no rules / reference rules / trtqat rules",
                     " / ".join(_fmt(v[k]["standalone_qdq"]) for k in placement.VARIANTS), "1 (input)"))
        rows.append((f"scale groups, INT8 share of layers, of MACs {fam}: no rules / reference / trtqat",
                     " / ".join(f"{_fmt(v[k]['groups'])}, {_fmt(v[k]['int8_share'], 3)}, "
                                f"{_fmt(v[k].get('int8_share_macs'), 3)}" for k in placement.VARIANTS), ""))
    return rows


#: the peers benchmark's variants as the README table names them
PEER_LABELS = {"modelopt": "ONNX PTQ", "modelopt+optimize": "+ trtqat optimize",
               "modelopt+optimize --calib": "+ optimize --calib",
               "modelopt+optimize --calib --recalibrate all": "+ --recalibrate all", "trtqat": "trtqat"}


def peers_rows(p: dict | None) -> list[tuple[str, str, str]]:
    """ModelOpt ONNX PTQ / + trtqat optimize / + optimize --calib / + --recalibrate all / trtqat
    (benchmarks/peers.py; runs before the last column existed have four)."""
    if not p:
        return []
    if p.get("skipped"):
        return [("ModelOpt ONNX PTQ vs trtqat optimize (benchmarks/peers.py)", p["skipped"], "")]
    out = []
    for fam, r in p.get("families", {}).items():
        v = r["variants"]
        keys = [k for k in ("modelopt", "modelopt+optimize", "modelopt+optimize --calib",
                            "modelopt+optimize --calib --recalibrate all", "trtqat") if k in v]  # older runs: 4
        names = " / ".join(PEER_LABELS[k] for k in keys)
        out.append((f"{fam}: standalone Q/DQ, ModelOpt {p.get('modelopt_version', '')} {names}",
                    " / ".join(_fmt(v[k]["standalone_qdq"]) for k in keys), "1 (input)"))
        out.append((f"{fam}: mAP@0.5:0.95 float / the {len(keys)} above", " / ".join(_fmt(v[k]["map"], 4)
                                                                               for k in ("float", *keys)), ""))
        ort = [k for k in ("onnxruntime", "onnxruntime+optimize --calib") if k in v]  # the Ultralytics family
        if ort:
            out.append((f"{fam}: standalone Q/DQ, INT8 MAC share, mAP@0.5:0.95, onnxruntime "
                        f"{p.get('onnxruntime_version', '')} quantize_static defaults / + optimize --calib",
                        " / ".join(f"{_fmt(v[k]['standalone_qdq'])}, {_fmt(v[k]['int8_share_macs'], 3)}, "
                                   f"{_fmt(v[k]['map'], 4)}" for k in ort), "1 (input)"))
    return out


def accuracy_rows(a: dict | None) -> list[tuple[str, str, str]]:
    """Headline accuracy keys (benchmarks/accuracy.py), then per family float / PTQ methods / QAT / ONNX mAP with
    their 95 % intervals, and the differences behind the headline with their noise floors."""
    if not a or a.get("qat_map_drop") is None:
        return []

    def target(k: str) -> str:
        if k in accuracy.TARGETS:
            return f"<= {accuracy.TARGETS[k]}"
        if k in accuracy.MIN_TARGETS:
            return f">= {accuracy.MIN_TARGETS[k]}"
        return "> noise floor" if k == "qat_gain_over_best_ptq" else ""

    rows = [(f"{accuracy.LABELS[k]} (mAP@0.5:0.95 points, worse family)", _fmt(a.get(k), 2), target(k))
            for k in accuracy.HEADLINE_KEYS]
    names = ("float", *accuracy.METHODS, "mse_no_share", "mse_tq007_report", "qat", "eval_qat_onnx")
    for fam, r in a.get("families", {}).items():
        v = r["rows"]
        shown = [n for n in names if n in v]
        rows.append((f"{fam} mAP@0.5:0.95: {' / '.join(accuracy.SHORT.get(n, n) for n in shown)}",
                     " / ".join(_fmt(100 * v[n]["map"], 2) + _interval(v[n].get("interval")) for n in shown),
                     f"best PTQ by mAP {r['best_method_by_map']}, by SQNR {r['best_method_by_sqnr']}"))
        for key, d in r.get("differences", {}).items():
            if key.split(" - ")[0] in ("qat", r["best_method_by_map"], "eval_qat_onnx") and (
                    key.startswith(("qat", "eval_qat_onnx")) or key.endswith("float")):
                rows.append((f"{fam} {key.replace('eval_qat_onnx', 'ONNX')} (points)",
                             f"{d['value']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}], kernels {d['kernel_spread']:.2f}",
                             "resolved" if d["resolved"] else f"not resolved (floor {d['noise_floor']:.2f})"))
    return rows


def _interval(iv) -> str:
    """`` [low, high]`` of a row's 95 % interval (points), or nothing for rows measured before intervals."""
    return f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else ""


def update_readme(path: Path, summary: dict) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip() + f"\n\n{START}\n{END}\n"
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{table(summary)}\n{END}", text,
                 flags=re.S)
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (what the test suite runs)")
    ap.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these benchmarks")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = ap.parse_args(argv)
    cfg = Config.smoke_config() if args.smoke else Config.full()
    summary = run_all(cfg, args.out, args.only, readme=None if args.no_readme else README)
    print(json.dumps(rnd({k: summary[k] for k in HEADLINE}), indent=2))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
