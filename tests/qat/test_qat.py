"""QAT distillation: schedule, layer choice, hooks, loss decrease, invariants, checkpoints and resume."""

import pytest
import torch

from trtqat.demo import fixtures
from trtqat.errors import InputError, UsageError
from trtqat.models.checkpoint import torch_load
from trtqat.quant.checkpoint import amax_table
from trtqat.quant.distributed import DistEnv, dist_env, shard
from trtqat.quant.ptq import CalibConfig, run_ptq
from trtqat.quant.qat import (
    QatConfig,
    capture_outputs,
    lr_for_epoch,
    lr_phases,
    qat_paths,
    schedule_warning,
    sharing_groups,
    supervision_layers,
    train_qat,
)

SIZE = 64


@pytest.fixture(scope="module")
def ptq(yolo_checkpoint, calib_images):
    ckpt, repo = yolo_checkpoint("yolov5")
    res = run_ptq(ckpt, repo=repo, calib=CalibConfig(calib_dir=calib_images, size=SIZE, batch_size=4, calib_batches=1))
    return res, repo


@pytest.fixture(scope="module")
def train_files(tmp_path_factory):
    return fixtures.make_images(tmp_path_factory.mktemp("train") / "images", n=2, size=(96, 64))


def test_reference_lr_schedule():
    """At the reference's peak, 10 epochs give its table exactly; the default peak is 3x that (docs/qat.md)."""
    assert [lr_for_epoch(e, 1e-5) for e in range(10)] == pytest.approx([1e-6] * 3 + [1e-5] * 5 + [1e-6] * 2, rel=1e-9)
    assert [lr_for_epoch(e) for e in range(10)] == pytest.approx([3e-6] * 3 + [3e-5] * 5 + [3e-6] * 2, rel=1e-9)
    assert lr_for_epoch(4, peak=1e-4) == 1e-4 and lr_for_epoch(0, peak=1e-4) == pytest.approx(1e-5)


@pytest.mark.parametrize("epochs,expected", [
    (1, [1.0]), (2, [1.0, 1.0]), (3, [1.0, 1.0, 1.0]), (4, [0.1, 1.0, 1.0, 1.0]),
    (5, [0.1, 1.0, 1.0, 1.0, 0.1]), (20, [0.1] * 6 + [1.0] * 10 + [0.1] * 4)])
def test_lr_schedule_scales_with_the_run(epochs, expected):
    assert [lr_for_epoch(e, 1.0, epochs) for e in range(epochs)] == pytest.approx(expected)
    warm, peak, cool = lr_phases(epochs)
    assert warm + peak + cool == epochs and peak >= 1  # every run reaches --lr
    assert schedule_warning(QatConfig(epochs=epochs)) is None


def test_schedule_warning_when_a_resumed_run_cannot_reach_the_peak():
    cfg = QatConfig(epochs=10, lr=1e-4)
    assert schedule_warning(cfg, start=7) is None  # epoch 7 is still at the peak
    line = schedule_warning(cfg, start=8)
    assert "epochs 8-9" in line and "1.0e-05" in line and "epochs 3-7" in line and "\n" not in line


def test_supervision_layers():
    assert supervision_layers(25) == list(range(24))  # yolov5s: 0..23, Detect (24) excluded
    assert supervision_layers(106, 1)[-1] == 104 and len(supervision_layers(106, 1)) == 105
    assert supervision_layers(25, 5) == [0, 5, 10, 15, 20, 23]


def test_dist_env_parsing():
    assert dist_env({}) == DistEnv(0, 0, 1) and not dist_env({}).distributed
    env = dist_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert env == DistEnv(rank=3, local_rank=1, world_size=4) and env.distributed and not env.is_main
    assert shard(list(range(10)), env) == [3, 7]
    with pytest.raises(UsageError):
        dist_env({"WORLD_SIZE": "two"})
    with pytest.raises(UsageError):
        dist_env({"WORLD_SIZE": "2", "RANK": "2"})


