"""Downsampled ImageNet at 32x32 and 64x64 (Chrabaszcz, Loshchilov & Hutter 2017) from its npz batches.

The official distribution (image-net.org, "Downsampled ImageNet", npz format) unzips to

- 32x32: ``Imagenet32_train_npz/train_data_batch_1.npz ... _10.npz`` and
  ``Imagenet32_val_npz/val_data.npz``;
- 64x64: ``Imagenet64_train_part1_npz/train_data_batch_1.npz ... _5.npz``,
  ``Imagenet64_train_part2_npz/train_data_batch_6.npz ... _10.npz`` and
  ``Imagenet64_val_npz/val_data.npz``.

Each file is looked for in the data root itself, in the folders directly under it whose name
starts with ``imagenet32`` (``imagenet64``), ignoring case, '-' and '_', and one level further
down in such folders (``ROOT/imagenet64/Imagenet64_train_part1_npz/``), so the zips can be
unpacked into the root, into one folder, or flattened.  Arrays: ``data`` uint8 [N, 3 * S * S],
channel-planar as CIFAR's (the red plane row by row, then green, then blue), ``labels`` 1..1000
(shifted to 0..999 here); the train batches also hold a ``mean`` image, which is not used.

Splits: ``train`` (1,281,167 images in ten batches, read in batch order) and ``val`` (50,000).
``limit`` keeps the first ``limit`` images in that order and reads only the batches it needs;
``subset = n`` keeps n images drawn at random with ``subset_seed`` (`subsets.py`: nested for one
seed, in file order) before ``limit``.

Memory: pixels stay 8-bit in one preallocated [N, 3, S, S] array, filled batch by batch, and are
scaled to float per training batch (`Uint8ImageDataset`), so the peak is the kept images plus one
batch file: 3.9 GB for the 32x32 train set, 15.7 GB at 64x64 (use ``subset`` or ``limit`` on a
smaller machine).  The npz batches are zip-compressed, which rules out memory-mapping them.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import UsageError, non_negative

from .files import describe, require_root, subfolders
from .scaling import SCALINGS, Scaling, one_of
from .storage import Uint8ImageDataset
from .subsets import seeded_subset

DOWNSAMPLED_URL = "https://image-net.org/download-images (Downsampled ImageNet, npz format)"
N_CLASSES = 1000
TRAIN_BATCHES = 10


@attrs.frozen(kw_only=True)
class ImagenetDownsampledOptions:
    """Downsampled ImageNet (32x32 or 64x64) options."""

    # "train" = the ten train_data_batch files (1,281,167 images), "val" = val_data (50,000).
    split: Literal["train", "val"] = attrs.field(default="train", validator=one_of("train", "val"))
    # Keep only the first `limit` images of the split (0 = all).
    limit: int = attrs.field(default=0, validator=non_negative)
    # Keep `subset` images of the split drawn at random with `subset_seed` (0 = all; before `limit`).
    subset: int = attrs.field(default=0, validator=non_negative)
    # Seed of the subset's draw (numpy PCG64; nested subsets for one seed).
    subset_seed: int = attrs.field(default=0, validator=non_negative)
    # "minmax" per-image [-1, 1] (CoopNets code), "unit" x/127.5-1, "raw255" floats 0..255.
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))


def split_files(split: str) -> list[str]:
    """The npz file names of a split, in reading order."""
    if split == "val":
        return ["val_data.npz"]
    return [f"train_data_batch_{i}.npz" for i in range(1, TRAIN_BATCHES + 1)]


def expected_layout(size: int) -> str:
    if size == 32:
        train = "ROOT/Imagenet32_train_npz/train_data_batch_{1..10}.npz"
    else:
        train = ("ROOT/Imagenet64_train_part1_npz/train_data_batch_{1..5}.npz and "
                 "ROOT/Imagenet64_train_part2_npz/train_data_batch_{6..10}.npz")
    return (f"{train}, ROOT/Imagenet{size}_val_npz/val_data.npz (the official zips unpacked into ROOT, into "
            f"ROOT/imagenet{size}/, or the .npz files directly in ROOT), from {DOWNSAMPLED_URL}")


def _norm(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def candidate_folders(root: Path, size: int) -> list[Path]:
    """Where batch files may lie: the root, imagenet<size>* folders under it and under those."""
    prefix = f"imagenet{size}"
    out = [root]
    for child in subfolders(root):
        if _norm(child.name).startswith(prefix):
            out.append(child)
            out.extend(g for g in subfolders(child) if _norm(g.name).startswith(prefix))
    return out


def find_batch_files(root: Path, size: int, split: str) -> list[Path]:
    """The split's npz files, in order; a missing one is a UsageError naming the layout."""
    folders = candidate_folders(root, size)
    found: list[Path] = []
    for name in split_files(split):
        path = next((f / name for f in folders if (f / name).is_file()), None)
        if path is None:
            looked = ", ".join(str(f) for f in folders)
            raise UsageError(f"ImageNet {size}x{size} file {name} not found (looked in {looked}; "
                             f"{describe(root)}). Expected {expected_layout(size)}.")
        found.append(path)
    return found


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)  # no pickled objects: a foreign file cannot run code
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is not a readable npz file ({exc})") from None


