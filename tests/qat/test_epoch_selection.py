"""Where the best QAT epoch is chosen: a held-out part of --val, never the images of the final table."""
from pathlib import Path

from trtqat.demo import fixtures
from trtqat.quant.ptq import CalibConfig
from trtqat.workflow import EvalOptions, QuantizeJob, epoch_selection


def job(val: Path | None, val_images: int | None = None) -> QuantizeJob:
    return QuantizeJob(ckpt=Path("x.pt"), repo=None, calib=CalibConfig(), qat_out=Path("q.pt"), train_dir=Path("t"),
                       evaluation=EvalOptions(val_dir=val, val_images=val_images))


def test_every_fourth_val_image_selects_and_the_rest_is_the_table(tmp_path):
    files = fixtures.make_images(tmp_path / "val", n=9, size=(32, 32))
    sel = epoch_selection(job(tmp_path / "val"), train_files=[])
    ordered = sorted(files)
    assert sel.source == "val-split" and sel.files == [ordered[0], ordered[4], ordered[8]]
    assert sel.table_files == [f for i, f in enumerate(ordered) if i % 4] and not set(sel.files) & set(sel.table_files)
    assert sel == epoch_selection(job(tmp_path / "val"), train_files=[])  # deterministic
    info = sel.describe(labelled=True)
    assert (info["images"], info["table_images"], info["metric"]) == (3, 6, "mAP@0.5:0.95")
    assert info["note"] == ("best QAT epoch chosen by mAP@0.5:0.95 on 3 held-out --val images (every 4th); "
                            "table on the other 6 --val images")
    capped = epoch_selection(job(tmp_path / "val", val_images=4), train_files=[])  # --val-images first, then split
    assert capped.files == [ordered[0]] and capped.table_files == ordered[1:4]


def test_without_a_usable_val_split_the_train_images_select(tmp_path):
    train = [tmp_path / f"t{i}.jpg" for i in range(40)]
    sel = epoch_selection(job(None), train_files=train)
    assert sel.source == "train" and sel.files == train[:32] and sel.table_files is None
    assert sel.describe(labelled=False)["metric"] == "SQNR dB vs float"
    fixtures.make_images(tmp_path / "one", n=1, size=(32, 32))  # one --val image cannot be split
    sel = epoch_selection(job(tmp_path / "one", val_images=8), train_files=train)
    assert sel.source == "train" and sel.files == train[:8] and sel.table_files is None
