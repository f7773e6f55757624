"""Two `ImageDataset` implementations for file-backed data.

`Uint8ImageDataset` holds all decoded images in memory as 8-bit [N, C, H, W] (a quarter of
the memory of float32: 60,000 CIFAR images take 184 MB, 200,000 CelebA faces at 64x64 2.5 GB)
and applies the pixel scaling when a batch is taken.  `LazyImageDataset` decodes on demand,
for collections too large to hold (LSUN bedroom has three million images); it decodes a
batch's images on a small thread pool (Pillow releases the GIL while decoding).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from coopcore import UsageError

from .scaling import scale_pixels, scaled_range

T = TypeVar("T")
R = TypeVar("R")


def decode_threads() -> int:
    """Threads used to decode images (at most 8; $COOP_DECODE_THREADS overrides)."""
    env = os.environ.get("COOP_DECODE_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`[fn(x) for x in items]` in order, on a thread pool when there is more than a handful."""
    threads = decode_threads()
    if threads == 1 or len(items) < 16:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items, chunksize=64))


def decode_stacked(fn: Callable[[T], np.ndarray], items: Sequence[T], shape: tuple[int, ...]) -> Tensor:
    """uint8 [len(items), *shape] with row i = fn(items[i]), decoded on the thread pool straight
    into the output (no list of arrays beside it: peak memory is the dataset itself)."""
    out = np.empty((len(items), *shape), dtype=np.uint8)

    def fill(i: int) -> None:
        a = fn(items[i])
        if tuple(a.shape) != tuple(shape):
            raise UsageError(f"{items[i]} decoded to shape {tuple(a.shape)}, expected {tuple(shape)}")
        out[i] = a

    parallel_map(fill, range(len(items)))
    return torch.from_numpy(out)


class Uint8ImageDataset:
    """In-memory 8-bit images [N, C, H, W] (or [N, C, T, H, W]) scaled on the fly."""

    def __init__(self, images: Tensor, name: str, scaling: str, labels: Optional[Tensor] = None,
                 n_classes: int = 0) -> None:
        if images.dtype != torch.uint8 or images.dim() < 2:
            raise ValueError("images must be a uint8 tensor [N, ...]")
        if labels is not None and labels.shape[0] != images.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        self.pixels = images.contiguous()
        self.labels = None if labels is None else labels.to(torch.long)
        # The classes the labels come from (0 = not declared), so a conditional model's
        # n_classes can be checked even when a subset misses some classes.
        self.n_classes = int(n_classes) if labels is not None else 0
        self.name = name
        self.scaling = scaling
        self.shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def value_range(self) -> tuple[float, float]:
        return scaled_range(self.scaling)

    def get_batch(self, index: Tensor) -> Tensor:
        return scale_pixels(self.pixels.index_select(0, index.to(torch.long).cpu()), self.scaling)

    def get_labels(self, index: Tensor) -> Tensor:
        if self.labels is None:
            raise UsageError(f"dataset '{self.name}' has no labels")
        return self.labels.index_select(0, index.to(torch.long).cpu())


class LazyImageDataset:
    """Images decoded when a batch asks for them: `load(i)` returns uint8 [C, H, W]."""

    def __init__(self, n: int, shape: tuple[int, ...], load: Callable[[int], np.ndarray], name: str,
                 scaling: str) -> None:
        self._n = n
        self._load = load
        self.shape = tuple(shape)
        self.name = name
        self.scaling = scaling

    def __len__(self) -> int:
        return self._n

    @property
    def value_range(self) -> tuple[float, float]:
        return scaled_range(self.scaling)

    def get_batch(self, index: Tensor) -> Tensor:
        idx = [int(i) for i in index.to(torch.long).cpu().tolist()]
        for i in idx:
            if not 0 <= i < self._n:
                raise IndexError(f"index {i} out of range for dataset '{self.name}' of {self._n} images")
        arrays = parallel_map(self._load, idx)
        for i, a in zip(idx, arrays):
            if tuple(a.shape) != self.shape:
                raise UsageError(f"dataset '{self.name}': image {i} decoded to shape {tuple(a.shape)}, "
                                 f"expected {self.shape}")
        batch = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty((0, *self.shape), dtype=torch.uint8)
        return scale_pixels(batch, self.scaling)


def take(items: Sequence[T], limit: int) -> Sequence[T]:
    """The first `limit` items (all of them when limit is 0): the `limit` option of every dataset."""
    return items[:limit] if limit else items
