"""Helpers for the trtexec tests (imported by conftest.py and the test modules): fixture file names,
the fake trtexec script, and a tiny ONNX builder."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trtexec"  # tests/fixtures/trtexec (see SOURCES.md there)
CONVONLY_GRAPH = "trt8.4_a100_resnet18-qat-convonly_best.graph.json"
CONVONLY_PROFILE = "trt8.4_a100_resnet18-qat-convonly_best.profile.json"
RESIDUAL_GRAPH = "trt8.4_a100_resnet18-qat-residual_best.graph.json"
QGAP_GRAPH = "trt8.4_a100_resnet18-qat-residual-qgap_best.graph.json"
MNIST10_GRAPH = "trt10.16_mnist-fp32_detailed.layerinfo.json"
MNIST10_LOG = "trt10.16_h100_mnist-fp32_build-and-run.log"
MNIST8_LOG = "trt8.2.3_mnist-fp32_load-run-verbose.log"
MNIST8_NAMES_ONLY = "trt8.2.3_mnist-fp32_names-only.layerinfo.json"
MNIST8_FAILED_LOG = "trt8.2.3_mnist-fp16_build-FAILED-stdout-only.log"


# The fake trtexec: behaves like the real one where trtqat depends on it. It records argv, prints the
# version banner, rejects flags the emulated version does not have (as real trtexec does: non-zero exit),
# copies the canned resnet18 exports to --exportLayerInfo/--exportProfile, writes --saveEngine, and
# prints the real 10.16 performance summary. FAKE_TRTEXEC_FAIL=1 makes it fail like a broken build.
SCRIPT = r"""
import json, os, shutil, sys

argv = sys.argv[1:]
with open(os.environ["FAKE_TRTEXEC_RECORD"], "a") as fh:
    fh.write(json.dumps(argv) + "\n")
major, minor, patch = (int(x) for x in os.environ.get("FAKE_TRTEXEC_VERSION", "10.16.1").split("."))
code = major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch
print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(argv))
if argv and argv[0] in ("--help", "--version", "-h"):
    print("=== Model Options ===\n  --onnx=<file>               ONNX model\n=== Build Options ===")
    sys.exit(0)
removed = set()
if major >= 11:
    removed |= {"--int8", "--fp16", "--best", "--calib"}
if major >= 10:
    removed |= {"--workspace", "--buildOnly", "--explicitBatch"}
if (major, minor) < (8, 4):
    removed |= {"--memPoolSize"}
for arg in argv:
    if arg.split("=")[0] in removed:
        print(f"[07/07/2026-02:10:45] [E] Unknown option: {arg}", file=sys.stderr)
        print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(argv))
        sys.exit(1)
opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
print("[07/07/2026-02:10:45] [I] === Model Options ===")
print(f"[07/07/2026-02:10:45] [I] TensorRT version: {major}.{minor}.{patch}")
if os.environ.get("FAKE_TRTEXEC_FAIL") == "1":
    print("[07/07/2026-02:10:46] [I] Start parsing network model")
    print("[07/07/2026-02:10:46] [E] Error[4]: [network.cpp::validate::3004] Error Code 4: Internal Error "
          "(images: dynamic input is missing dimensions in profile 0.)", file=sys.stderr)
    print(f"&&&& FAILED TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(argv))
    sys.exit(1)
fixtures = os.environ["FAKE_TRTEXEC_FIXTURES"]
if "saveEngine" in opts:
    with open(opts["saveEngine"], "wb") as fh:
        fh.write(b"fake engine")
if "exportLayerInfo" in opts:
    shutil.copyfile(os.path.join(fixtures, os.environ["FAKE_TRTEXEC_GRAPH"]), opts["exportLayerInfo"])
if "exportProfile" in opts:
    shutil.copyfile(os.path.join(fixtures, os.environ["FAKE_TRTEXEC_PROFILE"]), opts["exportProfile"])
with open(os.path.join(fixtures, os.environ["FAKE_TRTEXEC_SUMMARY_LOG"])) as fh:
    lines = fh.read().splitlines()
start = next(i for i, l in enumerate(lines) if l.endswith("=== Performance summary ==="))
for line in lines[start:]:
    if line.startswith("&&&&"):
        break
    print(line)
print(f"&&&& PASSED TensorRT.trtexec [TensorRT v{code}] # trtexec " + " ".join(argv))
"""


class FakeTrtexec:
    """Handle returned by the ``fake_trtexec`` fixture."""

    def __init__(self, path: Path, record: Path, monkeypatch):
        self.path = path
        self.record = record
        self._mp = monkeypatch

    def set(self, *, version: str | None = None, fail: bool | None = None) -> None:
        if version is not None:
            self._mp.setenv("FAKE_TRTEXEC_VERSION", version)
        if fail is not None:
            self._mp.setenv("FAKE_TRTEXEC_FAIL", "1" if fail else "0")

    def calls(self) -> list[list[str]]:
        """argv (without argv[0]) of every invocation, in order."""
        if not self.record.is_file():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def runs(self) -> list[list[str]]:
        """The calls that were not version/help probes."""
        return [c for c in self.calls() if not (c and c[0] in ("--help", "--version"))]


def make_onnx(path: Path, dims=("batch", 3, 32, 32), name: str = "images") -> Path:
    """A one-node ONNX (Relu) with input ``name`` of shape ``dims`` (a str dim is symbolic)."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, list(dims))
    graph = helper.make_graph([helper.make_node("Relu", [name], ["out"])], "g", [inp], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path
