"""Scratch YOLOv5/YOLOv7- and Ultralytics-shaped checkpoints, repos and images for trtqat's tests and ``trtqat demo``.

Why a fake repo and a subprocess: an upstream checkpoint is a pickle of whole modules whose classes
live in the top-level packages ``models`` and ``utils`` of the user's clone. To produce files with the
same pickle references (``models.yolo.DetectionModel``, ``models.common.Conv`` ...) the model is
built and saved by a child Python whose ``sys.path`` starts with the fake repo, so the calling process
never imports a ``models`` package of its own (it would shadow the other family's).

The fake repos under ``trtqat/demo/repos/<family>/`` are written from scratch; they match upstream
module names, attribute names and topology, not upstream code. This module imports only the standard
library at load time (numpy/PIL are imported inside the image helpers, torch only in the child).

The Ultralytics families (``yolov8``, ``yolo11``, ``yolo26``) share one scratch ``ultralytics`` package
(``trtqat/demo/repos/ultralytics/ultralytics/``): :func:`write_repo` copies it into a folder that then
*contains* ``ultralytics/`` (what ``--repo`` accepts for Ultralytics checkpoints), and the child pickles
``ultralytics.nn.tasks.DetectionModel`` exactly as ``YOLO(...).save()`` (form ``"model"``) or the
Ultralytics trainer (form ``"ema"``) writes it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .._io import atomic_path

FAMILIES = ("yolov5", "yolov7")  # upstream clones (top-level ``models``/``utils``)
ULTRALYTICS_FAMILIES = ("yolov8", "yolo11", "yolo26")  # the ``ultralytics`` package
ALL_FAMILIES = FAMILIES + ULTRALYTICS_FAMILIES
DETECT_INDEX = {"yolov5": 24, "yolov7": 105, "yolov8": 22, "yolo11": 23, "yolo26": 23}
FORMS = ("ema", "model", "train", "bare")
REPOS_DIR = Path(__file__).resolve().parent / "repos"
REPO_FILES = ("models/__init__.py", "models/common.py", "models/yolo.py", "utils/__init__.py")
ULTRALYTICS_FILES = ("ultralytics/__init__.py", "ultralytics/nn/__init__.py", "ultralytics/nn/tasks.py",
                     "ultralytics/nn/modules/__init__.py", "ultralytics/nn/modules/conv.py",
                     "ultralytics/nn/modules/block.py", "ultralytics/nn/modules/head.py")
#: what the Ultralytics fixtures write into a checkpoint's ``version`` (the release whose layout they copy)
ULTRALYTICS_VERSION = "8.4.190"

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)
# COCO's 80 detection classes use the category ids 1..90 with gaps (the "91 ids" of the 2014 paper).
COCO80_TO_91 = (*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                *range(72, 83), *range(84, 91))


def _check_family(family: str, allowed: tuple[str, ...] = FAMILIES) -> str:
    if family not in allowed:
        raise ValueError(f"unknown family {family!r}; expected one of {allowed}")
    return family


def is_ultralytics_family(family: str) -> bool:
    return family in ULTRALYTICS_FAMILIES


def write_repo(family: str, dest: str | os.PathLike, *, import_torchvision: bool = False) -> Path:
    """Copy the fake ``family`` repo into ``dest`` and return ``dest``.

    YOLOv5/YOLOv7: ``models/`` and ``utils/`` (a clone's layout). Ultralytics families: the scratch
    ``ultralytics/`` package (one for all three versions), so ``dest`` is a folder containing ``ultralytics/``.

    Args:
        family: one of ``ALL_FAMILIES``.
        dest: folder to create (existing files of the same names are overwritten).
        import_torchvision: make ``models/common.py`` (``ultralytics/__init__.py``) start with
            ``import torchvision`` like real clones (and the real package), to exercise trtqat's message when
            torchvision cannot be imported.
    """
    _check_family(family, ALL_FAMILIES)
    ultra = is_ultralytics_family(family)
    src = REPOS_DIR / ("ultralytics" if ultra else family)
    first = "ultralytics/__init__.py" if ultra else "models/common.py"
    dest = Path(dest)
    for rel in ULTRALYTICS_FILES if ultra else REPO_FILES:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        text = (src / rel).read_text()
        if import_torchvision and rel == first:
            text = "import torchvision  # noqa: F401  (as in upstream clones)\n" + text
        target.write_text(text)
    return dest


def make_checkpoint(family: str, dest_dir: str | os.PathLike, *, form: str = "ema", half: bool = True,
                    nc: int = 80, width: float | None = None, seed: int = 0,
                    repo_dir: str | os.PathLike | None = None, name: str | None = None,
                    scale: str = "t", end2end: bool = False) -> tuple[Path, Path]:
    """Build a scratch ``family`` model in a child Python and save it like upstream ``train.py`` does.

    Forms (what ``torch.load`` returns):
      * ``"ema"``: training checkpoint, ``{'epoch': -1, ..., 'model': None, 'ema': module, ...}``
        (Ultralytics: the trainer's ``last.pt`` keys, ``train_args``, ``train_metrics``, ``git`` ...).
      * ``"model"``: a release file. YOLOv5: ``strip_optimizer`` output (``'model'`` set, ``'ema'`` None);
        YOLOv7: ``{'model': module, 'optimizer': None, 'training_results': None, 'epoch': -1}``;
        Ultralytics: what ``YOLO(...).save()`` writes, ``{'ema': None, 'model': module (fp16, train mode),
        'modelopt': None, 'date', 'version', 'license', 'docs'}``.
      * ``"train"``: both ``'model'`` and ``'ema'`` set, to different weights (loaders must take ``ema``).
      * ``"bare"``: the module itself.

    The module's BatchNorm statistics are set from a forward pass on random data and then perturbed
    (and YOLOv7's ImplicitA/M perturbed), so outputs are non-degenerate and BN/implicit folding matters.

    Args:
        family: one of ``ALL_FAMILIES`` (``yolov5``, ``yolov7``, ``yolov8``, ``yolo11``, ``yolo26``).
        dest_dir: folder for the checkpoint (and for the repo when ``repo_dir`` is None).
        form: one of ``FORMS``.
        half: store fp16 modules (as upstream does).
        nc: number of classes (80 gives COCO names).
        width: width multiple (None: the fake repo's default, 1/8 of upstream base channels).
        seed: torch seed for weights and BN statistics.
        repo_dir: an existing fake repo to use; by default one is written to ``dest_dir/repo_<family>``.
        name: checkpoint file name (default ``<family>_<form>.pt``).
        scale: Ultralytics only: the model scale, ``"t"`` (the fixture's half-of-``n`` width, default) or
            ``"n"`` (upstream's nano; the parameter counts match upstream's exactly). ``width`` is ignored.
        end2end: YOLO26 only: save the head with its NMS-free one-to-one branch selected
            (``model.end2end = True``); upstream 8.4 saves it unselected (one-to-many output plus NMS).

    Returns:
        ``(checkpoint_path, repo_dir)``.

    Raises:
        RuntimeError: the child process failed (its stderr is in the message).
    """
    _check_family(family, ALL_FAMILIES)
    if form not in FORMS:
        raise ValueError(f"unknown checkpoint form {form!r}; expected one of {FORMS}")
    if end2end and family != "yolo26":
        raise ValueError(f"end2end=True needs a head with a one-to-one branch (yolo26), not {family}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    repo = Path(repo_dir) if repo_dir is not None else write_repo(family, dest_dir / f"repo_{family}")
    ckpt = dest_dir / (name or f"{family}_{form}.pt")
    spec = {"family": family, "form": form, "half": half, "nc": nc, "width": width, "seed": seed,
            "repo": str(repo.resolve()), "names": list(COCO_NAMES), "scale": scale, "end2end": end2end,
            "version": ULTRALYTICS_VERSION}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    child = _ULTRALYTICS_CHILD if is_ultralytics_family(family) else _CHILD
    with atomic_path(ckpt) as tmp:
        spec["out"] = str(tmp)
        proc = subprocess.run([sys.executable, "-c", child, json.dumps(spec)], check=False,
                              capture_output=True, text=True, env=env, cwd=str(repo))
        if proc.returncode != 0:
            raise RuntimeError(f"building the {family} checkpoint failed:\n{proc.stderr[-4000:]}")
    return ckpt, repo


# Runs in the child with the fake repo first on sys.path; argv[1] is the JSON spec from make_checkpoint.
#: the BatchNorm part of every fixture's realistic statistics (run in the child Pythons of both builders):
#: random affine first, then running statistics measured with it on image-like input (smooth regions and
#: texture, like make_images and real photos), so activations stay normalised through ~100 layers, then a small
#: offset so eval-mode BN is not an exact batch normalisation. Returns the generator for the family's own part.
_BN_STATISTICS = r"""
def bn_statistics(model, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            c = bn.num_features
            bn.weight.copy_(torch.empty(c).uniform_(0.6, 1.4, generator=g))
            bn.bias.copy_(torch.randn(c, generator=g) * 0.2)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the batches below
        model.train()
        for _ in range(2):
            smooth = torch.nn.functional.interpolate(torch.rand(4, 3, 10, 10, generator=g), size=160,
                                                     mode="bilinear", align_corners=False)
            model((0.85 * smooth + 0.15 * torch.rand(4, 3, 160, 160, generator=g)).clamp(0, 1))
        for bn in bns:
            c = bn.num_features
            bn.momentum = 0.03
            bn.running_mean.add_(torch.randn(c, generator=g) * 0.05 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(c).uniform_(0.9, 1.1, generator=g))
    return g
"""

_CHILD = r"""
import json, sys
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["repo"])
import torch
import torch.nn as nn
from models.yolo import Model

torch.manual_seed(spec["seed"])
FIVE = spec["family"] == "yolov5"
NAMES = spec["names"]


def build(seed):
    torch.manual_seed(seed)
    kw = {"nc": spec["nc"]}
    if spec["width"] is not None:
        kw["width_multiple"] = spec["width"]
    model = Model(**kw)
    names = list(NAMES) if spec["nc"] == len(NAMES) else [f"class{i}" for i in range(spec["nc"])]
    # YOLOv5 v7.0 stores names as {index: name}; YOLOv7 as a list.
    model.names = dict(enumerate(names)) if FIVE else names
    realistic_statistics(model, seed)
    model.eval()
    return model


#BN_STATISTICS

@torch.no_grad()
def realistic_statistics(model, seed):
    # BatchNorm statistics as for every fixture (_BN_STATISTICS), then YOLOv7's implicit layers.
    g = bn_statistics(model, seed)
    for m in model.modules():
        name = type(m).__name__
        if name == "ImplicitA":
            m.implicit.copy_(torch.randn(m.implicit.shape, generator=g) * 0.1)
        elif name == "ImplicitM":
            m.implicit.copy_(1 + torch.randn(m.implicit.shape, generator=g) * 0.1)
        elif name in ("Detect", "IDetect"):
            for conv in m.m:  # trained heads give moderate logits; default init saturates the sigmoid
                conv.weight.mul_(0.2)
            m.grid = [torch.zeros(1) for _ in range(m.nl)] if not FIVE else [torch.empty(0) for _ in range(m.nl)]
            if FIVE:
                m.anchor_grid = [torch.empty(0) for _ in range(m.nl)]


def finish(model):
    model = model.half() if spec["half"] else model.float()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


ema = finish(build(spec["seed"]))
form = spec["form"]
opt = {"weights": "", "cfg": f"{spec['family']}s.yaml" if FIVE else "cfg/training/yolov7.yaml",
       "data": "data/coco.yaml", "imgsz": 640, "img_size": [640, 640], "batch_size": 16, "epochs": 300,
       "single_cls": False, "rect": False}
if form == "bare":
    ckpt = ema
elif form == "model" and not FIVE:
    ckpt = {"model": ema, "optimizer": None, "training_results": None, "epoch": -1}
else:
    model = None
    if form == "model":
        model, ema = ema, None
    elif form == "train":
        model = finish(build(spec["seed"] + 1))
    ckpt = {"epoch": -1, "best_fitness": None if form == "model" else 0.5, "model": model, "ema": ema,
            "updates": None if form == "model" else 1000, "optimizer": None}
    if FIVE:
        ckpt.update({"opt": opt, "git": None, "date": "2023-01-01T00:00:00"})
    else:
        ckpt.update({"training_results": None, "wandb_id": None})
torch.save(ckpt, spec["out"])
"""


# Runs in the child with the folder holding the scratch ``ultralytics`` package first on sys.path.
_ULTRALYTICS_CHILD = r"""
import json, sys
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["repo"])
import torch
import torch.nn as nn
from ultralytics.nn.tasks import DetectionModel

CFG = f"{spec['family']}{spec['scale']}.yaml"
NAMES = spec["names"]
STAMP = "2025-01-01T00:00:00.000000+00:00"


def build(seed):
    torch.manual_seed(seed)
    model = DetectionModel(CFG, nc=spec["nc"], verbose=False)
    names = list(NAMES) if spec["nc"] == len(NAMES) else [f"class{i}" for i in range(spec["nc"])]
    model.names = dict(enumerate(names))  # Ultralytics stores {index: name}
    model.args = {"task": "detect", "mode": "train", "model": CFG, "data": None, "imgsz": 640, "nms": None}
    model.task = "detect"
    realistic_statistics(model, seed)
    if spec["end2end"]:
        model.end2end = True
    return model


#BN_STATISTICS

@torch.no_grad()
def realistic_statistics(model, seed):
    # BatchNorm statistics as for every fixture (_BN_STATISTICS); then the head's output convs scaled down and
    # class biases set to moderate logits so that scores are neither saturated nor all below the usual 0.001
    # confidence threshold.
    g = bn_statistics(model, seed)
    head = model.model[-1]
    for attr in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for branch in getattr(head, attr, None) or []:
            branch[-1].weight.mul_(0.2)
            if attr.endswith("cv3"):
                branch[-1].bias.copy_(torch.empty(branch[-1].bias.shape).uniform_(-5.0, -2.0, generator=g))


def half(model, train_mode):
    model = model.half() if spec["half"] else model.float()
    model.train(train_mode)
    for p in model.parameters():
        p.requires_grad_(train_mode)
    return model


form = spec["form"]
meta = {"date": STAMP, "version": spec["version"]}
if form == "bare":
    ckpt = half(build(spec["seed"]), False)
elif form == "model":  # YOLO(...).save(): the module as held in memory (train mode), fp16
    ckpt = {"ema": None, "model": half(build(spec["seed"]), True), "modelopt": None, **meta,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}
else:  # the trainer's last.pt / best.pt: the EMA module (eval mode, no grad), fp16
    ema = half(build(spec["seed"]), False)
    model = half(build(spec["seed"] + 1), False) if form == "train" else None
    args = {"task": "detect", "mode": "train", "model": CFG, "data": "coco8.yaml", "epochs": 100, "imgsz": 640,
            "batch": 16, "nms": None}
    ckpt = {"epoch": 99, "best_fitness": 0.5, "stopper": {"best_fitness": 0.5, "best_epoch": 99}, "model": model,
            "ema": ema, "updates": 1000, "modelopt": None, "optimizer": None, "scaler": None, "train_args": args,
            "train_metrics": {"metrics/mAP50-95(B)": 0.5, "fitness": 0.5}, "train_results": {}, **meta,
            "git": {"root": None, "branch": None, "commit": None, "message": None, "origin": None},
            "license": "AGPL-3.0 (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com"}
torch.save(ckpt, spec["out"])
"""
_CHILD, _ULTRALYTICS_CHILD = (c.replace("#BN_STATISTICS\n", _BN_STATISTICS.lstrip("\n")) for c in (_CHILD, _ULTRALYTICS_CHILD))


# ---------------------------------------------------------------- images, labels, COCO json

_SIZES = ((320, 240), (240, 320), (640, 480), (416, 416), (500, 375), (375, 500), (300, 200), (512, 288))


def make_images(dest: str | os.PathLike, n: int = 8, size: tuple[int, int] | None = None, seed: int = 0, *,
                labels: bool = False, formats: Sequence[str] = ("jpg", "png"), nc: int = 80,
                labels_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write ``n`` synthetic RGB images (coloured rectangles/ellipses on textured backgrounds).

    Names are COCO-like numeric stems (``000000000001.jpg`` ...) so a COCO evaluator can take the image id
    from the stem. Formats cycle through ``formats``; sizes cycle through a fixed mixed list unless ``size``
    (width, height) is given.

    Args:
        labels: also write YOLO labels (``class cx cy w h``, normalised) to ``labels_dir``, default the
            sibling ``labels/`` folder of ``dest`` (upstream's ``images/`` -> ``labels/`` layout).
        nc: classes drawn for the labels.

    Returns:
        The image paths in order.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    lab_dir = Path(labels_dir) if labels_dir is not None else dest.parent / "labels"
    if labels:
        lab_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = size if size is not None else _SIZES[i % len(_SIZES)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = rng.uniform(40, 200, size=3)
        grad = np.stack([base[c] + 40 * np.sin(xx / rng.uniform(15, 60) + c) * np.cos(yy / rng.uniform(15, 60))
                         for c in range(3)], -1)
        noise = rng.normal(0, 12, size=(h, w, 3))
        img = Image.fromarray(np.clip(grad + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        rows = []
        for _ in range(int(rng.integers(1, 5))):
            bw, bh = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([x0, y0, x0 + bw, y0 + bh], fill=colour, outline=(0, 0, 0))
            cls = int(rng.integers(0, nc))
            rows.append(f"{cls} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        ext = formats[i % len(formats)]
        path = dest / f"{i + 1:012d}.{ext}"
        img.save(path, quality=92) if ext in ("jpg", "jpeg") else img.save(path)
        if labels:
            (lab_dir / f"{path.stem}.txt").write_text("\n".join(rows) + "\n")
        paths.append(path)
    return paths


def make_corrupt_image(dest: str | os.PathLike, name: str = "corrupt.jpg") -> Path:
    """Write a file with an image suffix whose bytes are not a decodable image (error-path tests)."""
    path = Path(dest) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG \x00\x01\x02")
    return path


def make_coco_json(images: Sequence[str | os.PathLike], dest: str | os.PathLike, *,
                   labels_dir: str | os.PathLike | None = None, nc: int = 80,
                   category_ids: Sequence[int] | None = None, names: Sequence[str] | None = None) -> Path:
    """Write COCO-format ground truth for ``images`` from their YOLO label files.

    Image ids are the numeric stems; category ids follow COCO's 91-id numbering when ``nc == 80``
    (else ``class + 1``) unless ``category_ids`` is given. Boxes are ``[x, y, w, h]`` in pixels.
    """
    from PIL import Image

    if category_ids is None:
        category_ids = COCO80_TO_91 if nc == 80 else tuple(range(1, nc + 1))
    if names is None:
        names = COCO_NAMES if nc == 80 else tuple(f"class{i}" for i in range(nc))
    out = {"images": [], "annotations": [],
           "categories": [{"id": int(category_ids[c]), "name": names[c]} for c in range(nc)]}
    for p in map(Path, images):
        lab = (Path(labels_dir) if labels_dir is not None else p.parent.parent / "labels") / f"{p.stem}.txt"
        with Image.open(p) as im:
            w, h = im.size
        image_id = int(p.stem) if p.stem.isdigit() else len(out["images"]) + 1
        out["images"].append({"id": image_id, "file_name": p.name, "width": w, "height": h})
        for line in lab.read_text().split("\n") if lab.exists() else []:
            if not line.strip():
                continue
            c, cx, cy, bw, bh = line.split()
            bw_px, bh_px = float(bw) * w, float(bh) * h
            box = [float(cx) * w - bw_px / 2, float(cy) * h - bh_px / 2, bw_px, bh_px]
            out["annotations"].append({"id": len(out["annotations"]) + 1, "image_id": image_id,
                                       "category_id": int(category_ids[int(c)]), "bbox": [round(v, 3) for v in box],
                                       "area": round(bw_px * bh_px, 3), "iscrowd": 0})
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out))
    return dest

