"""Datasets read from plain folders of images: `imagenet_folder` and `image_folder`.

`imagenet_folder`: ImageNet-style class folders ``<BASE>/<class>/*.JPEG`` with BASE = the data
root joined with ``path``.  TPAMI Table 1 learns from n = 50 ... 1,100 images of each of ten
scene classes ("randomly sampled"); ImageNet is not redistributable and the paper gives class
names, not WordNet ids, so ``classes`` names the class folders the user has (empty = every
folder).  ``per_class = n`` keeps n images of each class chosen at random with ``seed``: each
file is ranked by a SHA-256 hash of (seed, class, file name) and the n lowest are kept.  The
choice depends on nothing but those names (not on a library's random stream), and the subsets
are nested: the 50 images of n = 50 are among the 100 of n = 100, as in a series of runs over n.
Images are resized to ``size`` x ``size`` without cropping: TPAMI and the CoopNets code resize
the whole image.  Labels: the position of the class in ``classes`` (sorted folder order when
``classes`` is empty).  Order: class by class, the chosen files in natural order.

`image_folder`: every image under ``<BASE>`` (recursive, natural order of relative paths), no
labels.  ``crop = "center"`` takes the centred square (the shorter side) before resizing;
``"none"`` resizes the whole image.  ``channels`` = 3 (RGB) or 1 (grayscale, Pillow's ITU-R
601-2 luma).  ``resample``: "bilinear" (antialiased, the filter of every other dataset here and
the default), "lanczos" (the filter StyleGAN2-ADA's dataset_tool resizes with, e.g. FFHQ
1024 -> 256 with ``--width=256 --height=256``) or "box" (block averaging); an image already at
``size`` is not resampled.  FFHQ: ``path = "ffhq/images1024x1024"``, ``size = 256``: the official
70 folders ``00000/ ... 69000/`` of 1,000 PNGs each are read recursively, in image-number order
(a 256x256 copy, in folders or flat, is read as is).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import UsageError, non_negative, positive

from .files import ROOT_HINT, describe, list_images, resolve_user_path, subfolders
from .imaging import RESAMPLES, Resample, center_box, convert, open_image, resize, to_chw
from .scaling import SCALINGS, Scaling, one_of
from .storage import Uint8ImageDataset, decode_stacked


def _names(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    bad = [v for v in value if not v or "/" in v or "\\" in v or v in (".", "..")]
    if bad:
        raise ValueError(f"'{attribute.name}' must list class-folder names; got {bad!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"'{attribute.name}' lists a class twice: {list(value)!r}")


@attrs.frozen(kw_only=True)
class ImagenetFolderOptions:
    """ImageNet-style class folders with per-class subsampling."""

    # Subfolder of the data root holding the class folders ("" = the root itself).
    path: str = ""
    # Class-folder names, in label order (empty = every folder, sorted).
    classes: tuple[str, ...] = attrs.field(default=(), converter=tuple, validator=_names)
    # Images per class (0 = all), a seeded random subset (see the module docstring).
    per_class: int = attrs.field(default=0, validator=non_negative)
    size: int = attrs.field(default=64, validator=positive)
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))
    seed: int = attrs.field(default=0, validator=non_negative)


@attrs.frozen(kw_only=True)
class ImageFolderOptions:
    """A folder of images (recursive)."""

    # Folder under the data root (or absolute); "" = the data root itself.
    path: str = ""
    size: int = attrs.field(default=64, validator=positive)
    crop: Literal["center", "none"] = attrs.field(default="center", validator=one_of("center", "none"))
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))
    limit: int = attrs.field(default=0, validator=non_negative)
    channels: Literal[3, 1] = attrs.field(default=3, validator=one_of(3, 1))
    # Resampling filter of the resize (an image already at `size` is not resampled).
    resample: Resample = attrs.field(default="bilinear", validator=one_of(*RESAMPLES))


def folder_base(dataset: str, root: Optional[Path], path: str, layout: str) -> Path:
    if root is None and not Path(path).expanduser().is_absolute():
        raise UsageError(f"dataset '{dataset}' needs a data root (or an absolute 'data.options.path'): "
                         f"{ROOT_HINT}. Expected layout: {layout}")
    base = resolve_user_path(root, path)
    if not base.is_dir():
        raise UsageError(f"dataset '{dataset}': {describe(base)}. Expected layout: {layout}")
    return base


def hash_rank(seed: int, cls: str, name: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{cls}\0{name}".encode()).digest()


def choose_per_class(files: list[Path], cls: str, n: int, seed: int) -> list[Path]:
    """n files of one class by seeded hash rank, returned in their original order."""
    if n == 0:
        return files
    chosen = set(sorted(range(len(files)), key=lambda i: hash_rank(seed, cls, files[i].name))[:n])
    return [f for i, f in enumerate(files) if i in chosen]


def load_resized(path: Path, size: int, crop: str, color: Literal["rgb", "gray"],
                 resample: Resample = "bilinear") -> np.ndarray:
    img = convert(open_image(path), color)
    box = center_box(*img.size) if crop == "center" else None
    return to_chw(resize(img, size, box, resample))


def imagenet_folder_dataset(options: ImagenetFolderOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """ImageNet-style ROOT/<class>/*.JPEG folders, n images per class (TPAMI Table 1)."""
    layout = "ROOT/<path>/<class>/*.JPEG (one folder per class, e.g. ROOT/train/n09193705/*.JPEG)"
    base = folder_base("imagenet_folder", root, options.path, layout)
    available = {p.name: p for p in subfolders(base)}
    names = list(options.classes) or list(available)
    if not names:
        raise UsageError(f"dataset 'imagenet_folder': no class folders in {base} ({describe(base)}); "
                         f"expected {layout}")
    missing = [c for c in names if c not in available]
    if missing:
        raise UsageError(f"dataset 'imagenet_folder': class folder(s) {', '.join(missing)} not found in {base} "
                         f"({describe(base)}); 'data.options.classes' must name folders there")
    items: list[tuple[Path, int]] = []
    for label, cls in enumerate(names):
        files = list_images(available[cls])
        if len(files) < max(options.per_class, 1):
            raise UsageError(f"dataset 'imagenet_folder': class folder {available[cls]} holds {len(files)} "
                             f"images; 'data.options.per_class' = {options.per_class} needs at least "
                             f"{max(options.per_class, 1)}")
        items.extend((f, label) for f in choose_per_class(files, cls, options.per_class, options.seed))
    pixels = decode_stacked(lambda it: load_resized(it[0], options.size, "none", "rgb"), items,
                            (3, options.size, options.size))
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return Uint8ImageDataset(pixels, name="imagenet_folder", scaling=options.scaling, labels=labels)


def image_folder_dataset(options: ImageFolderOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """Every image under a folder (recursive, sorted), resized; no labels."""
    layout = "images (jpg, png, webp, ...) anywhere under ROOT/<path>/"
    base = folder_base("image_folder", root, options.path, layout)
    files = list_images(base, recursive=True)
    if options.limit:
        files = files[: options.limit]
    if not files:
        raise UsageError(f"dataset 'image_folder': no images under {base} ({describe(base)}); expected {layout}")
    color: Literal["rgb", "gray"] = "rgb" if options.channels == 3 else "gray"
    pixels = decode_stacked(lambda p: load_resized(p, options.size, options.crop, color, options.resample), files,
                            (options.channels, options.size, options.size))
    return Uint8ImageDataset(pixels, name=f"image_folder-{base.name or 'root'}", scaling=options.scaling)
