"""Train trtqat's reference detectors on the generated shapes dataset (``make fixtures``).

Why: accuracy claims need a model that has learnt something (see :mod:`trtqat.demo.trained`). This trains
trtqat's scratch YOLOv5-shaped (width 0.25, depth 0.33: yolov5n), YOLOv7-shaped (the yolov7 topology at
width 0.25, about yolov7-tiny's size) or Ultralytics YOLOv8-shaped (``yolov8n.yaml``'s topology and widths)
model from scratch, on CPU, deterministically (a fixed seed, a fixed number of steps, a fixed thread count),
and saves it like the upstream release file: the EMA weights in fp16 under ``model`` of a dict, pickled
inside the fake repo's ``models`` package (YOLOv5/YOLOv7, as ``train.py`` writes it) or the scratch
``ultralytics`` package (as ``YOLO.save()`` writes it).

The recipe is the short-schedule one the Ultralytics documentation describes for few iterations: AdamW
(peak lr 1.5e-3 for the committed fixtures, ``RECIPES``; ``--lr`` defaults to 1e-3; weight decay on
conv/linear weights only), linear warm-up then cosine decay, an exponential moving
average of the weights, letterboxed inputs as at deployment, horizontal flips and colour jitter. The loss is
:class:`trtqat.demo.detection_loss.DetectionLoss` for the anchor-based heads and
:class:`trtqat.demo.anchor_free_loss.AnchorFreeLoss` (task-aligned assignment, DFL) for Ultralytics' head.

Run as ``python -m trtqat.demo.train_fixtures --family yolov5 --data DIR --repo DIR --out FILE``; the
fake repo goes first on ``sys.path`` in this process (the checkpoint must reference ``models.yolo``), so one
process trains one family.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FAMILY_WIDTH = {"yolov5": 0.25, "yolov7": 0.25, "yolov8": 0.25}
#: Ultralytics families: the model config the scratch ``ultralytics`` package builds (``n`` scale: width 0.25)
ULTRALYTICS_CONFIG = {"yolov8": "yolov8n.yaml"}
#: the committed fixtures' recipes (``make fixtures``); steps of ``batch_size`` images, one CPU thread each
RECIPES = {"yolov5": {"steps": 2600, "batch_size": 8, "lr": 1.5e-3, "eval_every": 500},
           "yolov7": {"steps": 5600, "batch_size": 8, "lr": 1.5e-3, "eval_every": 1000},
           "yolov8": {"steps": 3200, "batch_size": 8, "lr": 1.5e-3, "eval_every": 800}}
#: the shapes dataset they are trained on (``trtqat.demo.shapes``); val is the held-out split
DATASET = {"train": 4000, "val": 300, "seed": 0}


@dataclass(frozen=True)
class TrainConfig:
    family: str
    size: int = 320
    batch_size: int = 16
    steps: int = 3000
    lr: float = 1e-3
    weight_decay: float = 5e-4
    warmup: int = 200
    ema_decay: float = 0.999
    ema_tau: float = 400.0
    seed: int = 0
    threads: int = 2
    eval_every: int = 0  # steps; 0: only at the end
    log_every: int = 50  # steps between loss lines


def load_training_set(images_dir: Path, size: int):
    """Letterbox every training image once (uint8, N x 3 x size x size) and map its YOLO labels
    (:func:`trtqat.eval.labels.read_yolo_labels`) to input pixels ``class, cx, cy, w, h``."""
    import torch

    from ..data.images import find_images, letterbox, read_rgb
    from ..eval.labels import label_path, read_yolo_labels

    files = find_images(images_dir)
    pixels = torch.empty((len(files), 3, size, size), dtype=torch.uint8)
    labels = []
    for i, path in enumerate(files):
        boxed, lb = letterbox(read_rgb(path), size)
        pixels[i] = torch.from_numpy(boxed).permute(2, 0, 1)
        h, w = lb.shape
        rows = np.array(read_yolo_labels(label_path(path)), dtype=np.float32).reshape(-1, 5)
        out = rows.copy()  # (the committed fixtures were trained with exactly this float32 arithmetic)
        out[:, 1] = rows[:, 1] * w * lb.ratio + lb.pad[0]
        out[:, 2] = rows[:, 2] * h * lb.ratio + lb.pad[1]
        out[:, 3] = rows[:, 3] * w * lb.ratio
        out[:, 4] = rows[:, 4] * h * lb.ratio
        labels.append(torch.from_numpy(out))
    return pixels, labels


def augmented_batch(pixels, labels, index, gen):
    """Float batch in 0..1 with flips and colour jitter, and (n, 6) targets ``image, class, cx, cy, w, h``."""
    import torch

    x = pixels[index].float().div_(255)
    n, _, _, width = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x[flip] = x[flip].flip(-1)
    gain = 1 + (torch.rand(n, 3, 1, 1, generator=gen) - 0.5) * 0.3  # per-channel colour
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.4
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean) * gain
    rows = []
    for k, (i, f) in enumerate(zip(index.tolist(), flip.tolist())):
        t = labels[i].clone()
        if f:
            t[:, 1] = width - t[:, 1]
        rows.append(torch.cat((torch.full((t.shape[0], 1), float(k)), t), 1))
    return x.clamp_(0, 1), torch.cat(rows) if rows else torch.zeros(0, 6)


class ModelEMA:
    """Exponential moving average of weights and BN statistics, the decay ramping up with the updates so
    the early, random weights are forgotten quickly."""

    def __init__(self, model, decay: float, tau: float):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model):
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        with torch.no_grad():
            msd = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
                else:
                    v.copy_(msd[k])


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def evaluate_float(model, val_dir: Path, val_json: Path, size: int, nc: int) -> dict:
    """COCO mAP of the (EMA) model on the held-out split, with trtqat's own evaluation path."""
    from ..eval.evaluate import EvalConfig, eval_set, evaluate

    data = eval_set(val_dir, EvalConfig(size=size, batch_size=16), ann=val_json, nc=nc)
    res = evaluate(model, data, quantized=None, name="float")
    return {"map": res.map, "map50": res.map50, "images": res.images}


