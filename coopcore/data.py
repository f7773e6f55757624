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
    """What a dataset factory ``(options, root) -> ImageDataset`` returns.

    A labelled dataset also has ``get_labels(index) -> int64 [len(index)]`` (class indices,
    read by the trainer for runs with a conditional model) and may declare ``n_classes``."""

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
                 value_range: tuple[float, float] = (-1.0, 1.0), n_classes: int = 0) -> None:
        if images.dim() < 2:
            raise ValueError("images must be [N, ...]")
        if labels is not None and labels.shape[0] != images.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.images = images.contiguous()
        self.labels = None if labels is None else labels.to(torch.long)
        # The number of classes the labels come from (0 = not declared; e.g. a subset may miss some).
        self.n_classes = int(n_classes) if labels is not None else 0
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


class DeviceTensorDataset:
    """An in-memory dataset held on the device as one tensor, so a batch never crosses the bus.

    Built from any dataset by reading all of it once through its own ``get_batch`` (in chunks),
    so every example has exactly the values the dataset gives batch by batch; ``get_batch``
    then indexes the device tensor with the (seeded, CPU-computed) batch indices, which keeps
    the batch order, and with it resuming, identical to the host path.  Everything else
    (``name``, ``value_range``, ``get_labels``, ...) is the source dataset's; `source` is the
    dataset itself, for consumers that want host tensors (metrics).
    """

    def __init__(self, source: ImageDataset, device: torch.device, chunk: int = 4096) -> None:
        n = len(source)
        parts = [source.get_batch(torch.arange(i, min(i + chunk, n))).to(device) for i in range(0, n, chunk)]
        self.images = torch.cat(parts) if parts else torch.empty((0, *source.shape), device=device)
        self.source = source
        self.device = device
        self.name = source.name
        self.shape = tuple(source.shape)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getattr__(self, name: str):  # only called for attributes not found above
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)

    def get_batch(self, index: Tensor) -> Tensor:
        return self.images.index_select(0, index.to(device=self.device, dtype=torch.long, non_blocking=True))


def dataset_nbytes(dataset: ImageDataset) -> int:
    """The size of a dataset as float32 tensors (what `DeviceTensorDataset` would hold)."""
    per = 4
    for v in dataset.shape:
        per *= int(v)
    return per * len(dataset)


def in_memory(dataset: object) -> bool:
    """Whether a dataset already holds its examples in memory (not decoded per batch): worth,
    and cheap, to copy to the device whole.  Known in-memory kinds hold a tensor ``images`` or
    ``pixels``; a dataset may declare ``in_memory = True/False`` itself."""
    declared = getattr(dataset, "in_memory", None)
    if isinstance(declared, bool):
        return declared
    return any(isinstance(getattr(dataset, attr, None), Tensor) for attr in ("images", "pixels"))


def share_of(index: Tensor, part: tuple[int, int]) -> Tensor:
    """The share of a batch's `index` that process ``part = (rank, world_size)`` trains on: its
    rank-th of world_size near-equal consecutive slices (the whole batch for one process)."""
    rank, world = part
    return index if world == 1 else index.tensor_split(world)[rank]


class _ScheduledBatches(torch.utils.data.Dataset):
    """Item t = the batch of iteration ``start + t`` of a `BatchSchedule`, read through the
    dataset's own ``get_batch`` (in a DataLoader worker).  With ``part = (rank, world_size)`` the
    images are that process's share of the batch (`share_of`)."""

    def __init__(self, dataset: ImageDataset, schedule: BatchSchedule, start: int, stop: int,
                 part: tuple[int, int] = (0, 1), labels: bool = False) -> None:
        self.dataset, self.schedule, self.start, self.stop, self.part = dataset, schedule, start, stop, part
        self.labels = labels

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, t: int) -> tuple[Tensor, ...]:
        idx = self.schedule.indices(self.start + t)
        mine = share_of(idx, self.part)
        if self.labels:
            return self.dataset.get_batch(mine), idx, self.dataset.get_labels(mine).to(torch.long)
        return self.dataset.get_batch(mine), idx


def prefetch_batches(dataset: ImageDataset, schedule: BatchSchedule, start: int, stop: int, *,
                     workers: int = 4, pin_memory: bool = True, device: Optional[torch.device] = None,
                     prefetch: int = 2, part: tuple[int, int] = (0, 1), labels: bool = False):
    """Yield ``(images, indices)`` for iterations ``start .. stop - 1`` of `schedule`, read ahead
    by `workers` DataLoader processes into pinned memory and copied to `device` without blocking.
    `indices` are the whole batch's; with ``part = (rank, world_size)`` the images are that
    process's share (see `_ScheduledBatches`).  With `labels` it yields ``(images, indices, y)``,
    y the share's int64 labels from the dataset's ``get_labels`` (for conditional models).

    For datasets too large to hold on the device (decoded per batch, like LSUN): the batches are
    exactly the `schedule`'s, in order (the same values `dataset.get_batch` returns), so resuming
    at `start` stays exact.  ``workers = 0`` reads in this process (no read-ahead)."""
    loader = torch.utils.data.DataLoader(
        _ScheduledBatches(dataset, schedule, start, stop, part, labels), batch_size=None, shuffle=False,
        num_workers=workers, pin_memory=pin_memory and torch.cuda.is_available(),
        prefetch_factor=prefetch if workers > 0 else None, persistent_workers=False,
    )
    for item in loader:
        images, idx = item[0], item[1]
        if device is not None:
            images = images.to(device, non_blocking=True)
        if labels:
            y = item[2]
            yield images, idx, (y.to(device, non_blocking=True) if device is not None else y)
        else:
            yield images, idx
