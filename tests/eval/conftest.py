"""Fixtures for the ``trtqat eval`` tests: one random-weight YOLOv5 fixture and its float ONNX exports.

Built once per session at 160 px (fast on 2 cores). Exports skip trtqat's own verification (that is the
export tests' subject); the eval tests compare the formats themselves. Checkpoints are unpickled in this
process, so ``sys.modules``' upstream packages are restored after each test (both fake repos provide a
top-level ``models``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from eval_sizes import SIZE
from upstream_modules import restore, restore_upstream_modules, upstream_modules  # noqa: F401 (autouse)


@dataclass(frozen=True)
class EvalModels:
    ckpt: Path
    repo: Path
    onnx_dynamic: Path  # fp32, dynamic batch, decoded head
    onnx_static1: Path  # fp32, static batch 1, decoded head
    onnx_raw: Path  # fp32, dynamic batch, raw head (anchors/strides in the metadata)
    onnx_raw_bare: Path  # the raw export without anchors in its metadata
    val: Path  # labelled images (labels/ beside images/)


def export_float(ckpt: Path, repo: Path, save: Path, **kw) -> Path:
    from trtqat.quant.export import ExportConfig, export_model

    export_model(ckpt, repo, ExportConfig(size=SIZE, save=save, no_quant=True, float_dtype="fp32", verify=False, **kw))
    return save


@pytest.fixture(scope="session")
def eval_models(yolo_checkpoint, calib_images, tmp_path_factory) -> EvalModels:
    import onnx

    from trtqat.models import load_checkpoint
    from trtqat.models.detect_head import ANCHORS_KEY, raw_head_from_model

    before = upstream_modules()
    root = tmp_path_factory.mktemp("eval_models")
    ckpt, repo = yolo_checkpoint("yolov5")
    dynamic = export_float(ckpt, repo, root / "dynamic.onnx", dynamic=True)
    static1 = export_float(ckpt, repo, root / "static1.onnx")
    bare = export_float(ckpt, repo, root / "raw_bare.onnx", dynamic=True, head="raw")
    model = onnx.load(str(bare))
    meta = {p.key: p.value for p in model.metadata_props}
    if ANCHORS_KEY in meta:  # trtqat export writes them itself: make the bare variant by removing them
        raw = root / "raw.onnx"
        raw.write_bytes(bare.read_bytes())
        kept = [(p.key, p.value) for p in model.metadata_props if p.key not in ("anchors", "strides")]
        del model.metadata_props[:]
        for k, v in kept:
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(bare))
    else:
        raw = root / "raw.onnx"
        for k, v in raw_head_from_model(load_checkpoint(ckpt, repo).model).to_metadata().items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(raw))
    restore(before)
    return EvalModels(ckpt=ckpt, repo=repo, onnx_dynamic=dynamic, onnx_static1=static1, onnx_raw=raw,
                      onnx_raw_bare=bare, val=calib_images)
