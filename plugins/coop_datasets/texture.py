"""A single texture image (TPAMI Experiment 1): a dataset of length one.

``image`` is one of the embedded names ``brick``, ``grass``, ``gravel`` (scikit-image's bundled
CC0 textures, `skimage.data.brick()` etc., read from the installed package: no network) or a
path to an image file, absolute or relative to the data root.  The image is resized to
``size`` x ``size`` (224 in the paper) with Pillow's bilinear filter and no crop: the paper
and the CoopNets code resize the whole image (a non-square image is stretched).
``color = "auto"`` keeps the image's own channels (the three embedded textures are grayscale,
so one channel); ``"rgb"`` replicates a gray image to three channels; ``"gray"`` converts
colour to luma.  The example has shape [C, size, size].
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
import torch
from PIL import Image

from coopcore import TensorImageDataset, UsageError, positive

from .files import ROOT_HINT, describe, resolve_user_path
from .imaging import convert, open_image, resize, to_chw
from .scaling import SCALINGS, Scaling, one_of, scale_pixels, scaled_range

EMBEDDED = ("brick", "grass", "gravel")


def _image(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip():
        raise ValueError(f"'{attribute.name}' must be one of {', '.join(EMBEDDED)} or an image path; got {value!r}")


@attrs.frozen(kw_only=True)
class TextureOptions:
    """One texture image."""

    # "brick", "grass", "gravel" (embedded) or a file path (absolute or under the data root).
    image: str = attrs.field(default="brick", validator=_image)
    size: int = attrs.field(default=224, validator=positive)
    color: Literal["auto", "rgb", "gray"] = attrs.field(default="auto", validator=one_of("auto", "rgb", "gray"))
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))


def embedded_texture(name: str) -> Image.Image:
    """One of scikit-image's bundled textures as a Pillow image."""
    import skimage.data

    try:
        arr = np.asarray(getattr(skimage.data, name)())
    except Exception as exc:  # noqa: BLE001 - a broken or partial scikit-image install
        raise UsageError(f"scikit-image could not load its bundled '{name}' texture ({exc}); give an image "
                         "file as 'data.options.image' instead") from None
    if arr.dtype != np.uint8:
        raise UsageError(f"scikit-image's '{name}' texture is {arr.dtype}, expected uint8")
    return Image.fromarray(arr)


def texture_image(image: str, root: Optional[Path]) -> Image.Image:
    if image in EMBEDDED:
        return embedded_texture(image)
    path = resolve_user_path(root, image)
    if not path.is_file():
        where = "" if root is not None or path.is_absolute() else f" (relative paths are under the data root: {ROOT_HINT})"
        raise UsageError(f"texture image {path} not found ({describe(path.parent)}); 'data.options.image' must be "
                         f"one of {', '.join(EMBEDDED)} or an image file{where}")
    return open_image(path)


def texture_dataset(options: TextureOptions, root: Optional[Path] = None) -> TensorImageDataset:
    """One texture image (embedded brick/grass/gravel or a file), resized: a dataset of length 1."""
    img = convert(texture_image(options.image, root), options.color)
    pixels = torch.from_numpy(to_chw(resize(img, options.size))).unsqueeze(0)
    return TensorImageDataset(scale_pixels(pixels, options.scaling), name=f"texture-{Path(options.image).stem}",
                              value_range=scaled_range(options.scaling))