def test_qat_config_validation():
    with pytest.raises(UsageError, match="--epochs"):
        QatConfig(epochs=0)
    with pytest.raises(UsageError, match="--lr"):
        QatConfig(lr=0)


def test_capture_removes_hooks_on_error():
    layer = torch.nn.Identity()
    with pytest.raises(RuntimeError), capture_outputs([layer]) as out:
        layer(torch.ones(1))
        assert out[0] is not None and len(layer._forward_hooks) == 1
        raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0


def test_loss_decreases_and_invariants_hold(ptq, train_files, tmp_path):
    """Three Adam steps on one batch lower the distillation loss, each by at least 5 % of the first loss.

    At --lr 1e-5 (the reference peak) the losses measured 437.8 / 292.1 / 256.5 on this machine's kernels,
    438.2 / 292.9 / 254.7 with AVX2-only kernels and 438.2 / 293.3 / 254.7 on one thread: steps of 145 and
    36-38 against a spread of at most 2 between kernel settings, so a 22-point (5 %) margin is resolved. At
    1e-4 the third step overshot on some kernels (437.8 / 206.3 / 220.8), so the verdict depended on the CPU.
    Frozen weights (no optimizer step) or a broken straight-through gradient give equal losses and fail."""
    res, repo = ptq
    before_amax = amax_table(res.model)
    before_weights = {k: v.clone() for k, v in res.model.state_dict().items()}
    groups = sharing_groups(res.model)
    assert groups, "the yolov5 rules share scales; the test needs shared quantizers"
    cfg = QatConfig(epochs=3, iters=1, batch_size=2, size=SIZE, lr=1e-5, flip=False,  # same batch each step
                    learn_amax=False)
    out = train_qat(res.model, train_files, tmp_path / "qat.pt", cfg)
    losses = [r["loss"] for r in out.history]
    step = 0.05 * losses[0]
    assert losses[0] - losses[1] > step and losses[1] - losses[2] > step, losses
    assert amax_table(out.model) == before_amax  # --fixed-amax: the calibrated scales stay
    assert sharing_groups(out.model) == groups
    for k, v in res.model.state_dict().items():  # the PTQ model (teacher) is untouched
        assert torch.equal(v, before_weights[k]), k
    assert not any(m._forward_hooks for m in out.model.modules())
    obj, _ = torch_load(tmp_path / "qat.pt", repo)
    assert obj["trtqat"]["kind"] == "qat" and obj["trtqat"]["epoch"] == 2
    assert obj["trtqat"]["amax"] == before_amax


def test_saved_checkpoint_computes_what_the_returned_model_computes(ptq, train_files, tmp_path):
    """QAT trains channels-last on the CPU; the checkpoint must be saved in the default layout, else the
    reloaded model runs other convolution kernels whose ulp differences flip int8 roundings (on the trained
    YOLOv7 the reloaded checkpoint scored 0.06-0.17 mAP points away from the in-process model)."""
    from trtqat.quant.modes import validation_mode

    res, repo = ptq
    out = train_qat(res.model, train_files, tmp_path / "qat.pt", QatConfig(epochs=1, iters=1, batch_size=2, size=SIZE))
    obj, _ = torch_load(tmp_path / "qat.pt", repo)
    reloaded = obj["model"].float().eval()
    assert all(p.is_contiguous() for p in reloaded.parameters())
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with validation_mode(out.model):
        live = out.model(x)[0]
    with validation_mode(reloaded):
        again = reloaded(x)[0]
    assert torch.equal(live, again)


