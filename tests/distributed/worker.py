"""One rank of a multi-process test (``python worker.py MODE SPEC_JSON``); writes ``<out>/rank<R>.pt``.

Modes:
- ``calib``: prepare the fixture, collect histograms (sharded under torchrun variables), merge, then the
  amax of each method in ``methods``: saves histograms, amax and the global batch/image counts.
- ``qat``: PTQ (``max`` calibration) then ``train_qat`` with a scorer that only rank 0 may call; saves the
  final student's state dict, the amax table, the history and the best epoch.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def calib(spec: dict) -> dict:
    from trtqat.data.images import image_stream
    from trtqat.models import load_checkpoint
    from trtqat.quant.calibrate import collect_statistics, compute_amax
    from trtqat.quant.distributed import dist_env, init_process_group
    from trtqat.quant.member_histograms import member_histograms
    from trtqat.quant.ptq import QuantConfig, prepare_quantized
    from trtqat.quant.sharded_calibration import activation_calibrators, collect_sharded

    env = dist_env()
    init_process_group(env)
    model, _, _, _ = prepare_quantized(load_checkpoint(spec["ckpt"], spec["repo"]), QuantConfig())
    stream = image_stream(spec["calib"], spec["size"], spec["batch"], spec.get("batches"))
    with member_histograms(model) as shared:  # shared quantizers' members are binned and merged too
        if env.distributed:
            batches, images, _ = collect_sharded(model, stream, env, collect_statistics, "cpu")
        else:
            batches, images = collect_statistics(model, stream, "cpu")
        hist = {}
        for name, cal in activation_calibrators(model):
            counts, edges = cal.histogram()
            hist[name] = (counts.copy(), edges.copy(), cal.max_seen)
        amax = {m: compute_amax(model, m, env=env)[0] for m in spec["methods"]}
    return {"hist": hist, "amax": amax, "batches": batches, "images": images, "shared": shared}


def qat(spec: dict) -> dict:
    import torch

    from trtqat.data.images import find_images
    from trtqat.quant.checkpoint import amax_table
    from trtqat.quant.distributed import dist_env
    from trtqat.quant.ptq import CalibConfig, run_ptq
    from trtqat.quant.qat import QatConfig, train_qat

    env = dist_env()
    ptq = run_ptq(spec["ckpt"], repo=spec["repo"], calib=CalibConfig(
        calib_dir=spec["calib"], size=spec["size"], batch_size=2, calib_batches=2, method="max"))
    scores = spec["scores"]

    def scorer(student, teacher):
        if not env.is_main:
            raise AssertionError("only rank 0 scores epochs")
        calls.append(1)
        return scores[len(calls) - 1], {}

    calls: list = []
    cfg = QatConfig(epochs=len(scores), iters=spec["iters"], batch_size=spec["batch"], size=spec["size"],
                    lr=spec["lr"], flip=True, seed=3)
    res = train_qat(ptq.model, find_images(spec["train"]), Path(spec["out"]) / "qat.pt", cfg, scorer=scorer,
                    repo=spec["repo"])
    # the last epoch's student: rank 0 wrote it to the state file; the others return it (they keep no best)
    last = (torch.load(res.paths.state, map_location="cpu", weights_only=False)["model"] if env.is_main
            else {k: v.clone() for k, v in res.model.state_dict().items()})
    return {"state": last, "ptq_amax": amax_table(ptq.model), "history": res.history, "best_epoch": res.best_epoch,
            "scored": len(calls)}


def main() -> None:
    import torch

    from trtqat.quant.distributed import dist_env

    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    out = {"calib": calib, "qat": qat}[mode](spec)
    rank = dist_env().rank
    tag = spec.get("tag", f"rank{rank}")
    torch.save(out, Path(spec["out"]) / f"{tag}.pt")


if __name__ == "__main__":
    main()
