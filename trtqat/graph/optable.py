"""How TensorRT treats each ONNX op in an explicit-quantization (Q/DQ) network, as plain data.

Why a table: TensorRT's Q/DQ processing is a fixed set of rewrites (DQ propagated forward and Q
backward through *commuting* ops, fusion of DQ/Q into *weighted* and *quantizable* ops, pointwise
epilogues fused into the producing conv). Which op falls in which class is documentation, not
logic, and changes between TensorRT releases. A new release is an edit of :data:`OPS` (or of the
``versions`` overrides of one entry), never of the simulator in :mod:`trtqat.graph.lint`.

Sources (abbreviated in each entry; see docs/lint.md for the links):
  DOC-EQ   TensorRT developer guide, "Explicit Quantization": "Processing of Q/DQ Networks",
           "Q/DQ Layer-Placement Recommendations", "Q/DQ Limitations" (8.x and 10.x).
  DOC-FUS  TensorRT developer guide, "Types of Fusions" / "Q/DQ Fusion" (8.x).
  DOC-ONNX onnx-tensorrt docs/operators.md (INT8 columns, 8.4/8.6/10.x).
  OBS-TREX TREx QAT ResNet18 engines (TensorRT 8.4, A100) in shared/fixtures/trtexec.
  MAINT-n  NVIDIA maintainer comment in NVIDIA/TensorRT issue #n.
  HEUR     our inference (mathematically exact for per-tensor scales), unverified on a GPU.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: TensorRT versions the table distinguishes (``--trt-version``).
VERSIONS = ("8.6", "10", "11")
DEFAULT_VERSION = "10"


@dataclass(frozen=True)
class OpBehaviour:
    """What TensorRT's Q/DQ optimizer does with one ONNX op type.

    Attributes:
        op: ONNX op type.
        weighted: Conv-like op with constant weights: ``DQ(x), DQ(W) -> op`` fuses into one INT8-input
            kernel that may write INT8 (trailing Q fused) or float (free) (F1).
        quantizable: non-weighted op that runs INT8 only as ``DQ -> op -> Q`` (F3).
        dq_forward: a DQ on its input may move to its output (P1).
        q_backward: a Q on its output may move to its inputs (P2).
        pointwise: fusable into the epilogue of the producing weighted op (F1).
        compute: counted as a compute layer in the INT8 share (shape ops are not).
        data_inputs: indices of the inputs that carry activations (``None`` = all).
        condition: attribute condition for the commuting behaviour, ``"attr=value"`` (e.g. Resize
            ``mode=nearest``); when it does not hold the op is float-only.
        confidence: ``doc`` / ``obs`` / ``maint`` / ``heur`` / ``medium``.
        source: where the behaviour is documented.
        versions: per-TensorRT-version overrides of the fields above.
    """

    op: str
    weighted: bool = False
    quantizable: bool = False
    dq_forward: bool = False
    q_backward: bool = False
    pointwise: bool = False
    compute: bool = True
    data_inputs: tuple[int, ...] | None = None
    condition: str | None = None
    confidence: str = "doc"
    source: str = ""
    versions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def commuting(self) -> bool:
        return self.dq_forward or self.q_backward

    @property
    def float_only(self) -> bool:
        return not (self.weighted or self.quantizable or self.commuting)

    @property
    def kind(self) -> str:
        """One word for reports: weighted / quantizable / commuting / pointwise / shape / float."""
        if self.weighted:
            return "weighted"
        if self.quantizable:
            return "quantizable"
        if self.commuting:
            return "commuting" if self.compute else "shape"
        return "pointwise" if self.pointwise else "float"


@dataclass(frozen=True)
class VersionInfo:
    """Build-mode facts of one TensorRT version that change what "float" means in a report."""

    version: str
    strongly_typed: bool
    float_precision: str
    source: str


def _w(op: str, **kw: Any) -> OpBehaviour:
    return OpBehaviour(op, weighted=True, data_inputs=(0,), **kw)


def _copy(op: str, data_inputs: tuple[int, ...] | None = (0,), **kw: Any) -> OpBehaviour:
    """A data-movement op: exact for per-tensor Q/DQ, not a compute layer (HEUR, DOC-ONNX INT8 I/O)."""
    kw.setdefault("confidence", "heur")
    kw.setdefault("source", "DOC-ONNX lists INT8 I/O; HEUR: exact for per-tensor scales (ModelOpt copy ops)")
    return OpBehaviour(op, dq_forward=True, q_backward=True, compute=False, data_inputs=data_inputs, **kw)


def _pw(op: str, **kw: Any) -> OpBehaviour:
    kw.setdefault("source", "DOC-FUS 'Types of Fusions': activation/pointwise fused into conv; MAINT-2592")
    return OpBehaviour(op, pointwise=True, data_inputs=(0,), **kw)


def _nofloat(op: str) -> OpBehaviour:
    return OpBehaviour(op, compute=False, confidence="heur", source="shape/constant computation, no tensor data")


_ENTRIES: tuple[OpBehaviour, ...] = (
    # F1 weighted ops: INT8 input via DQ, weights via Q/DQ or INT8 initializer + DQ.
    _w("Conv", source="DOC-EQ Q/DQ fusion; OBS-TREX CaskConvolution Int8 in"),
    _w("ConvTranspose", source="DOC-EQ Q/DQ fusion (weights per-channel on axis 1)"),
    _w("Gemm", source="DOC-EQ; OBS-TREX fc: Int8 in, FP32 out"),
    _w("MatMul", confidence="heur", source="DOC-EQ (MatMul with constant weights fuses like Gemm)"),
    # F3 non-weighted quantizable ops: DQ -> op -> Q runs INT8; without a Q out it runs float.
    OpBehaviour("AveragePool", quantizable=True, data_inputs=(0,),
                source="DOC-EQ quantizable layers; 'non-weighted layers with INT8 inputs require INT8 outputs'"),
    OpBehaviour("GlobalAveragePool", quantizable=True, data_inputs=(0,),
                source="DOC-EQ; OBS-TREX residual-qgap: GAP runs INT8->INT8 (CudaPooling)"),
    OpBehaviour("Add", quantizable=True, source="DOC-EQ ElementWise quantizable; residual fusion F2"),
    OpBehaviour("Mul", quantizable=True, confidence="heur", source="DOC-EQ ElementWise quantizable"),
    # P1/P2 commuting compute ops.
    OpBehaviour("MaxPool", dq_forward=True, q_backward=True, data_inputs=(0,),
                source="DOC-EQ canonical commuting example; OBS-TREX ConvActPool"),
    OpBehaviour("GlobalMaxPool", dq_forward=True, q_backward=True, data_inputs=(0,), source="DOC-EQ"),
    OpBehaviour("Concat", dq_forward=True, q_backward=True, confidence="obs",
                source="DOC-EQ; MAINT-4366 (a Quantize copied onto each Concat input); "
                       "yolo_deepstream QAT guide (unequal scales => extra conversions)"),
    OpBehaviour("Resize", dq_forward=True, q_backward=True, data_inputs=(0,), condition="mode=nearest",
                confidence="medium",
                source="MAINT-2976 ('resize -> Q/DQ -> conv runs resize in INT8', TRT 8.4); "
                       "#3542 reports the opposite on 8.4",
                versions={"8.6": {"confidence": "medium"}, "10": {"confidence": "medium"},
                          "11": {"confidence": "medium"}}),
    OpBehaviour("Upsample", dq_forward=True, q_backward=True, data_inputs=(0,), condition="mode=nearest",
                confidence="medium", source="as Resize (deprecated ONNX op)"),
    # Data-movement ops: commute for per-tensor scales, not compute layers.
    _copy("Reshape"), _copy("Flatten"), _copy("Squeeze"), _copy("Unsqueeze"), _copy("Transpose"),
    _copy("Slice"), _copy("Split"), _copy("Gather"), _copy("Identity"), _copy("Pad"),
    _copy("SpaceToDepth"), _copy("DepthToSpace"),
    # F1 pointwise epilogues (fused into the producing weighted op).
    _pw("Relu"), _pw("LeakyRelu"), _pw("Clip", source="DOC-FUS; OBS PWN(Clip_16)"),
    _pw("Sigmoid", source="DOC-FUS; SiLU = Sigmoid + Mul(x, sigmoid(x)) fuses as one pointwise"),
    _pw("Tanh"), _pw("HardSigmoid"), _pw("HardSwish"), _pw("Elu"), _pw("Selu"), _pw("Softplus"),
    _pw("PRelu"), _pw("Mish", confidence="heur"),
    _pw("Gelu", confidence="heur", source="DOC-FUS: GELU fusion needs Turing+ and equal in/out precision"),
    _pw("BatchNormalization", source="DOC-FUS: BatchNorm folded into the preceding conv, when its parameters "
                                     "are initializers; through other nodes (an Identity of a shared constant) "
                                     "it is not folded and runs as its own float layer (seen on TensorRT 8.5)"),
    # Not tensor computations at all.
    _nofloat("Constant"), _nofloat("Shape"), _nofloat("ConstantOfShape"), _nofloat("Range"),
    _nofloat("Size"),
    # Detection post-processing in the graph (YOLO26's NMS-free head: top-k selection of the candidates,
    # gathered boxes and scores, class index = flat index mod nc). It runs after the float detect output
    # convs and reads no Q/DQ: float layers by design, named here so lint knows them.
    OpBehaviour("TopK", data_inputs=(0,), confidence="heur",
                source="ITopKLayer; DOC-ONNX lists no INT8 for TopK; end-to-end detection heads select in float"),
    OpBehaviour("ReduceMax", data_inputs=(0,), confidence="heur",
                source="IReduceLayer; no Q/DQ propagation across reductions documented (DOC-EQ)"),
    OpBehaviour("ArgMax", data_inputs=(0,), compute=False, confidence="heur",
                source="ITopKLayer (k=1) writing indices; index output, no tensor data"),
    OpBehaviour("GatherElements", data_inputs=(0,), compute=False, confidence="heur",
                source="IGatherLayer (element mode): data movement by run-time indices; no Q/DQ propagation "
                       "across it documented (DOC-EQ), so float"),
    OpBehaviour("Expand", data_inputs=(0,), compute=False, confidence="heur",
                source="broadcast copy (ISliceLayer/IElementWise); in detection heads it expands index tensors"),
    OpBehaviour("Tile", data_inputs=(0,), compute=False, confidence="heur", source="copy; as Expand"),
    OpBehaviour("Mod", compute=False, confidence="heur",
                source="integer index arithmetic in detection heads (class id = flat top-k index mod nc)"),
    OpBehaviour("Equal", compute=False, confidence="heur",
                source="boolean comparison; in detection heads on shape values (the expand shape of the "
                       "top-k indices with a dynamic batch)"),
    OpBehaviour("Where", data_inputs=(1, 2), compute=False, confidence="heur",
                source="ISelectLayer: element selection, no arithmetic; in detection heads it selects shape values"),
    OpBehaviour("Cast", compute=False, confidence="heur",
                source="onnx-tensorrt imports Cast as IIdentityLayer with an output type (8.x) or ICastLayer "
                       "(10.x), also when the type does not change; no source says whether TensorRT removes a "
                       "same-type cast before Q/DQ propagation, so lint keeps the conservative choice: a float "
                       "layer that no Q/DQ moves across (a no-op Cast is reported as PARSE012)"),
)

#: op type -> behaviour (default TensorRT version; see :func:`behaviour` for others).
OPS: Mapping[str, OpBehaviour] = MappingProxyType({e.op: e for e in _ENTRIES})

VERSION_INFO: Mapping[str, VersionInfo] = MappingProxyType({
    "8.6": VersionInfo("8.6", False, "FP16 with --fp16/--best, else FP32 (weak typing)",
                       "DOC 8.x: Q/DQ networks need --int8; --best adds FP16"),
    "10": VersionInfo("10", False, "FP16 with --fp16/--best; ONNX dtype with --stronglyTyped (recommended)",
                      "DOC 10.x explicit quantization: strong typing recommended, weak typing deprecated 10.12"),
    "11": VersionInfo("11", True, "the ONNX tensor dtype (always strongly typed)",
                      "DOC 10->11 migration guide: precision flags removed"),
})

_FLOAT_DEFAULT = OpBehaviour("*", confidence="doc",
                             source="DOC-EQ: ops outside the quantizable/commuting sets run in float")


def check_version(version: str) -> str:
    """Return ``version`` if the table knows it (callers turn the ValueError into a UsageError)."""
    if version not in VERSIONS:
        raise ValueError(f"unknown TensorRT version {version!r}; choose one of {', '.join(VERSIONS)}")
    return version


def behaviour(op_type: str, version: str = DEFAULT_VERSION, attrs: Mapping[str, Any] | None = None
              ) -> OpBehaviour:
    """The behaviour of ``op_type`` under TensorRT ``version``.

    Unknown ops are float-only compute layers. When the entry has a ``condition`` that ``attrs``
    does not satisfy (e.g. a linear Resize), the op is float-only too: interpolation is not exact on
    integers, so TensorRT cannot commute Q/DQ across it.
    """
    check_version(version)
    entry = OPS.get(op_type)
    if entry is None:
        return dataclasses.replace(_FLOAT_DEFAULT, op=op_type)
    if version in entry.versions:
        entry = dataclasses.replace(entry, **dict(entry.versions[version]))
    if entry.condition and attrs is not None and not _holds(entry.condition, attrs):
        entry = dataclasses.replace(entry, dq_forward=False, q_backward=False,
                                    source=f"{entry.source}; condition {entry.condition} not met")
    return entry


def _holds(condition: str, attrs: Mapping[str, Any]) -> bool:
    key, _, want = condition.partition("=")
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode()
    if value is None and key == "mode":  # ONNX default for Resize/Upsample mode
        value = "nearest"
    return str(value) == want


def table_rows(version: str = DEFAULT_VERSION) -> list[dict[str, Any]]:
    """The table as JSON-ready rows for docs and ``--json`` output."""
    rows = []
    for op in OPS:
        b = behaviour(op, version)
        rows.append({"op": op, "kind": b.kind, "weighted": b.weighted, "quantizable": b.quantizable,
                     "dq_forward": b.dq_forward, "q_backward": b.q_backward, "pointwise": b.pointwise,
                     "compute": b.compute, "condition": b.condition, "confidence": b.confidence,
                     "source": b.source})
    return rows
