"""Unpaired two-domain image sets for one-sided translation (CUT): `unpaired_folders` and the
embedded `unpaired_digits`.

`unpaired_folders` reads CUT's layout under ``<data root>/<path>``::

    trainA/  trainB/  testA/  testB/      (images, any format Pillow reads, natural order)

(the folder names are the ``folders`` option, e.g. AFHQ's ``["train/cat", "train/dog",
"val/cat", "val/dog"]``).  ``direction = "AtoB"`` translates A to B; ``"BtoA"`` swaps the
domains.  Every image is resized as a whole to ``size`` x ``size`` (CUT's ``resize_and_crop``
resizes to ``load_size`` = 286 ignoring the aspect ratio, then crops 256; the random crop and
flip are the objective's, see plugins/coop_gan/cut.py) and optionally centre-cropped to
``crop_size`` here (deterministic: for evaluation sets and FID references).  Pixels are mapped
to [-1, 1] by x / 127.5 - 1 (CUT's Normalize((0.5,), (0.5,))).

How an objective gets both domains without a change to the trainer's `Batch`: the dataset is
the *source* domain for the trainer (``len``, ``shape`` and ``get_batch`` are those of the
source images of ``split``, so the trainer's seeded index schedule runs over the source
domain), and it carries the other sets as attributes, each an ordinary `ImageDataset`:

- ``target``: the target domain of ``split``; the objective draws its unpaired target batches
  from it with the run's explicit `torch.Generator` (uniform indices, with replacement, as CUT's
  unaligned loader does), so runs stay seeded and resume exactly;
- ``eval_source`` / ``eval_target``: the source and target domains of ``eval_split`` (the test
  folders by default), which the objective translates for sample grids and FID; None with
  ``eval_split = "none"``.

``unpaired = True`` marks such a dataset.  Everything is held in memory as 8-bit pixels.

`unpaired_digits` needs no files: domain A = scikit-learn's digits, domain B = the other half
of the same split with inverted intensities (-x), so no A image has its own inversion in B.
It is the smoke-scale and test stand-in for the folder layout.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
from torch import Tensor

from coopcore import TensorImageDataset, UsageError, non_negative, positive

from .digits import N_DIGITS, N_TEST, load_digits_tensor
from .files import describe, list_images
from .folders import folder_base, load_resized
from .imaging import RESAMPLES, Resample
from .scaling import one_of
from .storage import Uint8ImageDataset, decode_stacked

CUT_FOLDERS = ("trainA", "trainB", "testA", "testB")
LAYOUT = ("ROOT/<path>/trainA, trainB, testA, testB (CUT's layout; images in each, natural order; "
          "other names through 'data.options.folders')")


def _four_folders(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    if len(value) != 4 or any(not v or v in (".", "..") for v in value):
        raise ValueError(f"'{attribute.name}' must name four folders [train A, train B, test A, test B]; "
                         f"got {list(value)!r}")


@attrs.frozen(kw_only=True)
class UnpairedFoldersOptions:
    """Two image domains in CUT's trainA/trainB/testA/testB folders."""

    # Folder under the data root holding the domain folders ("" = the root itself), or absolute.
    path: str = ""
    # Which folders the trainer's batches (source domain) and `target` come from.
    split: Literal["train", "test"] = attrs.field(default="train", validator=one_of("train", "test"))
    # "AtoB": source = A, target = B; "BtoA": the other way round.
    direction: Literal["AtoB", "BtoA"] = attrs.field(default="AtoB", validator=one_of("AtoB", "BtoA"))
    # Every image is resized as a whole to size x size (CUT: load_size = 286).
    size: int = attrs.field(default=286, validator=positive)
    # Centre crop after the resize (0 = none): deterministic, for evaluation sets and FID references.
    crop_size: int = attrs.field(default=0, validator=non_negative)
    # The sets for `eval_source` / `eval_target` (translations in sample grids and FID): "none" = not loaded.
    eval_split: Literal["test", "train", "none"] = attrs.field(default="test",
                                                            validator=one_of("test", "train", "none"))
    # Keep the first N images of each folder (0 = all).
    limit: int = attrs.field(default=0, validator=non_negative)
    channels: Literal[3, 1] = attrs.field(default=3, validator=one_of(3, 1))
    # Resampling filter of the resize (CUT resizes with bicubic, which the image code here lacks).
    resample: Resample = attrs.field(default="bilinear", validator=one_of(*RESAMPLES))
    # The four folder names [train A, train B, test A, test B], relative to `path`.
    folders: tuple[str, str, str, str] = attrs.field(default=CUT_FOLDERS, converter=tuple, validator=_four_folders)

    def __attrs_post_init__(self) -> None:
        if self.crop_size > self.size:
            raise ValueError(f"'crop_size' ({self.crop_size}) must not exceed 'size' ({self.size})")


@attrs.frozen(kw_only=True)
class UnpairedDigitsOptions:
    """Embedded two-domain digits: A = digits, B = inverted digits of the split's other half."""

    size: int = attrs.field(default=16, validator=positive)
    split: Literal["train", "test"] = attrs.field(default="train", validator=one_of("train", "test"))
    direction: Literal["AtoB", "BtoA"] = attrs.field(default="AtoB", validator=one_of("AtoB", "BtoA"))
    eval_split: Literal["test", "train", "none"] = attrs.field(default="test",
                                                            validator=one_of("test", "train", "none"))
    # Keep the first N images of each domain (0 = all: 750 per domain in train, 148 / 149 in test).
    limit: int = attrs.field(default=0, validator=non_negative)


