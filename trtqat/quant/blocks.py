"""Quantizers inside the forward of Ultralytics-style blocks (``block`` rules of ``rules/*.yaml``).

Some of TensorRT's INT8 regions end inside a block's ``forward``, where replacing modules cannot reach:

- ``split-input`` (C2f, C3k2, C2PSA): ``cv1``'s output is split in two. TensorRT moves a DQ forward through
  a Split but never a Q backward over it (several outputs), so with Q/DQ only on the chunks' readers the
  Split runs in float and every reader's Quantize stays a standalone Reformat. ``splitop`` quantizes the
  Split *input*; rule TQ004 (data movement) gives it the scale of every chunk reader, the DQ moves through
  the Split and each reader's Q/DQ pair cancels.
- ``residual-add`` (PSABlock's ``x + attn(x)`` and ``x + ffn(x)``, YOLO26 SPPF's shortcut): a ``QuantAdd``
  on each Add, as for Bottleneck (:mod:`trtqat.quant.residual`); rule TQ005 ties the two addends. Without
  it the skip tensor is also read in float (a standalone Quantize) and the fused conv+Add writes float.
- ``attention`` (Attention): both MatMuls get Q/DQ on both inputs (``matmul_qk``: the scaled queries and the
  keys; ``matmul_av``: the values and the softmax output), the qkv conv's output is quantized before its
  split (q, k and v share one scale, TQ004), and ``out + pe(v)`` is a ``QuantAdd``. That is the placement
  NVIDIA gives for TensorRT's multi-head-attention fusion in explicit quantization (Q/DQ before both batch
  GEMMs and before the residual Add, NVIDIA/TensorRT#3243); a float attention chain cannot avoid a
  standalone Quantize where its output re-enters INT8 (``proj``).

Each block's ``forward`` is replaced *per instance* by a small picklable callable (never by patching the
upstream class), holding its block; the replacement computes what the upstream ``forward`` (``forward_split``
for C2f) computes, with the quantizer modules in between. A quantizer module that an ignore pattern names
(e.g. ``model\\.10\\.m\\.0\\.attn\\.matmul_.*``) is not created, and the forward uses the plain op there.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from .quantizers import input_quantizer
from .residual import QuantAdd


class QuantSplit(torch.nn.Module):
    """``q(x).split(sizes, dim)``: one quantizer on the tensor a Split reads."""

    def __init__(self, num_bits: int = 8):
        super().__init__()
        self._input_quantizer = input_quantizer(num_bits)

    def forward(self, x: torch.Tensor, sizes, dim: int):
        return self._input_quantizer(x).split(sizes, dim)


class QuantMatMul(torch.nn.Module):
    """``q0(a) @ q1(b)``: a MatMul of two activations, both quantized (called in that order)."""

    def __init__(self, num_bits: int = 8):
        super().__init__()
        self._input0_quantizer = input_quantizer(num_bits)
        self._input1_quantizer = input_quantizer(num_bits)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self._input0_quantizer(a) @ self._input1_quantizer(b)


def _split(op, x: torch.Tensor, sizes, dim: int):
    return op(x, sizes, dim) if op is not None else x.split(sizes, dim)


def _add(op, skip: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    return op(skip, branch) if op is not None else skip + branch


def _matmul(op, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return op(a, b) if op is not None else a @ b


class BlockForward:
    """Base of the per-instance forwards: holds the block (pickle and deepcopy handle the cycle)."""

    trtqat_forward = True  # fuse_model's forward_split switch leaves such a forward alone

    def __init__(self, block: torch.nn.Module):
        self.block = block


class SplitForward(BlockForward):
    """C2f / C3k2 (``forward_split``): ``cv1`` -> split in two -> bottlenecks chained on the second half ->
    concat of every part -> ``cv2``; the split reads ``splitop``'s quantized tensor."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        parts = list(_split(getattr(b, "splitop", None), b.cv1(x), (b.c, b.c), 1))
        for m in b.m:
            parts.append(m(parts[-1]))
        return b.cv2(torch.cat(parts, 1))


class PsaSplitForward(BlockForward):
    """C2PSA: ``cv1`` -> split in two -> PSABlocks on the second half -> concat -> ``cv2``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        first, second = _split(getattr(b, "splitop", None), b.cv1(x), (b.c, b.c), 1)
        return b.cv2(torch.cat((first, b.m(second)), 1))


class PsaBlockForward(BlockForward):
    """PSABlock with ``add``: ``x + attn(x)``, then ``x + ffn(x)``, each through its ``QuantAdd``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        x = _add(getattr(b, "addop_attn", None), x, b.attn(x))
        return _add(getattr(b, "addop_ffn", None), x, b.ffn(x))


