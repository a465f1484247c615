"""Shared by the family tests of ``trtqat rules`` / ``trtqat quantize --ptq`` (YOLOv5, YOLOv7, Ultralytics):
the CLI call, the per-test ``sys.modules`` restore (every fake repo's package is unpickled in this process)
and the cached ``rules --json`` and PTQ factories, one per module as before."""
from __future__ import annotations

import json

import pytest
from rules_helpers import SIZE, checkpoint_form, rules_cli
from upstream_modules import restore, restore_upstream_modules, upstream_modules  # noqa: F401 (autouse)


@pytest.fixture(scope="module")
def rules_json(yolo_checkpoint):
    """Factory ``family -> trtqat rules --json`` of the family's fixture checkpoint, cached."""
    cache = {}

    def get(family):
        if family not in cache:
            before = upstream_modules()
            ckpt, repo = yolo_checkpoint(family, checkpoint_form(family))
            cache[family] = json.loads(rules_cli("rules", ckpt, "--repo", repo, "--size", SIZE, "--json").stdout)
            restore(before)
        return cache[family]

    return get


@pytest.fixture(scope="module")
def ptq(yolo_checkpoint, calib_images, tmp_path_factory):
    """Factory ``family -> (ptq.pt, repo, summary JSON)`` from ``trtqat quantize --ptq`` (max, 2 images), cached."""
    root = tmp_path_factory.mktemp("rules_ptq")
    cache = {}

    def get(family):
        if family not in cache:
            before = upstream_modules()
            ckpt, repo = yolo_checkpoint(family, checkpoint_form(family))
            out = root / f"{family}_ptq.pt"
            res = rules_cli("quantize", ckpt, "--repo", repo, "--calib", calib_images, "--size", SIZE, "--batch-size",
                            2, "--calib-batches", 1, "--calib-method", "max", "--ptq", out, "--json")
            restore(before)
            cache[family] = (out, repo, json.loads(res.stdout))
        return cache[family]

    return get
