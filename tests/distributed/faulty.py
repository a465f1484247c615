"""``python faulty.py FAULT CLI-ARGS...``: the trtqat command line with a fault injected into one rank's QAT.

FAULT is ``raise:R:N`` (rank R raises in its N-th distillation forward) or ``hang:R:N:S`` (rank R sleeps S
seconds there, as a stuck GPU or a dead NFS mount would). Other ranks and other steps run unchanged.
"""
import os
import sys
import time

import trtqat.quant.qat as qat
from trtqat.cli import main

kind, rank, step, *rest = sys.argv[1].split(":")
calls = [0]
original = qat._loss


def faulty_loss(*args, **kwargs):
    calls[0] += 1
    if os.environ.get("RANK") == rank and calls[0] == int(step):
        if kind == "raise":
            raise RuntimeError(f"injected fault in rank {rank} step {step}")
        time.sleep(float(rest[0]))
    return original(*args, **kwargs)


qat._loss = faulty_loss
main(sys.argv[2:], prog_name="trtqat")