class SppfForward(BlockForward):
    """SPPF with ``add`` (YOLO26): ``cv1`` -> ``n`` chained max-pools -> concat -> ``cv2``, plus the input."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        maps = [b.cv1(x)]
        for _ in range(getattr(b, "n", 3)):
            maps.append(b.m(maps[-1]))
        return _add(getattr(b, "addop", None), x, b.cv2(torch.cat(maps, 1)))


class AttentionForward(BlockForward):
    """Attention: ``qkv`` -> per-head q, k, v -> softmax(q^T k * scale) -> v attn^T, plus ``pe(v)``, -> ``proj``.

    The qkv tensor is quantized before its split (``splitop``), both MatMuls read quantized inputs
    (``matmul_qk``, ``matmul_av``) and ``out + pe(v)`` is a ``QuantAdd`` (``addop``: ``out`` is its skip input).
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a = self.block
        batch, channels, height, width = x.shape
        qkv = a.qkv(x).view(batch, a.num_heads, 2 * a.key_dim + a.head_dim, height * width)
        q, k, v = _split(getattr(a, "splitop", None), qkv, [a.key_dim, a.key_dim, a.head_dim], 2)
        scores = _matmul(getattr(a, "matmul_qk", None), (q * a.scale).transpose(-2, -1), k).softmax(dim=-1)
        out = _matmul(getattr(a, "matmul_av", None), v, scores.transpose(-2, -1)).view(batch, channels, height, width)
        return a.proj(_add(getattr(a, "addop", None), out, a.pe(v.reshape(batch, channels, height, width))))


#: mode -> {class name: (the quantizer modules it gets: attribute -> type, forward, when it applies)}
_Spec = tuple[dict[str, type], type, Callable[[torch.nn.Module], bool]]
_ALWAYS: Callable[[torch.nn.Module], bool] = lambda m: True  # noqa: E731
_ADDS: Callable[[torch.nn.Module], bool] = lambda m: bool(getattr(m, "add", False))  # noqa: E731

TREATMENTS: dict[str, dict[str, _Spec]] = {
    "split-input": {"C2f": ({"splitop": QuantSplit}, SplitForward, _ALWAYS),
                    "C3k2": ({"splitop": QuantSplit}, SplitForward, _ALWAYS),
                    "C2PSA": ({"splitop": QuantSplit}, PsaSplitForward, _ALWAYS)},
    "residual-add": {"PSABlock": ({"addop_attn": QuantAdd, "addop_ffn": QuantAdd}, PsaBlockForward, _ADDS),
                     "SPPF": ({"addop": QuantAdd}, SppfForward, _ADDS)},
    "attention": {"Attention": ({"splitop": QuantSplit, "matmul_qk": QuantMatMul, "matmul_av": QuantMatMul,
                                 "addop": QuantAdd}, AttentionForward, _ALWAYS)},
}


def quantize_blocks(model: torch.nn.Module, rules: Iterable, skip: Callable[[str], bool], *,
                    num_bits: int = 8) -> list[tuple[str, str]]:
    """Give every block named by an enabled ``block`` rule its quantizer modules and forward (in place).

    Args:
        model: the fused model (its blocks keep their upstream class names).
        rules: the policy's ``block`` rules (:class:`~trtqat.graph.policy.Rule` with ``mode`` and ``blocks``).
        skip: ``skip(name)`` is true for a quantizer module name an ignore pattern keeps float.
        num_bits: quantizer width.

    Returns:
        (module name, rule id) of every quantizer module created, in model order; ignored ones are left out.
    """
    wanted: dict[str, tuple[_Spec, str]] = {}
    for rule in rules:
        for cls in rule.blocks:
            spec = TREATMENTS.get(rule.mode, {}).get(cls)
            if spec is not None:
                wanted[cls] = (spec, rule.id)
    created: list[tuple[str, str]] = []
    for name, module in list(model.named_modules()):
        hit = wanted.get(type(module).__name__)
        if hit is None or isinstance(module.__dict__.get("forward"), BlockForward):
            continue
        (ops, forward, applies), rule_id = hit
        if not applies(module):
            continue
        for attr, op_type in ops.items():
            op_name = f"{name}.{attr}" if name else attr
            if skip(op_name):
                continue
            setattr(module, attr, op_type(num_bits))
            created.append((op_name, rule_id))
        module.forward = forward(module)
    return created
