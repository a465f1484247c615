"""The scratch YOLO fixtures look like upstream checkpoints: pickle references, module tree, fusing, decode.

Every unpickling happens in a child Python with the fake repo on ``sys.path`` (as a user's clone would
be), so this process never imports a ``models`` package.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trtqat.demo import fixtures

#: the 1/8-width test fixtures stay below these parameter counts (the test prints the measured ones)
PARAMS_MAX = {"yolov5": 600_000, "yolov7": 800_000}  # 0.50 M and 0.65 M; yolov5n is 1.9 M

N_640 = 3 * (80 * 80 + 40 * 40 + 20 * 20)

# Loads one checkpoint and reports facts about it as JSON (argv: ckpt, repo, key or "", "full"/"light").
_PROBE = r"""
import copy, json, sys, time
ckpt_path, repo, key, mode = sys.argv[1:5]
sys.path.insert(0, repo)
import torch
torch.set_num_threads(2)
obj = torch.load(ckpt_path, map_location="cpu", weights_only=False)
model = obj[key] if key else obj
out = {"keys": sorted(obj) if isinstance(obj, dict) else None,
       "entries": {k: type(v).__name__ for k, v in obj.items()} if isinstance(obj, dict) else None,
       "cls": f"{type(model).__module__}.{type(model).__name__}",
       "dtype": str(next(model.parameters()).dtype),
       "models_file": sys.modules["models"].__file__,
       "n_layers": len(model.model),
       "layer_types": [type(m).__name__ for m in model.model],
       "layer_i": [m.i for m in model.model], "layer_f": [m.f for m in model.model],
       "layer_type_attr": [m.type for m in model.model],
       "module_paths": sorted({type(m).__module__ + "." + type(m).__name__ for m in model.modules()}),
       "stride": model.stride.tolist(), "nc": model.nc,
       "names_type": type(model.names).__name__, "n_names": len(model.names),
       "bottleneck_add": [m.add for m in model.modules() if type(m).__name__ == "Bottleneck"],
       "n_mp": sum(type(m).__name__ == "MP" for m in model.model)}
det = model.model[-1]
out["detect"] = {"nl": det.nl, "na": det.na, "no": det.no, "n_m": len(det.m),
                 "anchors_shape": list(det.anchors.shape), "m_has_bias": all(c.bias is not None for c in det.m),
                 "anchors_x_stride": (det.anchors * det.stride.view(-1, 1, 1)).flatten().tolist(),
                 "class_attrs": {k: getattr(type(det), k) for k in
                                 ("stride", "export", "dynamic", "end2end", "include_nms", "concat")
                                 if hasattr(type(det), k)}}
if type(det).__name__ == "IDetect":
    out["detect"]["n_ia"], out["detect"]["n_im"] = len(det.ia), len(det.im)
if mode == "light":
    print("PROBE" + json.dumps(out))
    sys.exit(0)
model = model.float().eval()
x = torch.rand(1, 3, 640, 640, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    decoded, raw = model(x)
    times = []
    for _ in range(3):
        t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
    fused = copy.deepcopy(model).fuse()
    f_decoded, f_raw = fused(x)
out["decoded_shape"] = list(decoded.shape)
out["raw_shapes"] = [list(r.shape) for r in raw]
out["obj_range"] = [decoded[..., 4].min().item(), decoded[..., 4].max().item()]
out["raw_rel_diff"] = max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(raw, f_raw))
out["decoded_rel_diff"] = ((decoded - f_decoded).abs().max() / decoded.abs().max()).item()
out["fused_bn_left"] = sum(type(m).__name__ == "BatchNorm2d" for m in fused.modules())
out["fused_repconv"] = [hasattr(m, "rbr_reparam") and not hasattr(m, "rbr_dense")
                        for m in fused.modules() if type(m).__name__ == "RepConv"]
