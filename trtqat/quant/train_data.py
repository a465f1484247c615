"""QAT training batches: unlabelled images, letterboxed, deterministic per (seed, epoch), sharded per rank."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .distributed import DistEnv, shard


class TrainImages:
    """Letterboxed training batches, deterministic per (seed, epoch) so a resumed run sees the same data.

    Each epoch draws ``iters`` global batches from fresh permutations of the file list (repeating the
    list as often as needed) with an optional horizontal flip per image. Under torchrun each rank reads
    its ``[rank::world]`` slice of every global batch; a rank with no readable image in a step is an error
    (a single process skips that step).
    """

    def __init__(self, files: Sequence[Path], size: int, seed: int = 0, flip: bool = True):
        if not files:
            raise InputError("no training images", "Pass --train DIR with images")
        self.files, self.size, self.seed, self.flip = list(files), size, seed, flip

    def batches(self, epoch: int, iters: int, batch_size: int, env: DistEnv = DistEnv()) -> Iterator[np.ndarray]:
        from ..data.images import letterbox, read_rgb

        rng = np.random.default_rng([self.seed, epoch])
        per_global = batch_size * env.world_size
        need = iters * per_global
        order = np.concatenate([rng.permutation(len(self.files)) for _ in range(-(-need // len(self.files)))])
        flips = rng.random(order.size) < 0.5
        for it in range(iters):
            window = slice(it * per_global, (it + 1) * per_global)
            images = []
            for i, flip in zip(shard(order[window], env), shard(flips[window], env)):
                img = read_rgb(self.files[int(i)])
                if img is None:
                    continue
                boxed, _ = letterbox(img, self.size)
                images.append(boxed[:, ::-1] if (flip and self.flip) else boxed)
            if images:
                yield np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
            elif env.distributed:  # every rank must take every step (DDP all-reduces each backward)
                raise InputError(f"none of this rank's {len(shard(order[window], env))} training images of "
                                 f"epoch {epoch} step {it} could be read", "Check the --train folder on every node")
