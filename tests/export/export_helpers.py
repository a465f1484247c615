"""Helpers shared by the export tests (imported by path: test folders are not packages)."""
from __future__ import annotations

from click.testing import CliRunner

#: input size of the export tests (stride 32; small to keep the area fast)
SIZE = 160


def wrap_outputs(session_factory, corrupt):
    """Wrap ``verify.ort_session`` so every output onnxruntime returns goes through ``corrupt(array) -> array``:
    a broken export as the verifier sees it."""

    class Corrupted:
        def __init__(self, sess):
            self.sess = sess

        def __getattr__(self, name):
            return getattr(self.sess, name)

        def run(self, names, feed):
            return [corrupt(o) for o in self.sess.run(names, feed)]

    return lambda data: Corrupted(session_factory(data))


def corrupting(session_factory, kind: str, *, decoded: bool):
    """Wrap ``verify.ort_session`` so every output onnxruntime returns is corrupted like a broken export:
    ``reverse`` reverses the class scores of every row, ``shuffle`` permutes objectness across rows,
    ``half`` sets every score (objectness and classes) to 0.5 (logit 0 for a raw head)."""
    import numpy as np

    def corrupt(out: np.ndarray) -> np.ndarray:
        v = out.copy().reshape(-1, out.shape[-1])
        if kind == "reverse":
            v[:, 5:] = v[:, 5:][:, ::-1].copy()
        elif kind == "shuffle":
            v[:, 4] = np.random.default_rng(0).permutation(v[:, 4])
        elif kind == "half":
            v[:, 4:] = 0.5 if decoded else 0.0
        else:
            raise ValueError(kind)
        return v.reshape(out.shape)

    return wrap_outputs(session_factory, corrupt)


def run_cli(*args):
    """Invoke ``trtqat`` in-process (torch is already imported); returns the click Result."""
    from trtqat.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