out["seconds_640"] = min(times)
out["params"] = sum(p.numel() for p in model.parameters())
print("PROBE" + json.dumps(out))
"""


def _probe(ckpt, repo, key="ema", mode="full"):
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(ckpt), str(repo), key, mode],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])


@pytest.fixture(scope="module", params=fixtures.FAMILIES)
def probed(request, yolo_checkpoint):
    ckpt, repo = yolo_checkpoint(request.param, "ema")
    return request.param, _probe(ckpt, repo, "ema")


def test_checkpoint_is_an_upstream_training_dict(probed):
    family, facts = probed
    assert facts["entries"]["ema"] == ("DetectionModel" if family == "yolov5" else "Model")
    assert facts["entries"]["model"] == "NoneType"
    assert facts["dtype"] == "torch.float16"
    assert {"epoch", "best_fitness", "updates", "optimizer"} <= set(facts["keys"])
    assert facts["cls"] == ("models.yolo.DetectionModel" if family == "yolov5" else "models.yolo.Model")
    assert "/repo_" in facts["models_file"]


def test_module_tree_has_upstream_names(probed):
    family, facts = probed
    types = facts["layer_types"]
    det = fixtures.DETECT_INDEX[family]
    assert facts["n_layers"] == det + 1
    assert facts["layer_i"] == list(range(det + 1))
    assert facts["layer_f"][det] == ([17, 20, 23] if family == "yolov5" else [102, 103, 104])
    assert facts["layer_type_attr"][0] == "models.common.Conv"
    assert facts["detect"]["n_m"] == 3 and facts["detect"]["m_has_bias"]
    assert facts["detect"]["anchors_shape"] == [3, 3, 2]
    assert facts["stride"] == [8.0, 16.0, 32.0]
    assert facts["nc"] == 80 and facts["n_names"] == 80
    if family == "yolov5":
        assert types[24] == "Detect" and types[9] == "SPPF"
        assert types.count("C3") == 8 and types.count("Upsample") == 2
        assert facts["bottleneck_add"].count(True) == 7 and facts["bottleneck_add"].count(False) == 4
        assert facts["detect"]["anchors_x_stride"][:2] == [10.0, 13.0]
        assert facts["detect"]["class_attrs"] == {"stride": None, "export": False, "dynamic": False}
        assert facts["names_type"] == "dict"
        assert "models.yolo.Detect" in facts["module_paths"]
    else:
        assert types[105] == "IDetect" and types[51] == "SPPCSPC"
        assert types[102:105] == ["RepConv"] * 3
        assert facts["n_mp"] == 5 and [types[i] for i in (12, 25, 38, 76, 89)] == ["MP"] * 5
        assert facts["layer_f"][80] == [-1, -3, 63] and facts["layer_f"][93] == [-1, -3, 51]
        assert facts["detect"]["n_ia"] == 3 and facts["detect"]["n_im"] == 3
        assert facts["detect"]["class_attrs"] == {"stride": None, "export": False, "end2end": False,
                                                  "include_nms": False, "concat": False}
        assert facts["names_type"] == "list"
        assert {"models.common.ImplicitA", "models.common.ImplicitM"} <= set(facts["module_paths"])
    assert "torch.nn.modules.activation.SiLU" in facts["module_paths"]


def test_eval_output_shapes_and_scores(probed):
    _, facts = probed
    assert facts["decoded_shape"] == [1, N_640, 85]
    assert facts["raw_shapes"] == [[1, 3, 80, 80, 85], [1, 3, 40, 40, 85], [1, 3, 20, 20, 85]]
    low, high = facts["obj_range"]
    assert 0.0 <= low < 0.05 and 0.05 < high <= 1.0  # non-degenerate objectness


def test_fuse_preserves_outputs(probed):
    family, facts = probed
    # 1.1e-4 on the GPU machine's Xeon with torch 2.11 (other kernels, other summation orders): 3e-4 leaves room
    assert facts["raw_rel_diff"] < 3e-4
    # Folding reorders fp32 sums through ~100 convs; boxes amplify logit noise (wh = (2*sigmoid)^2 * anchor).
    assert facts["decoded_rel_diff"] < 1e-3  # boxes = (2*sigmoid)^2 * anchor amplify fp32 fusion rounding
    assert facts["fused_bn_left"] == 0
    if family == "yolov7":
        assert facts["fused_repconv"] == [True, True, True]


def test_fixture_is_small_enough_for_fast_tests(probed):
    """The 1/8-width fixtures keep the suite fast on 2 cores: asserted by size, not by a timing (the forward
    time is printed only; a busy machine must not fail a test)."""
    family, facts = probed
    print(f"{family}: fuse rel diff raw {facts['raw_rel_diff']:.1e} decoded {facts['decoded_rel_diff']:.1e}")
    print(f"{family}: {facts['params']} parameters, 640x640 CPU forward {facts['seconds_640'] * 1000:.0f} ms")
    assert facts["params"] < PARAMS_MAX[family]


@pytest.mark.parametrize("family,form,key", [
    ("yolov5", "model", "model"), ("yolov7", "model", "model"), ("yolov5", "bare", ""),
])
def test_other_checkpoint_forms(yolo_checkpoint, family, form, key):
    ckpt, repo = yolo_checkpoint(family, form)
    facts = _probe(ckpt, repo, key, mode="light")
    if family == "yolov7" and form == "model":
        assert facts["keys"] == ["epoch", "model", "optimizer", "training_results"]
    elif form == "model":
        assert facts["entries"]["ema"] == "NoneType" and facts["entries"]["model"] == "DetectionModel"
    else:
        assert facts["keys"] is None
    assert facts["n_layers"] == fixtures.DETECT_INDEX[family] + 1


def test_train_form_has_distinct_model_and_ema(yolo_checkpoint):
    ckpt, repo = yolo_checkpoint("yolov5", "train")
    code = ("import sys; sys.path.insert(0, sys.argv[2]); import torch;"
            "c = torch.load(sys.argv[1], weights_only=False);"
            "a, b = c['model'].model[0].conv.weight, c['ema'].model[0].conv.weight;"
            "print(a.shape == b.shape, bool((a != b).any()))")
    proc = subprocess.run([sys.executable, "-c", code, str(ckpt), str(repo)], check=False, capture_output=True, text=True)
    assert proc.stdout.split() == ["True", "True"], proc.stderr[-2000:]


def test_small_nc_fp32_checkpoint_and_no_models_import_in_caller(tmp_path):
    code = ("import sys; from trtqat.demo.fixtures import make_checkpoint;"
            "make_checkpoint('yolov5', sys.argv[1], form='bare', half=False, nc=3);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('models', 'utils', 'torch'))[:1])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
    facts = _probe(tmp_path / "yolov5_bare.pt", tmp_path / "repo_yolov5", "")
    assert facts["dtype"] == "torch.float32"
    assert facts["decoded_shape"] == [1, N_640, 8] and facts["names_type"] == "dict" and facts["n_names"] == 3


def test_write_repo_files_and_torchvision_variant(tmp_path):
    plain = fixtures.write_repo("yolov7", tmp_path / "plain")
    assert sorted(str(p.relative_to(plain)) for p in plain.rglob("*.py")) == sorted(fixtures.REPO_FILES)
    tv = fixtures.write_repo("yolov5", tmp_path / "tv", import_torchvision=True)
    assert (tv / "models/common.py").read_text().splitlines()[0].startswith("import torchvision")
    assert "torchvision" not in (plain / "models/common.py").read_text()
    with pytest.raises(ValueError, match="yolov9"):
        fixtures.write_repo("yolov9", tmp_path / "x")
    ultra = fixtures.write_repo("yolo11", tmp_path / "ultra")  # one scratch ultralytics package for v8/11/26
    assert sorted(str(p.relative_to(ultra)) for p in ultra.rglob("*.py")) == sorted(fixtures.ULTRALYTICS_FILES)


def test_make_images_sizes_formats_labels(tmp_path):
    paths = fixtures.make_images(tmp_path / "images", n=5, labels=True, nc=4)
    from PIL import Image

    assert [p.name for p in paths] == [f"{i:012d}.{e}" for i, e in zip(range(1, 6), ["jpg", "png", "jpg", "png", "jpg"])]
    sizes = []
    for p in paths:
        with Image.open(p) as im:
            assert im.mode == "RGB"
            sizes.append(im.size)
        rows = [r.split() for r in (tmp_path / "labels" / f"{p.stem}.txt").read_text().splitlines()]
        assert 1 <= len(rows) <= 4
        for c, *box in rows:
            assert 0 <= int(c) < 4 and all(0.0 <= float(v) <= 1.0 for v in box)
    assert sizes == [(320, 240), (240, 320), (640, 480), (416, 416), (500, 375)]
    again = fixtures.make_images(tmp_path / "again", n=2, size=(64, 48), formats=("png",))
    assert [Image.open(p).size for p in again] == [(64, 48), (64, 48)]
    same = fixtures.make_images(tmp_path / "same", n=2, size=(64, 48), formats=("png",))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in same]


def test_corrupt_image_is_unreadable(tmp_path):
    from PIL import Image, UnidentifiedImageError

    path = fixtures.make_corrupt_image(tmp_path)
    with pytest.raises((UnidentifiedImageError, OSError)), Image.open(path) as im:
        im.load()


def test_coco_json_matches_labels(tmp_path):
    paths = fixtures.make_images(tmp_path / "images", n=3, labels=True)
    dest = fixtures.make_coco_json(paths, tmp_path / "instances.json")
    data = json.loads(dest.read_text())
    n_labels = sum(len((tmp_path / "labels" / f"{p.stem}.txt").read_text().split("\n")) - 1 for p in paths)
    assert [im["id"] for im in data["images"]] == [1, 2, 3]
    assert len(data["annotations"]) == n_labels and len(data["categories"]) == 80
    assert {c["id"] for c in data["categories"]} == set(fixtures.COCO80_TO_91) and max(fixtures.COCO80_TO_91) == 90
    for ann in data["annotations"]:
        im = data["images"][ann["image_id"] - 1]
        x, y, w, h = ann["bbox"]
        assert x >= -0.01 and y >= -0.01 and x + w <= im["width"] + 0.01 and y + h <= im["height"] + 0.01
    from pycocotools.coco import COCO  # a dependency of trtqat

    assert len(COCO(str(dest)).getAnnIds()) == n_labels


def test_fixtures_module_imports_no_heavy_dependencies():
    code = "import sys, trtqat.demo.fixtures; print(sorted({'torch', 'numpy', 'PIL'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr
