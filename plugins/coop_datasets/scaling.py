"""Pixel scalings shared by the image datasets.

Every file-backed dataset keeps its pixels as 8-bit values 0..255 and maps them to the
model's range when a batch is taken, with one of three conventions:

- ``"minmax"``: per-image min-max to [-1, 1], the CoopNets convention (TPAMI code: each
  image is stretched so that its own darkest value is -1 and its brightest +1);
- ``"unit"``: the fixed affine map x / 127.5 - 1 (0 -> -1, 255 -> +1), what most GAN code does;
- ``"raw255"``: the raw pixel values as floats 0..255, what the multigrid code feeds its nets.

A constant image has no range: ``"minmax"`` maps it to -1 everywhere (the core's
`minmax_to_unit_range` guards the division).
"""
from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import Tensor

from coopcore import minmax_to_unit_range

Scaling = Literal["minmax", "unit", "raw255"]
SCALINGS: tuple[str, ...] = ("minmax", "unit", "raw255")


def one_of(*allowed: object):
    """attrs validator: the value must be one of `allowed` (ValueError naming the field)."""

    def check(instance: object, attribute: attrs.Attribute, value: object) -> None:
        if value not in allowed or (isinstance(value, bool) and not any(a is value for a in allowed)):
            options = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"'{attribute.name}' must be one of {options}; got {value!r}")

    return check


def scaled_range(scaling: str) -> tuple[float, float]:
    """Where pixels lie after `scaling` (for sample grids): 0..255 raw, else [-1, 1]."""
    return (0.0, 255.0) if scaling == "raw255" else (-1.0, 1.0)


def scale_pixels(x: Tensor, scaling: str) -> Tensor:
    """Map pixel values 0..255 (any dtype, [N, ...]) to float32 in the convention `scaling`.

    "minmax" works per example: over all of an example's channels (and frames) together.
    """
    x = x.to(torch.float32)
    if scaling == "raw255":
        return x
    if scaling == "unit":
        return x / 127.5 - 1.0
    if scaling == "minmax":
        return minmax_to_unit_range(x, per_image=True)
    raise ValueError(f"'scaling' must be one of {', '.join(SCALINGS)}; got {scaling!r}")
