"""Two real processes (gloo on CPU, torchrun's variables) against one process on the same data.

Each test starts the two ranks and the single-process reference at once (three Pythons), so its wall
time is about one run.
"""
import mp_launch as launch
import numpy as np
import pytest
import torch

SIZE = 64


@pytest.fixture(scope="module")
def calibrated(yolo_checkpoint, calib_images, tmp_path_factory):
    """Histograms and amax of 2 ranks (4 global batches of 2 images dealt out) and of one process."""
    ckpt, repo = yolo_checkpoint("yolov5")
    out = tmp_path_factory.mktemp("calib")
    spec = {"ckpt": ckpt, "repo": repo, "calib": calib_images, "size": SIZE, "batch": 2, "batches": None,
            "out": out, "methods": ["percentile", "max", "mse"]}
    procs = launch.start([launch.worker("calib", spec)] * 2) + [launch.single(launch.worker("calib", {**spec, "tag": "single"}))]
    for ran in launch.wait(procs):
        assert ran.returncode == 0, ran.stderr[-2000:]
    return [torch.load(out / f"{tag}.pt", weights_only=False) for tag in ("rank0", "rank1", "single")]


def test_ranks_merge_to_the_single_process_histograms(calibrated):
    r0, r1, single = calibrated
    assert (r0["batches"], r0["images"]) == (single["batches"], single["images"]) == (4, 8)
    moved = total = 0
    for name, (counts, edges, max_seen) in single["hist"].items():
        c0, e0, m0 = r0["hist"][name]
        c1, e1, m1 = r1["hist"][name]
        assert np.array_equal(c0, c1) and np.array_equal(e0, e1) and m0 == m1, name  # every rank the same
        assert np.array_equal(e0, edges) and len(c0) == len(counts), name  # the same grid as one process
        assert m0 == max_seen and c0.sum() == counts.sum(), name  # exact integer counts, nothing lost
        diff = c0.astype(np.int64) - counts
        moved += int(np.abs(diff).sum()) // 2
        total += int(counts.sum())
        # values on a bin boundary may land one bin over (float rounding of x * bins / top), never further
        assert np.abs(np.cumsum(diff)).max() <= np.abs(diff).sum() // 2, name
    assert moved <= total * 1e-5, (moved, total)
    # the shared quantizers' per-member histograms (balanced MSE amax) are merged like the others
    assert r0["shared"] == single["shared"] > 0 and sum("@" in name for name in single["hist"]) >= 2 * single["shared"]


def test_every_rank_loads_the_single_process_amax(calibrated):
    r0, r1, single = calibrated
    for method in ("percentile", "max", "mse"):
        assert r0["amax"][method] == r1["amax"][method]  # bit-equal on every rank
        for name, value in single["amax"][method].items():
            width = float(single["hist"][name][1][1])  # one bin
            assert abs(r0["amax"][method][name] - value) <= width, (method, name)
    assert r0["amax"]["max"] == single["amax"]["max"]  # max of maxima: bit-equal to one process


def test_qat_ranks_stay_in_lockstep_and_match_one_process(yolo_checkpoint, calib_images, tmp_path):
    """2 ranks x batch 1 vs 1 process x batch 2 (the same global batches), 3 epochs of 2 steps."""
    ckpt, repo = yolo_checkpoint("yolov5")
    spec = {"ckpt": ckpt, "repo": repo, "calib": calib_images, "train": calib_images, "size": SIZE, "batch": 1,
            "iters": 2, "lr": 1e-4, "scores": [3.0, 5.0, 4.0], "out": tmp_path / "ddp"}
    (tmp_path / "ddp").mkdir(), (tmp_path / "one").mkdir()
    procs = launch.start([launch.worker("qat", spec)] * 2)
    procs.append(launch.single(launch.worker("qat", {**spec, "batch": 2, "out": tmp_path / "one", "tag": "single"})))
    for ran in launch.wait(procs):
        assert ran.returncode == 0, ran.stderr[-2000:]
    r0, r1, single = (torch.load(p, weights_only=False) for p in
                      (tmp_path / "ddp" / "rank0.pt", tmp_path / "ddp" / "rank1.pt", tmp_path / "one" / "single.pt"))
    # lockstep: identical parameters and amax buffers on both ranks after 6 steps (and checked every epoch)
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert all(rec["lockstep"] for rec in r0["history"] + r1["history"])
    # the best epoch is chosen once (rank 0 scored, rank 1 never did) and broadcast
    assert (r0["scored"], r1["scored"]) == (3, 0)
    assert r0["best_epoch"] == r1["best_epoch"] == 1
    assert [(h["score"], h["best"]) for h in r1["history"]] == [(3.0, True), (5.0, True), (4.0, False)]
    # rank 0 wrote the files, atomically (no temporary file left)
    names = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert names == ["qat.last.pt", "qat.pt", "qat.state.pt", "rank0.pt", "rank1.pt"]
    # the same global batch in one process: the same losses and (up to float rounding) the same updates
    assert [h["loss"] for h in r0["history"]] == pytest.approx([h["loss"] for h in single["history"]], rel=1e-5)
    teacher = torch.load(tmp_path / "ddp" / "qat.state.pt", weights_only=False)["teacher"]
    num = den = 0.0
    for k, v in teacher.items():
        if v.is_floating_point():
            a, b = r0["state"][k].float() - v.float(), single["state"][k].float() - v.float()
            num, den = num + float((a - b).norm() ** 2), den + float(b.norm() ** 2)
    assert den > 0 and (num / den) ** 0.5 < 1e-2, (num / den) ** 0.5
    assert r0["ptq_amax"] == single["ptq_amax"]  # max calibration: sharded PTQ bit-equal to one process