def read_labels(path: Path) -> np.ndarray:
    """int64 labels 0..999 of one batch (the files store 1..1000)."""
    with _open_npz(path) as npz:
        if "data" not in npz.files or "labels" not in npz.files:
            raise UsageError(f"{path} lacks the arrays 'data' and 'labels' of a downsampled-ImageNet batch "
                             f"(found {sorted(npz.files)})")
        labels = np.asarray(npz["labels"]).astype(np.int64).reshape(-1)
    if labels.size and (labels.min() < 1 or labels.max() > N_CLASSES):
        raise UsageError(f"{path}: labels must lie in 1..{N_CLASSES} (found {labels.min()}..{labels.max()})")
    return labels - 1


def read_pixels(path: Path, size: int, n: int) -> np.ndarray:
    """uint8 [n, 3, size, size] of one batch (a view of the file's array, no copy)."""
    with _open_npz(path) as npz:
        data = np.asarray(npz["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[0] != n:
        raise UsageError(f"{path}: expected uint8 data [{n}, {3 * size * size}] (one row per label), got "
                         f"{data.dtype} {list(data.shape)}")
    if data.shape[1] != 3 * size * size:
        side = int(round((data.shape[1] / 3) ** 0.5))
        raise UsageError(f"{path} holds rows of {data.shape[1]} values ({side}x{side} images?), not "
                         f"{3 * size * size} ({size}x{size}): use the dataset 'imagenet{side}' or the "
                         f"imagenet{size} files. Expected {expected_layout(size)}.")
    return data.reshape(n, 3, size, size)  # channel-planar rows: the planes are already [C, H, W]


def load_imagenet_downsampled(size: int, options: ImagenetDownsampledOptions,
                              root: Optional[Path]) -> Uint8ImageDataset:
    root = require_root(f"imagenet{size}", root, expected_layout(size))
    files = find_batch_files(root, size, options.split)
    # Pass 1: the labels only (small), to size the output and draw the subset across batches.
    labels_per_file: list[np.ndarray] = []
    for path in files:
        labels_per_file.append(read_labels(path))
        if options.limit and not options.subset and sum(map(len, labels_per_file)) >= options.limit:
            break  # a prefix needs no later batch
    offsets = np.cumsum([0] + [len(y) for y in labels_per_file])
    total = int(offsets[-1])
    if options.subset:
        keep = seeded_subset(total, options.subset, options.subset_seed,
                             f"the ImageNet {size}x{size} {options.split} split")
    else:
        keep = np.arange(total, dtype=np.int64)
    if options.limit:
        keep = keep[: options.limit]
    # Pass 2: the pixels, one batch file at a time, straight into the preallocated output.
    pixels = np.empty((len(keep), 3, size, size), dtype=np.uint8)
    labels = np.concatenate(labels_per_file)[keep]
    for k, path in enumerate(files[: len(labels_per_file)]):
        lo, hi = int(offsets[k]), int(offsets[k + 1])
        start, stop = np.searchsorted(keep, [lo, hi])  # `keep` is sorted: the rows from this file
        if start == stop:
            continue
        data = read_pixels(path, size, hi - lo)
        # A whole batch is copied as is: fancy indexing would make a second batch-sized copy.
        pixels[start:stop] = data if stop - start == hi - lo else data[keep[start:stop] - lo]
        del data  # free the batch before the next one is decompressed
    return Uint8ImageDataset(torch.from_numpy(pixels), name=f"imagenet{size}-{options.split}",
                             scaling=options.scaling, labels=torch.from_numpy(labels), n_classes=N_CLASSES)


def imagenet32_dataset(options: ImagenetDownsampledOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """Downsampled ImageNet 32x32 (1,000 classes, labels 0..999) from the official npz batches."""
    return load_imagenet_downsampled(32, options, root)


def imagenet64_dataset(options: ImagenetDownsampledOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """Downsampled ImageNet 64x64 (1,000 classes, labels 0..999) from the official npz batches."""
    return load_imagenet_downsampled(64, options, root)
