"""Decoding, cropping and resizing single images with Pillow.

Resizing is Pillow's bilinear filter (antialiased when shrinking), the filter of
`scipy.misc.imresize`, which the CoopNets and multigrid TensorFlow code used.  `resize` also
offers Lanczos (the filter StyleGAN2-ADA's dataset_tool resizes with, e.g. FFHQ 1024 -> 256)
and box (block averaging, exact for integer factors such as 1024 -> 256).  A crop is a
box in continuous pixel coordinates: the pixels it touches are cut out and the box is then
resampled with `Image.resize(box=...)`, so a centred crop is exactly centred even when the
margins are odd (no half-pixel shift from rounding), and a crop scaled to a downsampled copy of
an image covers the same region of the scene.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Literal, Optional, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from coopcore import UsageError

Box = tuple[float, float, float, float]
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
Resample = Literal["bilinear", "lanczos", "box"]
RESAMPLES: tuple[str, ...] = ("bilinear", "lanczos", "box")
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS,
                "box": Image.Resampling.BOX}


def open_image(source: Union[Path, bytes], what: str = "") -> Image.Image:
    """Decode an image file (or encoded bytes) fully; a broken file is a UsageError naming it."""
    label = what or str(source)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UsageError(f"cannot decode image {label}: {exc}") from None
    return img


def convert(img: Image.Image, color: Literal["rgb", "gray", "auto"]) -> Image.Image:
    """To 8-bit RGB or grayscale ("auto": keep the image's own: grayscale stays one channel).

    16-bit grayscale is scaled to 8 bits by /257 (Pillow's own conversion would clip it).
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and color != "rgb":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), mode="L")
    if color == "auto":
        color = "gray" if img.mode in GRAY_MODES else "rgb"
    target = "L" if color == "gray" else "RGB"
    return img if img.mode == target else img.convert(target)


def center_box(width: int, height: int, side: Optional[float] = None) -> Box:
    """The centred square of side `side` (default: the shorter side) as a float box."""
    s = float(min(width, height) if side is None else side)
    if s > min(width, height) + 1e-9:
        raise ValueError(f"crop of {s:g} pixels does not fit in a {width}x{height} image")
    left, top = (width - s) / 2.0, (height - s) / 2.0
    return (left, top, left + s, top + s)


def resize(img: Image.Image, size: int, box: Optional[Box] = None, resample: Resample = "bilinear") -> Image.Image:
    """Crop `box` (the whole image by default) and resample it to size x size with the filter
    `resample` (bilinear by default).

    Crop first, then resize: the filter sees only the pixels the box touches (a box with
    half-pixel edges keeps the pixels it cuts through), never the rest of the image, as
    cropping and then resizing does.
    """
    if box is not None:
        left, top, right, bottom = box
        enclosing = (math.floor(left + 1e-9), math.floor(top + 1e-9), math.ceil(right - 1e-9), math.ceil(bottom - 1e-9))
        img = img.crop(enclosing)
        box = (left - enclosing[0], top - enclosing[1], right - enclosing[0], bottom - enclosing[1])
        if box == (0, 0, img.size[0], img.size[1]):
            box = None
    if box is None and img.size == (size, size):
        return img
    return img.resize((size, size), resample=_PIL_FILTERS[resample], box=box)


def to_chw(img: Image.Image) -> np.ndarray:
    """uint8 [C, H, W] from an 8-bit L or RGB image."""
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.array(arr, dtype=np.uint8, order="C", copy=True)  # writable, owns its memory
