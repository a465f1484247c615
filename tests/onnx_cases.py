"""Small Q/DQ ONNX graphs for the rule cases, written in the ONNX textual syntax with three macros.

  [n] y = QDQ(x, sK)     -> [n_q] QuantizeLinear + [n_dq] DequantizeLinear (per-tensor scale sK)
  [n] y = QCONVk(x, sK)  -> QDQ(x) named n_in, per-channel weight Q/DQ named n_w, [n] Conv to 2 channels
                            from k input channels (k = 2 when omitted; 4 or 6 after a Concat)
  [n] y = FCONV(x)       -> [n] Conv with a float weight (an unquantized layer, e.g. a detect conv)

Every model's input is ``x``, float[1,2,8,8]. Shared by the rule cases (tests/rules/cases/*.yaml) and the
lint cases (tests/graph/lint_cases.yaml).
"""
from __future__ import annotations

import re

import numpy as np
import onnx
import onnx.parser


def _floats(n: int) -> str:
    return ",".join(str(v) for v in np.round(np.linspace(-0.5, 0.5, n), 3))


HEADER = (
    "<float s1 = {0.01}, float s2 = {0.02}, float s3 = {0.03}, float s4 = {0.04}, int8 zp0 = {0},"
    f" float[2,2,1,1] w2 = {{{_floats(4)}}}, float[2,4,1,1] w4 = {{{_floats(8)}}},"
    f" float[2,6,1,1] w6 = {{{_floats(12)}}}, float[2] ws = {{0.01,0.01}}, int8[2] wz = {{0,0}},"
    " float lo = {0}, float hi = {6}, float[4] sc = {1,1,2,2}, int64[4] shp = {1,2,8,8}>"
)
MACRO = re.compile(r"^\s*\[(\w+)\]\s*(\w+)\s*=\s*(QDQ|QCONV\d*|FCONV)\((\w+)(?:,\s*(\w+))?\)\s*$")


def _qdq(name: str, x: str, s: str, y: str) -> list[str]:
    return [f"[{name}_q] {name}_qo = QuantizeLinear({x}, {s}, zp0)",
            f"[{name}_dq] {y} = DequantizeLinear({name}_qo, {s}, zp0)"]


def expand(body: str) -> str:
    lines: list[str] = []
    for line in body.strip().splitlines():
        m = MACRO.match(line)
        if not m:
            lines.append(line.strip())
            continue
        name, y, macro, x, s = m.groups()
        if macro == "QDQ":
            lines += _qdq(name, x, s, y)
        elif macro == "FCONV":
            lines.append(f"[{name}] {y} = Conv({x}, w2)")
        else:
            w = f"w{macro[5:] or 2}"
            lines += _qdq(f"{name}_in", x, s, f"{name}_in_o")
            lines += [f"[{name}_w_q] {name}_wq = QuantizeLinear <axis=0> ({w}, ws, wz)",
                      f"[{name}_w_dq] {name}_wdq = DequantizeLinear <axis=0> ({name}_wq, ws, wz)",
                      f"[{name}] {y} = Conv({name}_in_o, {name}_wdq)"]
    return "\n  ".join(lines)


def case_model(outputs: str, body: str) -> onnx.ModelProto:
    text = (f'<ir_version: 8, opset_import: ["" : 13]>\ng (float[1,2,8,8] x) => ({outputs})\n'
            f"{HEADER}\n{{\n  {expand(body)}\n}}")
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model