def test_resume_continues_to_the_same_result(ptq, train_files, tmp_path):
    res, repo = ptq
    cfg = QatConfig(epochs=2, iters=1, batch_size=1, size=SIZE, lr=1e-3)
    full = train_qat(res.model, train_files, tmp_path / "a" / "qat.pt", cfg)

    def stop(record):
        if record["epoch"] == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_qat(res.model, train_files, tmp_path / "b" / "qat.pt", cfg, on_epoch=stop)
    paths = qat_paths(tmp_path / "b" / "qat.pt")
    assert paths.best.exists() and paths.last.exists() and paths.state.exists()
    assert torch.load(paths.state, weights_only=False)["epoch"] == 0
    assert not list((tmp_path / "b").glob(".*"))  # no temporary files left behind
    resumed = train_qat(None, train_files, tmp_path / "b" / "qat.pt", cfg, resume=True, repo=repo)
    assert resumed.resumed_from == 1 and [r["epoch"] for r in resumed.history] == [0, 1]
    assert resumed.history[0]["loss"] == full.history[0]["loss"]
    assert resumed.history[1]["loss"] == pytest.approx(full.history[1]["loss"], rel=1e-5)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_resume_without_state_is_an_input_error(tmp_path, train_files):
    with pytest.raises(InputError, match="nothing to resume"):
        train_qat(None, train_files, tmp_path / "qat.pt", QatConfig(epochs=1, iters=1), resume=True)


def test_best_epoch_follows_the_scorer(ptq, train_files, tmp_path, monkeypatch):
    res, repo = ptq
    scores = iter([5.0, 3.0])
    cfg = QatConfig(epochs=2, iters=1, batch_size=1, size=SIZE, lr=1e-3)
    out = train_qat(res.model, train_files, tmp_path / "qat.pt", cfg, scorer=lambda s, t: (next(scores), {}),
                    repo=repo)
    assert out.best_epoch == 0 and out.best_score == 5.0 and [r["best"] for r in out.history] == [True, False]
    assert torch_load(tmp_path / "qat.pt", repo)[0]["trtqat"]["epoch"] == 0
    assert torch_load(tmp_path / "qat.last.pt", repo)[0]["trtqat"]["epoch"] == 1


def test_learned_amax_trains_the_activation_scales_and_keeps_them_shared(ptq, train_files, tmp_path):
    """--learn-amax: the activation amax follow the loss, shared quantizers stay one object, the checkpoint
    holds the learned values, and a resume must use the same flag."""
    from pytorch_quantization.nn import TensorQuantizer

    from trtqat.quant.learned_amax import learnable_quantizers

    res, repo = ptq
    before = amax_table(res.model)
    groups = sharing_groups(res.model)
    cfg = QatConfig(epochs=2, iters=1, batch_size=2, size=SIZE, lr=1e-3, flip=False, learn_amax=True)
    original = TensorQuantizer._quant_forward
    out = train_qat(res.model, train_files, tmp_path / "qat.pt", cfg)
    assert TensorQuantizer._quant_forward is original
    after = amax_table(out.model)
    learned = {n for n, _ in learnable_quantizers(out.model)}
    changed = {n for n in before if before[n] != after[n]}
    assert changed and changed <= learned, (changed, learned)
    assert amax_table(res.model) == before  # the teacher keeps its calibrated scales
    assert sharing_groups(out.model) == groups
    obj, _ = torch_load(tmp_path / "qat.pt", repo)
    assert obj["trtqat"]["amax"] == after and obj["trtqat"]["qat"]["learn_amax"] is True
    with pytest.raises(InputError, match="trained with --learn-amax"):
        train_qat(None, train_files, tmp_path / "qat.pt", QatConfig(**{**cfg.__dict__, "epochs": 3,
                                                                        "learn_amax": False}),
                  resume=True, repo=repo)


def test_resume_with_another_parameter_count_names_the_model_not_the_amax_flag():
    """An optimizer state that does not fit for another reason than the amax flag says so (it used to blame
    the flag for every mismatch)."""
    from trtqat.quant.qat import _load_optimizer

    saved = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3).state_dict()
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))], lr=1e-3)
    with pytest.raises(InputError, match="does not fit this model") as err:
        _load_optimizer(optimizer, saved, QatConfig(learn_amax=False))
    assert "amax" not in str(err.value)
