"""Aligned CelebA faces from a folder of JPEGs.

Where the images are looked for (the first folder that directly holds images wins):
``ROOT/celeba/img_align_celeba`` (torchvision's layout), ``ROOT/img_align_celeba``,
``ROOT/celebA`` (the layout of several public copies, e.g. ``celebA/000001.jpg``),
``ROOT/celeba``, and the root itself.

Order and split: files in sorted (natural) order, i.e. by image number.  ``test`` is the last
``test_size`` images (default 1,000), ``train`` the ones before them, ``all`` everything; with
10,000 images this is the 9,000 / 1,000 split of the divergence-triangle paper (Section 4.1.1).
CelebA's official partition file is not used (the papers draw random subsets).  ``limit``
keeps the first ``limit`` images of the split.

Random, seeded subsets (the divergence-triangle paper "randomly select[s] 9,000 images for
training and another 1,000 images for testing", and learns from "10,000 images randomly chosen"
in Section 4.4): ``split_seed`` replaces the sorted order by a random permutation of the sorted
file list drawn from numpy's PCG64 generator seeded with ``split_seed`` (the same files on any
machine for the same folder), and ``subset`` keeps the first ``subset`` files of that order
before the split, so ``subset = 10000, test_size = 1000, split_seed = 0`` gives 9,000 training
and 1,000 held-out faces drawn at random from however many images the folder holds, with the
train and test splits disjoint for the same seed.  A folder with fewer than ``subset`` images
is an error (the table's protocol would silently change otherwise).

Crop (``crop = "center"``): a centred ``crop_size`` x ``crop_size`` square, then a bilinear
resize to ``size``.  The papers only say "cropped at the center" (multigrid Section 5.1) or
"center cropped as in [ABP]" (divergence triangle Section 5.3); TPAMI CoopNets is silent.
108 is the centre crop of the DCGAN-era CelebA pipelines (the DCGAN TensorFlow code's
``input_height = 108`` on 178x218 aligned images, then resize to 64).  ``crop_size`` is in
pixels of the original 178-pixel-wide aligned images: a copy at another resolution is cropped
at the same fraction of its width (the 89x109 copy gets a 54-pixel crop), so the same face
region is used whatever copy is on disk.  ``crop = "none"`` resizes the whole image (aspect
ratio not kept).

Images are decoded with Pillow into memory as 8 bits (10,000 faces at 64x64 take 120 MB and
decode in seconds on a few threads); no cache is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np

from coopcore import UsageError, non_negative, positive

from .files import describe, list_images, require_root
from .imaging import center_box, convert, open_image, resize, to_chw
from .scaling import SCALINGS, Scaling, one_of
from .storage import Uint8ImageDataset, decode_stacked
from .subsets import seeded_draw

ALIGNED_WIDTH = 178  # width of CelebA's img_align_celeba images (178 x 218)
CANDIDATES = ("celeba/img_align_celeba", "img_align_celeba", "celebA", "celeba", ".")
LAYOUT = ("aligned CelebA JPEGs in ROOT/celeba/img_align_celeba/ (torchvision's layout), "
          "ROOT/img_align_celeba/, ROOT/celebA/ or ROOT/ itself (e.g. ROOT/celeba/img_align_celeba/000001.jpg)")


@attrs.frozen(kw_only=True)
class CelebaOptions:
    """Aligned CelebA options."""

    split: Literal["train", "test", "all"] = attrs.field(default="train", validator=one_of("train", "test", "all"))
    size: int = attrs.field(default=64, validator=positive)
    crop: Literal["center", "none"] = attrs.field(default="center", validator=one_of("center", "none"))
    # Side of the centre crop in pixels of the 178x218 aligned images (scaled for other copies).
    crop_size: int = attrs.field(default=108, validator=positive)
    limit: int = attrs.field(default=0, validator=non_negative)
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))
    # Held-out images: the last `test_size` of the (sorted or shuffled) subset.
    test_size: int = attrs.field(default=1000, validator=non_negative)
    # Images drawn from the folder before the train/test split (0 = all of them).
    subset: int = attrs.field(default=0, validator=non_negative)
    # Seed of the random order the subset and the split are taken from; "none" = sorted order.
    split_seed: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(non_negative))


def find_celeba_folder(root: Path) -> Optional[Path]:
    for rel in CANDIDATES:
        folder = root / rel
        if folder.is_dir() and list_images(folder):
            return folder
    return None


def celeba_crop_side(width: int, crop_size: int) -> float:
    """The crop side for an image `width` pixels wide: crop_size at CelebA's 178-pixel width."""
    return crop_size * width / ALIGNED_WIDTH


def process_face(path: Path, size: int, crop: str, crop_size: int) -> np.ndarray:
    img = convert(open_image(path), "rgb")
    box = None
    if crop == "center":
        side = celeba_crop_side(img.size[0], crop_size)
        try:
            box = center_box(img.size[0], img.size[1], side)
        except ValueError:
            raise UsageError(f"'data.options.crop_size' = {crop_size} gives a {side:g}-pixel crop that does "
                             f"not fit in {path} ({img.size[0]}x{img.size[1]})") from None
    return to_chw(resize(img, size, box))


def select_files(files: list[Path], subset: int, split_seed: Optional[int], where: Path) -> list[Path]:
    """The files the splits are taken from: the sorted list, or its permutation by `split_seed`
    (numpy PCG64), cut to the first `subset` (0 = all).  Too few files is a `UsageError`."""
    if subset > len(files):
        raise UsageError(f"'data.options.subset' = {subset} asks for more images than {where} holds "
                         f"({len(files)}): use a folder with at least {subset} images or a smaller subset")
    if split_seed is not None:
        # The draw order matters here (the split is its tail), so keep it rather than sorting.
        return [files[i] for i in seeded_draw(len(files), subset, split_seed)]
    return files[:subset] if subset else files


def split_files(files: list[Path], split: str, test_size: int, where: Path) -> list[Path]:
    if split == "all":
        return files
    if test_size >= len(files) and split == "train":
        raise UsageError(f"'data.options.test_size' = {test_size} leaves no training images: {where} holds "
                         f"{len(files)} images")
    cut = len(files) - min(test_size, len(files))
    return files[:cut] if split == "train" else files[cut:]


def celeba_dataset(options: CelebaOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """Aligned CelebA faces (centre crop, resize) from img_align_celeba or a folder of JPEGs."""
    root = require_root("celeba", root, LAYOUT)
    folder = find_celeba_folder(root)
    if folder is None:
        raise UsageError(f"CelebA images not found under {root}: {describe(root)}. Expected {LAYOUT}.")
    files = select_files(list_images(folder), options.subset, options.split_seed, folder)
    files = split_files(files, options.split, options.test_size, folder)
    if options.limit:
        files = files[: options.limit]
    if not files:
        raise UsageError(f"the CelebA '{options.split}' split of {folder} is empty "
                         f"('data.options.test_size' = {options.test_size})")
    pixels = decode_stacked(lambda p: process_face(p, options.size, options.crop, options.crop_size), files,
                            (3, options.size, options.size))
    return Uint8ImageDataset(pixels, name=f"celeba-{options.split}", scaling=options.scaling)
