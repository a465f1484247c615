"""Quantization-aware fine-tuning as label-free feature distillation (the recipe that reached FP16 mAP on YOLOv7).

Why distillation and not the detection loss: the calibrated model is already close to the float one; QAT
only has to teach the weights to live with the int8 grid. The teacher is the *same* calibrated model with
every quantizer bypassed (the fused float model), so any folder of unlabelled images is enough. The loss is
the sum over supervised layers of ``MSE(student, teacher)`` on the outputs of the top-level layers
``model.model[i]`` for ``i in range(0, len - 1, stride)`` plus ``len - 2`` (every layer before the detect head
with stride 1, Concat/Upsample/MP included), collected with forward hooks that are removed in ``finally``.

The student runs in :func:`~trtqat.quant.modes.qat_mode`: fake-quant on, statistics frozen. By default
(``learn_amax``, ``--learn-amax``) each per-tensor activation amax trains too, with the LSQ step-size
gradient (:mod:`~trtqat.quant.learned_amax`); the weights' per-channel amax stay their max. Why: on the
trained YOLOv7 the PTQ loss sits entirely in the activation quantizers, and at an equal budget (500 steps
from one PTQ) learned scales raised the fidelity to the float model by 0.4-0.6 dB on every output (agreement
mAP 0.950 -> 0.957) at equal mAP (65.10 vs 65.28, within the noise). ``--fixed-amax`` keeps the calibrated
scales, as NVIDIA's reference recipe does. Either way quantizers shared by the scale-sharing rules stay the
*same objects* (checked every epoch), so a group keeps one scale.
The detect head gets no gradient (it is not supervised) and is frozen, which also keeps DDP happy. (Training
its output convolutions on their sigmoid outputs as well was measured on the trained YOLOv7 and lost 0.43
mAP points against the frozen head at 500 steps, agreement mAP 0.940 vs 0.951: not offered.)

Checkpoints, per epoch, all atomic (``<qat>`` is the ``--qat`` path):

* ``<qat>``: the best epoch so far (``scorer``: mAP with labels, else SQNR against the teacher);
* ``<stem>.last.pt``: the latest epoch, a normal trtqat checkpoint (usable by ``export`` after a crash);
* ``<stem>.state.pt``: what ``--resume`` needs (student and teacher state dicts, optimizer, scaler,
  history); written last, so it is the commit point of an epoch. Ctrl-C or a crash leaves the last
  complete epoch, and resuming re-runs only the interrupted one.

Learning rate: the reference schedule (10 epochs: 0-2 at 1e-6, 3-7 at 1e-5, 8-9 at 1e-6) as fractions of
the run: the first ``floor(0.3 * epochs)`` epochs warm up at ``lr/10``, the last ``floor(0.2 * epochs)``
cool down at ``lr/10``, the rest run at the peak ``lr``. The default peak is 3e-5, three times the
reference's: with learned activation scales it ended closer to the float model at the accuracy benchmark's
budget (YOLOv7 agreement mAP 0.958 -> 0.963, mAP 65.18 -> 65.27, float 65.74; docs/qat.md). Every run of at least one epoch
reaches the peak (a fixed epoch table left runs of 3 epochs or fewer at ``lr/10`` throughout); a resumed
run whose remaining epochs are all past the peak says so in one warning.

Multi-GPU (:mod:`trtqat.quant.distributed`): launched with ``torchrun --nproc_per_node N``, each process
reads ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``, trains a DDP replica on ``cuda:LOCAL_RANK`` (CPU with gloo)
with its own slice of every global batch (DistributedSampler-style ``[rank::world]``). The ranks agree
before every backward (:func:`~trtqat.quant.distributed.sync`: one rank's exception stops all), only rank 0
scores and writes files, its epoch record (score, best) is broadcast so every rank holds the same history
and best epoch, and after each epoch the ranks compare a digest of their parameters and amax buffers
(``lockstep`` in the record).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_path
from ..errors import InputError, UsageError
from ..models.device import to_device
from ._compat import load_quant_state_dict
from .checkpoint import save_quantized
from .device import preferred_memory_format
from .distributed import DistEnv, broadcast_object, check_lockstep, dist_env, setup_device, sync, wrap_ddp
from .learned_amax import LearnedAmax, learned_amax
from .modes import qat_mode, quant_disabled
from .quantizers import quantizer_aliases
from .train_data import TrainImages

log = logging.getLogger(__name__)

STATE_FORMAT = 1
#: the default peak, 3x the reference recipe's 1e-5 (see the module docstring)
DEFAULT_LR = 3e-5
#: fractions of the run spent warming up and cooling down at ``lr * LOW_FACTOR`` (10 epochs: the reference
#: {0: 1e-6, 3: 1e-5, 8: 1e-6} with lr 1e-5)
WARMUP_FRACTION, COOLDOWN_FRACTION, LOW_FACTOR = 0.3, 0.2, 0.1


@dataclass(frozen=True)
class QatConfig:
    """QAT flags (``--epochs --iters --batch-size --lr --supervision-stride --clip-grad --amp --seed``)."""

    epochs: int = 10
    iters: int = 200
    batch_size: int = 8
    size: int = 640
    lr: float = DEFAULT_LR
    supervision_stride: int = 1
    clip_grad: float | None = None
    amp: bool = True
    seed: int = 0
    flip: bool = True
    device: str | None = "cpu"
    learn_amax: bool = True

    def __post_init__(self):
        for name in ("epochs", "iters", "batch_size", "supervision_stride"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise UsageError(f"--clip-grad must be positive, got {self.clip_grad}")


def lr_phases(epochs: int) -> tuple[int, int, int]:
    """(warm-up, peak, cool-down) epoch counts of a run: ``floor(0.3 E)``, the rest, ``floor(0.2 E)``.

    The peak phase always has at least one epoch (``E - floor(0.3 E) - floor(0.2 E) >= ceil(E / 2)``)."""
    warm, cool = math.floor(WARMUP_FRACTION * epochs), math.floor(COOLDOWN_FRACTION * epochs)
    return warm, epochs - warm - cool, cool


def lr_for_epoch(epoch: int, peak: float = DEFAULT_LR, epochs: int = 10) -> float:
    """The learning rate of ``epoch`` (0-based) in a run of ``epochs`` epochs with peak ``peak``."""
    warm, top, _ = lr_phases(epochs)
    return peak if warm <= epoch < warm + top else peak * LOW_FACTOR


def schedule_warning(cfg: QatConfig, start: int = 0) -> str | None:
    """One line when the epochs this run trains (``start`` .. ``epochs - 1``) never reach ``cfg.lr``."""
    remaining = range(start, cfg.epochs)
    if not remaining or any(lr_for_epoch(e, cfg.lr, cfg.epochs) == cfg.lr for e in remaining):
        return None
    warm, top, _ = lr_phases(cfg.epochs)
    return (f"QAT epochs {start}-{cfg.epochs - 1} all run at lr {cfg.lr * LOW_FACTOR:.1e} (cool-down): the peak "
            f"--lr {cfg.lr:.1e} was epochs {warm}-{warm + top - 1}; raise --epochs to train longer at the peak")


@dataclass(frozen=True)
class QatPaths:
    best: Path
    last: Path
    state: Path


def qat_paths(out: str | Path) -> QatPaths:
    """``qat.pt`` -> (``qat.pt``, ``qat.last.pt``, ``qat.state.pt``)."""
    out = Path(out)
    return QatPaths(best=out, last=out.with_name(f"{out.stem}.last.pt"), state=out.with_name(f"{out.stem}.state.pt"))


# ---------------------------------------------------------------- distillation

def supervision_layers(num_layers: int, stride: int = 1) -> list[int]:
    """Indices of supervised top-level layers: ``range(0, n - 1, stride)`` plus ``n - 2`` (before Detect)."""
    idx = list(range(0, num_layers - 1, stride))
    if num_layers >= 2 and num_layers - 2 not in idx:
        idx.append(num_layers - 2)
    return idx


@contextlib.contextmanager
def capture_outputs(layers: Sequence[torch.nn.Module]) -> Iterator[list]:
    """Collect each layer's forward output into a list (same order); hooks removed even on error."""
    store: list = [None] * len(layers)

    def hook(i):
        def save(module, inputs, output):
            store[i] = output
        return save

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def _tensors(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def distillation_loss(student: Sequence, teacher: Sequence) -> torch.Tensor:
    """Sum over layers (and tensors within a layer) of ``MSE(student, teacher)``."""
    losses = [F.mse_loss(s.float(), t.float()) for so, to in zip(student, teacher)
              for s, t in zip(_tensors(so), _tensors(to))]
    if not losses:
        raise RuntimeError("no supervised layer produced an output")
    return torch.stack(losses).sum()


def sharing_groups(model) -> frozenset[tuple[str, ...]]:
    """The sets of quantizer names that are one shared object."""
    return frozenset(tuple(sorted(n)) for n in quantizer_aliases(model).values() if len(n) > 1)


def check_sharing(model, expected: frozenset) -> None:
    """Raise AssertionError when QAT broke a shared quantizer apart (an invariant, not a user error)."""
    now = sharing_groups(model)
    if now != expected:
        raise AssertionError(f"shared quantizers changed during QAT: {sorted(expected ^ now)[:3]}")


# ---------------------------------------------------------------- training

@dataclass
class QatResult:
    """``model``: the best student (CPU, fake-quant flags as in training); ``teacher``: the PTQ model."""

    model: object
    teacher: object
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    paths: QatPaths | None = None
    resumed_from: int | None = None
    seconds: float = 0.0
    schedule: tuple[int, int, int] | None = None  # (warm-up, peak, cool-down) epochs
    selection: dict | None = None  # where the best epoch was chosen (set by trtqat.workflow)

    def summary(self) -> dict:
        phases = dict(zip(("warmup", "peak", "cooldown"), self.schedule)) if self.schedule else None
        return {"best_epoch": self.best_epoch, "best_score": self.best_score, "epochs": self.history,
                "lr_phases": phases, "selection": self.selection, "resumed_from": self.resumed_from,
                "seconds": round(self.seconds, 2),
                "saved": str(self.paths.best) if self.paths else None}


Scorer = Callable[[object, object], "tuple[float, dict]"]


def _layers(model) -> list:
    seq = getattr(model, "model", None)
    if seq is None or not hasattr(seq, "__getitem__"):
        raise InputError("QAT needs a YOLO model with a top-level 'model' layer list", "Pass a YOLOv5/YOLOv7 checkpoint")
    return list(seq)


@dataclass
class Distillation:
    """What QAT distils: the supervised student layers, the teacher's same layers, the trained parameters."""

    student: list
    teacher: list
    params: list


def prepare_distillation(student, teacher, stride: int = 1) -> Distillation:
    """Freeze the teacher and the student's detect head; supervise every ``stride``-th layer before the head."""
    for p in teacher.parameters():
        p.requires_grad_(False)
    layers, t_layers = _layers(student), _layers(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    for p in layers[-1].parameters():  # detect head: not supervised, no gradient
        p.requires_grad_(False)
    sup = supervision_layers(len(layers), stride)
    return Distillation([layers[i] for i in sup], [t_layers[i] for i in sup],
                        [p for p in student.parameters() if p.requires_grad])


def _cpu_model(model):
    """A CPU copy in the default memory format, for pickling.

    Why a copy even on the CPU: training runs channels-last, and a pickle keeps the strides. A checkpoint
    saved channels-last runs other convolution kernels than the same weights laid out contiguously; their
    ulp-level differences flip a few int8 roundings, and on the trained YOLOv7 that moved the reloaded
    checkpoint's mAP 0.06-0.17 points away from the model returned in process."""
    return to_device(copy.deepcopy(model), "cpu", torch.contiguous_format)


def _load_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputError(f"{path} could not be read ({exc})", "Start again without --resume") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not a trtqat QAT state file", "Start again without --resume")
    return state


def _resume(paths: QatPaths, repo) -> tuple[object, object, dict]:
    from ..models.checkpoint import torch_load

    if not paths.state.exists() or not paths.last.exists():
        raise InputError(f"nothing to resume: {paths.state} or {paths.last} is missing",
                         "Run without --resume to start QAT from the PTQ model")
    state = _load_state(paths.state)
    obj, _ = torch_load(paths.last, repo)
    student = obj["model"] if isinstance(obj, dict) else obj
    teacher = copy.deepcopy(student)
    load_quant_state_dict(teacher, state["teacher"])
    load_quant_state_dict(student, state["model"])
    return student.float().eval(), teacher.float().eval(), state


def train_qat(model, train_files: Sequence[Path], out: str | Path, cfg: QatConfig = QatConfig(), *,
              scorer: Scorer | None = None, meta: dict | None = None, resume: bool = False, repo=None,
              on_epoch: Callable[[dict], None] | None = None, progress: Callable[[int], None] | None = None,
              env: DistEnv | None = None) -> QatResult:
    """Fine-tune the calibrated ``model`` (PTQ result) by distillation from its own float self.

    Args:
        model: the calibrated quantized model (left untouched: it becomes the teacher; a copy trains).
            Ignored with ``resume=True``, where student and teacher come from ``<stem>.last.pt`` and
            ``<stem>.state.pt``.
        train_files: training images (labels are not used).
        out: the ``--qat`` path (best epoch); the other files are derived by :func:`qat_paths`.
        scorer: ``scorer(student, teacher) -> (score, metrics)``, higher is better; None keeps the last
            epoch as the best.
        meta: extra checkpoint metadata (family, source, size ...); ``kind``/``epoch`` are added.
        repo: the upstream clone, to unpickle ``<stem>.last.pt`` on resume.
        on_epoch: called on rank 0 with each epoch's record after its files are written (an exception
            raised there stops training with those files complete).
        progress: called with 1 after every optimizer step.
        env: the distributed environment (default: parsed from the torchrun variables).

    Returns:
        :class:`QatResult` with the best student.
    """
    from ..allocator import tune_allocator

    tune_allocator()
    t0 = time.perf_counter()
    env = env or dist_env()
    paths = qat_paths(out)
    device = setup_device(cfg.device, env)
    meta = dict(meta or {})
    state = None
    if resume:
        student, teacher, state = _resume(paths, repo)
    else:
        if model is None:
            raise UsageError("QAT needs a calibrated model", "Run PTQ first (--calib DIR)")
        teacher = model
        student = copy.deepcopy(model)
    groups = sharing_groups(student)
    distil = prepare_distillation(student, teacher, cfg.supervision_stride)
    params = distil.params
    # channels-last: faster convolutions for teacher and student (measured in benchmarks/qat_step.py)
    fmt = preferred_memory_format(device)
    to_device(student, device, fmt), to_device(teacher, device, fmt)
    amp = cfg.amp and device.type == "cuda"
    # the learned scales (when on) must exist before the optimizer; qat_mode before any student forward
    with qat_mode(student), quant_disabled(teacher), _scales(student, cfg, device) as learned:
        lr0 = lr_for_epoch(0, cfg.lr, cfg.epochs)
        optimizer = torch.optim.Adam([{"params": params}] + ([learned.param_group(lr0)] if learned else []), lr=lr0)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        history: list[dict] = []
        best = {"epoch": None, "score": None}
        start = 0
        if state is not None:
            _load_optimizer(optimizer, state["optimizer"], cfg)
            scaler.load_state_dict(state["scaler"])
            history, best, start = list(state["history"]), dict(state["best"]), int(state["epoch"]) + 1
            meta = {**state.get("meta", {}), **meta}
        warning = schedule_warning(cfg, start)
        if warning and env.is_main:
            log.warning(warning)
        forward = wrap_ddp(student, env, device)
        data = TrainImages(train_files, cfg.size, seed=cfg.seed, flip=cfg.flip)
        teacher_state = {k: v.detach().cpu().clone() for k, v in teacher.state_dict().items()}
        for epoch in range(start, cfg.epochs):
            t_epoch = time.perf_counter()
            lr = lr_for_epoch(epoch, cfg.lr, cfg.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_factor", 1.0)
            losses = []
            for batch in data.batches(epoch, cfg.iters, cfg.batch_size, env):
                x = torch.from_numpy(batch).to(device, non_blocking=True).contiguous(memory_format=fmt)
                loss = _loss(forward, teacher, distil, x, amp)
                sync(env)  # every rank got this far: the backward's gradient all-reduce will not wait forever
                losses.append(_update(loss, optimizer, scaler, cfg.clip_grad, params, learned, env))
                if progress:
                    progress(1)
            check_sharing(student, groups)
            sync(env)
            record = {"epoch": epoch, "lr": lr, "loss": _mean_loss(losses, env), "steps": len(losses),
                      "score": None, "metrics": None, "best": False,
                      "lockstep": check_lockstep(_replica_tensors(student), env, "parameters or amax")}
            if env.is_main:
                if scorer is not None:
                    record["score"], record["metrics"] = scorer(student, teacher)
                improved = scorer is None or best["score"] is None or record["score"] > best["score"]
                record["best"] = bool(improved)
                record["seconds"] = round(time.perf_counter() - t_epoch, 2)
                ckpt_meta = {**meta, "kind": "qat", "epoch": epoch, "epochs": cfg.epochs, "score": record["score"],
                             "qat": {k: v for k, v in asdict(cfg).items() if k != "device"}}
                saved = _cpu_model(student)
                if improved:
                    save_quantized(saved, paths.best, {**ckpt_meta, "best": True})
                save_quantized(saved, paths.last, ckpt_meta)
                new_best = {"epoch": epoch, "score": record["score"]} if improved else best
                _write_state(paths.state, epoch, student, teacher_state, optimizer, scaler, history + [record],
                             new_best, meta)
            sync(env)  # rank 0 scored and wrote the epoch (or failed: then every rank stops here)
            record = broadcast_object(record, env)  # the best-epoch choice, made once on rank 0
            history.append(record)
            if record["best"]:
                best = {"epoch": epoch, "score": record["score"]}
            if env.is_main and on_epoch:
                on_epoch(record)
    to_device(student, "cpu", torch.contiguous_format), to_device(teacher, "cpu", torch.contiguous_format)
    best_model = _best_student(student, paths, best, history, cfg, repo) if env.is_main else student
    return QatResult(model=best_model, teacher=teacher, history=history, best_epoch=best["epoch"],
                     best_score=best["score"], paths=paths, resumed_from=start if resume else None,
                     seconds=time.perf_counter() - t0, schedule=lr_phases(cfg.epochs))


def _replica_tensors(model) -> list[torch.Tensor]:
    """What DDP must keep identical on every rank: the parameters and the quantizers' amax buffers."""
    return [p for p in model.parameters()] + [b for n, b in model.named_buffers() if n.endswith("_amax")]


def _mean_loss(losses: list[float], env: DistEnv) -> float:
    """The epoch's mean distillation loss over every rank's steps (each rank's on one process)."""
    if not env.distributed:
        return float(np.mean(losses)) if losses else math.nan
    from .distributed import all_gather_object

    every = [v for part in all_gather_object(losses, env) for v in part]
    return float(np.mean(every)) if every else math.nan


def _loss(forward, teacher, distil: Distillation, x, amp) -> torch.Tensor:
    """Teacher and student forward, the distillation loss (no collective: DDP's runs in the backward)."""
    with torch.autocast(device_type=x.device.type, dtype=torch.float16, enabled=amp):
        with torch.no_grad(), capture_outputs(distil.teacher) as t_out:
            teacher(x)
        with capture_outputs(distil.student) as s_out:
            forward(x)
        return distillation_loss(s_out, t_out)


def _scales(student, cfg: QatConfig, device):
    """The learned activation scales (``--learn-amax``), or None with the calibrated scales frozen."""
    return learned_amax(student, device) if cfg.learn_amax else contextlib.nullcontext(None)


def _load_optimizer(optimizer, saved: dict, cfg: QatConfig) -> None:
    """Restore Adam's state, naming the cause when it does not fit: the learned-scale group (the one with
    ``lr_factor``) exists only in runs with ``--learn-amax``; anything else means another model or placement."""
    saved_learned = any("lr_factor" in group for group in saved.get("param_groups", ()))
    if saved_learned != cfg.learn_amax:
        flag = "--learn-amax" if saved_learned else "--fixed-amax"
        raise InputError(f"the QAT state to resume was trained with {flag}",
                         f"Resume with {flag}, as the interrupted run")
    try:
        optimizer.load_state_dict(saved)
    except ValueError as exc:  # another parameter count: another model, placement or ignore policy
        raise InputError(f"the QAT state to resume does not fit this model ({exc})",
                         "Resume with the checkpoint, --ignore-policy and rules of the interrupted run, or start "
                         "again without --resume") from exc


def _update(loss, optimizer, scaler, clip, params, learned: LearnedAmax | None = None,
            env: DistEnv | None = None) -> float:
    """Backward (DDP averages the gradients over ranks here) and one optimizer step; learned scales get
    their gradients averaged by hand and are written back into the ``_amax`` buffers after the step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if learned is not None and env is not None and env.distributed:
        learned.all_reduce_grads(env.world_size)
    if clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, clip)
    scaler.step(optimizer)
    scaler.update()
    if learned is not None:
        learned.sync_buffers()
    return float(loss.detach())


def _step(forward, teacher, distil: Distillation, x, optimizer, scaler, amp, clip,
          learned: LearnedAmax | None = None) -> float:
    """One single-process distillation step (what ``benchmarks/qat_step.py`` times)."""
    return _update(_loss(forward, teacher, distil, x, amp), optimizer, scaler, clip, distil.params, learned)


def _write_state(path, epoch, student, teacher_state, optimizer, scaler, history, best, meta) -> None:
    state = {"format": STATE_FORMAT, "epoch": epoch, "model": {k: v.detach().cpu() for k, v in student.state_dict().items()},
             "teacher": teacher_state, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
             "history": history, "best": best, "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _best_student(student, paths: QatPaths, best: dict, history: list, cfg: QatConfig, repo):
    """The student of the best epoch: the live one when the last epoch was best, else read back."""
    last_epoch = history[-1]["epoch"] if history else None
    if best["epoch"] is None or best["epoch"] == last_epoch or not paths.best.exists():
        return student
    from ..models.checkpoint import torch_load

    obj, _ = torch_load(paths.best, repo)
    return (obj["model"] if isinstance(obj, dict) else obj).float().eval()