class UnpairedDataset:
    """The source domain of a split as an `ImageDataset`, with the other sets as attributes
    (`target`, `eval_source`, `eval_target`; see the module docstring)."""

    unpaired = True
    in_memory = True

    def __init__(self, source: object, target: object, name: str, eval_source: Optional[object] = None,
                 eval_target: Optional[object] = None) -> None:
        if tuple(source.shape) != tuple(target.shape):
            raise UsageError(f"dataset '{name}': the two domains have different image shapes "
                             f"{list(source.shape)} and {list(target.shape)}")
        self.domain = source
        self.target = target
        self.eval_source = eval_source
        self.eval_target = eval_target
        self.name = name
        self.shape = tuple(source.shape)
        self.value_range = (-1.0, 1.0)

    def __len__(self) -> int:
        return len(self.domain)

    def get_batch(self, index: Tensor) -> Tensor:
        return self.domain.get_batch(index)


def _crop_center(arr: np.ndarray, crop: int) -> np.ndarray:
    if not crop or crop == arr.shape[-1]:
        return arr
    top = (arr.shape[-2] - crop) // 2
    left = (arr.shape[-1] - crop) // 2
    return np.ascontiguousarray(arr[:, top:top + crop, left:left + crop])


def _read_domain(base: Path, folder: str, o: UnpairedFoldersOptions, what: str) -> Uint8ImageDataset:
    where = base / folder
    files = list_images(where, recursive=True) if where.is_dir() else []
    if o.limit:
        files = files[: o.limit]
    if not files:
        raise UsageError(f"dataset 'unpaired_folders': no images for {what} in {where} ({describe(where)}). "
                         f"Expected layout: {LAYOUT}")
    color: Literal["rgb", "gray"] = "rgb" if o.channels == 3 else "gray"
    side = o.crop_size or o.size
    pixels = decode_stacked(lambda p: _crop_center(load_resized(p, o.size, "none", color, o.resample), o.crop_size),
                            files, (o.channels, side, side))
    return Uint8ImageDataset(pixels, name=f"{base.name or 'root'}-{folder}", scaling="unit")


def _pair(split: str, direction: str) -> tuple[int, int]:
    """Positions of (source, target) in the folder quadruple for a split and direction."""
    a, b = (0, 1) if split == "train" else (2, 3)
    return (a, b) if direction == "AtoB" else (b, a)


def unpaired_folders_dataset(options: UnpairedFoldersOptions, root: Optional[Path] = None) -> UnpairedDataset:
    """Two image domains from CUT's trainA/trainB/testA/testB folders (unpaired)."""
    o = options
    base = folder_base("unpaired_folders", root, o.path, LAYOUT)
    roles = ("train A", "train B", "test A", "test B")
    s, t = _pair(o.split, o.direction)
    source = _read_domain(base, o.folders[s], o, roles[s])
    target = _read_domain(base, o.folders[t], o, roles[t])
    eval_source = eval_target = None
    if o.eval_split != "none":
        es, et = _pair(o.eval_split, o.direction)
        eval_source = source if es == s else _read_domain(base, o.folders[es], o, roles[es])
        eval_target = target if et == t else _read_domain(base, o.folders[et], o, roles[et])
    name = f"unpaired-{base.name or 'root'}-{o.split}-{o.direction}"
    return UnpairedDataset(source, target, name, eval_source, eval_target)


def _digit_domains(split: str, size: int, limit: int) -> tuple[Tensor, Tensor]:
    x, _ = load_digits_tensor(size)
    x = x[: N_DIGITS - N_TEST] if split == "train" else x[N_DIGITS - N_TEST:]
    half = x.shape[0] // 2
    a, b = x[:half], -x[half:]
    if limit:
        a, b = a[:limit], b[:limit]
    return a.contiguous(), b.contiguous()


def unpaired_digits_dataset(options: UnpairedDigitsOptions, root: Optional[Path] = None) -> UnpairedDataset:
    """Embedded unpaired digits: A = digits, B = inverted digits (no files, no download)."""
    o = options

    def domains(split: str) -> tuple[TensorImageDataset, TensorImageDataset]:
        a, b = _digit_domains(split, o.size, o.limit)
        da, db = TensorImageDataset(a, f"digits-{split}-A"), TensorImageDataset(b, f"digits-{split}-B")
        return (da, db) if o.direction == "AtoB" else (db, da)

    source, target = domains(o.split)
    eval_source = eval_target = None
    if o.eval_split != "none":
        eval_source, eval_target = (source, target) if o.eval_split == o.split else domains(o.eval_split)
    return UnpairedDataset(source, target, f"unpaired-digits-{o.split}-{o.direction}", eval_source, eval_target)


__all__ = ["UnpairedDataset", "UnpairedDigitsOptions", "UnpairedFoldersOptions", "unpaired_digits_dataset",
           "unpaired_folders_dataset"]