def build_model(cfg: TrainConfig, names: list[str]):
    if cfg.family in ULTRALYTICS_CONFIG:
        from ultralytics.nn.tasks import DetectionModel  # the scratch package, first on sys.path (see main)

        model = DetectionModel(ULTRALYTICS_CONFIG[cfg.family], nc=len(names), verbose=False)
        model.names = dict(enumerate(names))  # Ultralytics stores {index: name}
        model.args = {"task": "detect", "mode": "train", "model": ULTRALYTICS_CONFIG[cfg.family], "data": "shapes.yaml",
                      "imgsz": cfg.size}
        model.task = "detect"
        return model
    from models.yolo import Model  # the fake repo, first on sys.path (see main)

    model = Model(nc=len(names), width_multiple=FAMILY_WIDTH[cfg.family])
    model.names = dict(enumerate(names)) if cfg.family == "yolov5" else list(names)
    return model


def make_loss(cfg: TrainConfig, model):
    """The training loss of the model's head: anchor-based (YOLOv5/YOLOv7) or anchor-free (Ultralytics)."""
    head = model.model[-1]
    if cfg.family in ULTRALYTICS_CONFIG:
        from .anchor_free_loss import AnchorFreeLoss

        return AnchorFreeLoss(head.nc, strides=tuple(float(s) for s in head.stride), reg_max=head.reg_max)
    from .detection_loss import DetectionLoss

    return DetectionLoss(head, cfg.size)


def loss_parts(parts) -> dict[str, float]:
    """The loss components by name, whichever loss produced them (a dict, or AnchorFreeLoss's tensor)."""
    if isinstance(parts, dict):
        return {k: float(v) for k, v in parts.items()}
    from .anchor_free_loss import PARTS

    return dict(zip(PARTS, (float(v) for v in parts)))


