"""Helpers of the optimize tests (imported by path: test folders are not packages; not named conftest so
that no other folder's conftest can shadow it)."""
from __future__ import annotations

import numpy as np

#: input size of the fixture exports (stride 32)
SIZE = 64


def noise_batches(n: int = 4, size: int = SIZE) -> list[np.ndarray]:
    from trtqat.data.images import seeded_noise

    return [seeded_noise(1, size, seed) for seed in range(n)]
