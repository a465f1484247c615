"""Input shapes for trtexec: read the ONNX input, validate the batch range, format ``name:AxBxC``.

Why: an ONNX exported with a dynamic batch has no build shape of its own. trtexec needs
``--minShapes/--optShapes/--maxShapes`` (10.x requires all three together) to make one optimization
profile, and ``--shapes`` for the inference run; without them it silently overrides the dynamic axis
to 1. YOLO exports have one input, usually ``images`` ``[B,3,H,W]``; only B may be dynamic here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UsageError


@dataclass(frozen=True)
class OnnxInput:
    """The first real graph input: its name and shape (``None`` for a symbolic/unknown dim)."""

    name: str
    dims: tuple[int | None, ...]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.dims) and self.dims[0] is None

    def feature_dims(self) -> tuple[int, ...]:
        """The dims after the batch; raises if any is dynamic (trtqat only varies the batch)."""
        rest = self.dims[1:]
        if any(d is None for d in rest):
            raise UsageError(
                f"ONNX input '{self.name}' has dynamic non-batch dims {_fmt_dims(self.dims)}",
                "Export with a fixed image size (only the batch axis may be dynamic)",
            )
        return tuple(int(d) for d in rest)  # type: ignore[arg-type]


def _fmt_dims(dims) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in dims) + "]"


def read_onnx_input(path: str | Path) -> OnnxInput:
    """Read the first non-initializer input of an ONNX file (weights are not loaded).

    Raises:
        InputError: the file is missing, not ONNX, or has no input.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file not found: {path}", "Pass the path of an exported .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError/ValueError/... for non-ONNX bytes
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__})",
            "Pass an ONNX file written by trtqat export or torch.onnx.export",
        ) from exc
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim
        )
        return OnnxInput(value.name, dims)
    raise InputError(f"{path} has no graph input", "Export the model with an input tensor")


@dataclass(frozen=True)
class BatchRange:
    """min <= opt <= max batch of the optimization profile."""

    min: int
    opt: int
    max: int

    @classmethod
    def from_options(cls, min_batch: int | None, opt_batch: int | None, max_batch: int | None) -> BatchRange:
        """Fill unset values: max defaults to opt (or min, or 1), opt to max, min to 1."""
        for flag, value in (
            ("--min-batch", min_batch),
            ("--opt-batch", opt_batch),
            ("--max-batch", max_batch),
        ):
            if value is not None and value < 1:
                raise UsageError(f"{flag} must be >= 1, got {value}")
        mx = max_batch or opt_batch or min_batch or 1
        opt = opt_batch or mx
        mn = min_batch or 1
        if not mn <= opt <= mx:
            raise UsageError(
                f"batch sizes must satisfy min <= opt <= max, got min={mn} opt={opt} max={mx}",
                "Adjust --min-batch/--opt-batch/--max-batch",
            )
        return cls(mn, opt, mx)


def shape_arg(name: str, batch: int, feature_dims: tuple[int, ...]) -> str:
    """``name:BxCxHxW`` as trtexec parses it (it splits at the last ``:``, so ``x:0:1x3`` works)."""
    return f"{name}:" + "x".join(str(d) for d in (batch, *feature_dims))