def param_groups(model, weight_decay: float):
    """Weight decay on convolution/linear weights only (not on BN or biases, which it would just shrink)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() > 1 and not name.endswith("implicit") else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(cfg: TrainConfig, data_root: Path, out: Path, log=print) -> dict:
    """Train one fixture; write ``out`` (the checkpoint) and ``out.json`` (how it was made, float mAP)."""
    import torch

    from .._io import write_json
    from ..models.device import set_memory_format
    from .shapes import CLASSES

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    pixels, labels = load_training_set(data_root / "images" / "train", cfg.size)
    log(f"[train {cfg.family}] {len(labels)} training images letterboxed to {cfg.size} in "
        f"{time.perf_counter() - t0:.0f} s")
    model = build_model(cfg, list(CLASSES))
    loss_fn = make_loss(cfg, model)
    set_memory_format(model, torch.channels_last)  # 2-3x faster CPU training (measured on the YOLOv7 fixture)
    model.train()
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.937, 0.999))
    ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(len(labels), generator=gen)
    cursor, history = 0, []
    t_train = time.perf_counter()
    for step in range(cfg.steps):
        if cursor + cfg.batch_size > len(order):
            order, cursor = torch.randperm(len(labels), generator=gen), 0
        index = order[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        x, targets = augmented_batch(pixels, labels, index, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss, parts = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        ema.update(model)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            rate = (step + 1) * cfg.batch_size / (time.perf_counter() - t_train)
            named = " ".join(f"{k} {v:.4f}" for k, v in loss_parts(parts).items())
            log(f"[train {cfg.family}] step {step + 1}/{cfg.steps} loss {float(loss.detach()) / cfg.batch_size:.4f} "
                f"{named} lr {lr_at(step, cfg):.2e} {rate:.1f} img/s")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            m = _eval_copy(ema.ema)
            res = evaluate_float(m, data_root / "images" / "val", data_root / "val.json", cfg.size, len(CLASSES))
            history.append({"step": step + 1, **res})
            log(f"[train {cfg.family}] step {step + 1}: EMA mAP@0.5:0.95 {res['map']:.4f} mAP@0.5 {res['map50']:.4f}")
            _save(cfg, m, ema.updates, out)  # a usable intermediate file; the final one replaces it
    train_seconds = time.perf_counter() - t_train
    final = _eval_copy(ema.ema)
    res = evaluate_float(final, data_root / "images" / "val", data_root / "val.json", cfg.size, len(CLASSES))
    log(f"[train {cfg.family}] final EMA mAP@0.5:0.95 {res['map']:.4f} mAP@0.5 {res['map50']:.4f} "
        f"({res['images']} held-out images); {train_seconds / 60:.1f} min")
    release = _save(cfg, final, ema.updates, out)
    record = {"family": cfg.family, "size": cfg.size, "width_multiple": FAMILY_WIDTH[cfg.family],
              "float_map": res["map"], "float_map50": res["map50"], "dataset": DATASET,
              "config": asdict(cfg), "classes": list(CLASSES), "train_images": len(labels),
              "params": sum(p.numel() for p in release.parameters()), "train_minutes": round(train_seconds / 60, 1),
              "float_eval": res, "history": history, "torch": torch.__version__}
    write_json(out.with_suffix(".json"), record)
    return record


def _save(cfg: TrainConfig, model, updates: int, out: Path):
    """Write ``model`` (an eval copy) as an fp16 release checkpoint, atomically; returns the fp16 module."""
    import torch

    from .._io import atomic_path

    release = copy.deepcopy(model).half()
    for p in release.parameters():
        p.requires_grad_(False)
    with atomic_path(out) as tmp:
        torch.save(release_checkpoint(cfg.family, release, updates), tmp)
    return release


def _eval_copy(model):
    """A contiguous, eval-mode float copy (channels-last layout is a training detail, not part of the file)."""
    import torch

    from ..models.device import set_memory_format

    m = copy.deepcopy(model).float().eval()
    set_memory_format(m, torch.contiguous_format)
    return m


def release_checkpoint(family: str, module, updates: int) -> dict:
    """The dict an upstream release file holds after ``strip_optimizer``: the EMA module under ``model``
    (Ultralytics: what ``YOLO.save()`` writes, ``ema`` None)."""
    if family in ULTRALYTICS_CONFIG:
        from .fixtures import ULTRALYTICS_VERSION

        return {"ema": None, "model": module, "modelopt": None, "date": "2026-12-07T00:00:00.000000+00:00",
                "version": ULTRALYTICS_VERSION, "license": "AGPL-3.0 License (https://ultralytics.com/license)",
                "docs": "https://docs.ultralytics.com"}
    if family == "yolov7":
        return {"model": module, "optimizer": None, "training_results": None, "epoch": -1}
    return {"epoch": -1, "best_fitness": None, "model": module, "ema": None, "updates": None, "optimizer": None,
            "opt": {"weights": "", "cfg": "yolov5n.yaml", "data": "shapes.yaml", "imgsz": 320, "epochs": 0},
            "git": None, "date": "2026-11-29T00:00:00"}


def make_all(build: Path, out_dir: Path, log=print) -> None:
    """``make fixtures``: the dataset (if absent), then both families in parallel (one thread each, the
    committed recipes), each in its own process with its fake repo first on ``sys.path``."""
    import subprocess

    from . import fixtures, shapes

    data = build / "shapes"
    if not (data / "val.json").is_file():
        log(f"[fixtures] writing the shapes dataset to {data} ({DATASET})")
        shapes.write_dataset(data, **DATASET)
    procs = []
    for family, recipe in RECIPES.items():
        repo = fixtures.write_repo(family, build / "repos" / family)
        args = [sys.executable, "-m", "trtqat.demo.train_fixtures", "--family", family, "--data", str(data),
                "--repo", str(repo), "--out", str(out_dir / f"{family}_shapes.pt"), "--threads", "1",
                *[f"--{k.replace('_', '-')}={v}" for k, v in recipe.items()]]
        log(f"[fixtures] $ {' '.join(args[1:])}")
        procs.append((family, subprocess.Popen(args)))
    failed = [family for family, proc in procs if proc.wait() != 0]
    if failed:
        raise SystemExit(f"training failed for {', '.join(failed)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trtqat.demo.train_fixtures", description=__doc__.split("\n\n")[0])
    p.add_argument("--all", action="store_true", help="the dataset and both committed fixtures (make fixtures)")
    p.add_argument("--build", type=Path, default=Path("build"), help="with --all: dataset and repos go here")
    p.add_argument("--family", choices=sorted(FAMILY_WIDTH))
    p.add_argument("--data", type=Path, help="shapes dataset root (trtqat.demo.shapes)")
    p.add_argument("--repo", type=Path, help="the fake repo to pickle the model from")
    p.add_argument("--out", type=Path)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50, help="steps between loss lines")
    a = p.parse_args(argv)
    if a.all:
        from .trained import TRAINED_DIR

        make_all(a.build, TRAINED_DIR)
        return 0
    if not (a.family and a.data and a.repo and a.out):
        p.error("--family, --data, --repo and --out are required without --all")
    sys.path.insert(0, str(a.repo.resolve()))
    cfg = TrainConfig(family=a.family, size=a.size, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                      threads=a.threads, eval_every=a.eval_every, seed=a.seed, log_every=a.log_every,
                      warmup=min(200, max(1, a.steps // 10)))
    record = train(cfg, a.data, a.out, log=lambda s: print(s, flush=True))
    print(json.dumps(record["float_eval"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
