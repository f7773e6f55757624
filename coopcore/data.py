"""Datasets and deterministic batching.

A dataset plugin returns an `ImageDataset`: a length, the per-example shape and
`get_batch(indices)` giving float images in the model's range (usually [-1, 1]).  Batching is
a pure function of (seed, iteration), so a resumed run sees exactly the batches an
uninterrupted run would have seen, with no loader state to save.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import Tensor

from .errors import UsageError


@runtime_checkable
class ImageDataset(Protocol):
    """What a dataset factory ``(options, root) -> ImageDataset`` returns."""

    name: str
    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def get_batch(self, index: Tensor) -> Tensor: ...


def value_range(dataset: object) -> tuple[float, float]:
    """The range a dataset's examples lie in, for display: its optional `value_range`
    attribute, else [-1, 1] (the usual model range).  Datasets of raw pixel values (multigrid's
    0..255) declare theirs so sample grids are not saturated."""
    lo, hi = getattr(dataset, "value_range", (-1.0, 1.0))
    return float(lo), float(hi)


class TensorImageDataset:
    """An in-memory dataset backed by one tensor [N, *shape]."""

    def __init__(self, images: Tensor, name: str, labels: Optional[Tensor] = None,
                 value_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        if images.dim() < 2:
            raise ValueError("images must be [N, ...]")
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.images = images.contiguous()
        self.labels = labels
        self.name = name
        self.shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def get_batch(self, index: Tensor) -> Tensor:
        return self.images.index_select(0, index.to(torch.long).cpu())

    def get_labels(self, index: Tensor) -> Tensor:
        if self.labels is None:
            raise UsageError(f"dataset '{self.name}' has no labels")
        return self.labels.index_select(0, index.to(torch.long).cpu())


def resolve_data_root(recipe_root: str = "", cli_root: Optional[str] = None) -> Optional[Path]:
    """--data-root beats the recipe's data.root, which beats $COOP_DATA."""
    for candidate in (cli_root, recipe_root, os.environ.get("COOP_DATA")):
        if candidate:
            return Path(candidate).expanduser()
    return None


def minmax_to_unit_range(x: Tensor, per_image: bool = True) -> Tensor:
    """Scale to [-1, 1] by min and max (per image by default, as the CoopNets code does)."""
    if per_image:
        flat = x.flatten(1)
        lo = flat.min(1).values.view(-1, *([1] * (x.dim() - 1)))
        hi = flat.max(1).values.view(-1, *([1] * (x.dim() - 1)))
    else:
        lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-12) * 2.0 - 1.0


class BatchSchedule:
    """Which dataset indices form the batch of iteration t.

    Epoch e is a permutation drawn from a generator seeded with (seed, e); iteration t takes
    the slice of its epoch.  With drop_last the short tail of an epoch is skipped.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True) -> None:
        if n <= 0:
            raise UsageError("the dataset is empty")
        if drop_last and batch_size > n:
            raise UsageError(
                f"'data.batch_size' is {batch_size} but the dataset has only {n} examples; "
                "lower the batch size or set data.drop_last = false"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        full, tail = divmod(n, batch_size)
        self.batches_per_epoch = full if (drop_last or tail == 0) else full + 1
        self._cached_epoch = -1
        self._perm = torch.arange(n)

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._cached_epoch:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perm = torch.randperm(self.n, generator=g)
            self._cached_epoch = epoch
        return self._perm

    def indices(self, iteration: int) -> Tensor:
        epoch, k = divmod(iteration, self.batches_per_epoch)
        perm = self._permutation(epoch)
        return perm[k * self.batch_size : (k + 1) * self.batch_size]
