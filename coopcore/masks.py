"""Occlusion masks for inpainting and for learning from incomplete data, drawn with an explicit
`torch.Generator`.  Part of the core because three papers share them: the inpainting metrics,
multi-grid CD's masked training and the divergence triangle's occluded data all use these.

Every generator returns a float mask of shape [N, 1, H, W] with 1 = observed and 0 = missing
(the convention of `generator_log_joint(observed=...)`); one mask per image, shared by its
channels.

Named masks (`parse_mask_name`), with the paper each comes from:

- ``M<k>``  one k x k square placed uniformly at random, entirely inside the image
  (TPAMI Table 5: M30/M40/M50; AAAI Table 1: M20/M30/M40; multigrid Table 3: M32).
- ``B<k>``  one k x k block at a random position (triangle Table 3: B20/B30; its text says the
  block is "randomly placed"), i.e. the same distribution as ``M<k>``; ``B<k>c`` is the
  centred variant for protocols that use a fixed central hole.
- ``MB<n>`` n blocks of 10 x 10, each placed independently and uniformly (triangle MB10).
  Blocks may overlap, so the hole covers at most n blocks' area; ``MB<n>x<k>`` sets the side.
- ``P<f>``  salt-and-pepper: exactly round(f H W) pixels missing, chosen uniformly without
  replacement (triangle P.5 / P.7; written ``P.5`` or ``P0.5``).
- ``pepper`` = ``P.6`` (multigrid's "pepper and salt mask with approximately 60% missing").
- ``doodle`` random thick strokes until ~25% of the pixels are missing (multigrid); see
  `doodle_masks` for the algorithm.  ``doodle<f>`` (e.g. ``doodle.3``) sets the fraction.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

KINDS = ("square", "centre", "multi_block", "salt_pepper", "doodle")


def _uniform(generator: torch.Generator, *shape: int) -> Tensor:
    """U[0, 1) numbers on the generator's device, returned on the CPU (masks live there)."""
    return torch.rand(shape, generator=generator, device=generator.device).cpu()


def _hw(shape: Sequence[int]) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"mask shape needs at least (H, W), got {tuple(shape)}")
    return int(shape[-2]), int(shape[-1])


# ---------------------------------------------------------------------------------------
def block_masks(n: int, shape: Sequence[int], side: int, count: int, generator: torch.Generator) -> Tensor:
    """`count` squares of `side` per image, each top-left corner uniform over the positions that
    keep the square inside the image.  Overlapping squares are allowed (triangle MB10)."""
    h, w = _hw(shape)
    if not 0 < side <= min(h, w):
        raise ValueError(f"block side {side} does not fit a {h}x{w} image")
    u = _uniform(generator, n, count, 2)
    # floor(u * (number of positions)) is uniform over {0, ..., H - side}.
    top = (u[..., 0] * (h - side + 1)).long().clamp_max(h - side)
    left = (u[..., 1] * (w - side + 1)).long().clamp_max(w - side)
    rows = torch.arange(h)
    cols = torch.arange(w)
    in_rows = (rows >= top[..., None]) & (rows < top[..., None] + side)  # [N, count, H]
    in_cols = (cols >= left[..., None]) & (cols < left[..., None] + side)  # [N, count, W]
    missing = (in_rows[..., :, None] & in_cols[..., None, :]).any(dim=1)  # [N, H, W]
    return (~missing).float().unsqueeze(1)


def centre_masks(n: int, shape: Sequence[int], side: int) -> Tensor:
    """One `side` x `side` hole centred in the image (top-left at floor((H - side) / 2))."""
    h, w = _hw(shape)
    if not 0 < side <= min(h, w):
        raise ValueError(f"block side {side} does not fit a {h}x{w} image")
    mask = torch.ones(n, 1, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    mask[:, :, top : top + side, left : left + side] = 0.0
    return mask


def salt_pepper_masks(n: int, shape: Sequence[int], fraction: float, generator: torch.Generator) -> Tensor:
    """Exactly round(fraction * H * W) missing pixels per image, uniformly without replacement.

    A fixed count (rather than an independent coin per pixel) makes every image of an
    experiment equally hard and the stated fraction exact."""
    h, w = _hw(shape)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"missing fraction must be in [0, 1], got {fraction}")
    k = int(round(fraction * h * w))
    # The rank of an i.i.d. uniform key is a uniformly random permutation.
    ranks = _uniform(generator, n, h * w).argsort(dim=1).argsort(dim=1)
    return (ranks >= k).float().view(n, 1, h, w)


# ---------------------------------------------------------------------------------------
def _disc(radius: int) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    keep = dy**2 + dx**2 <= radius**2
    return dy[keep], dx[keep]


def _one_doodle(h: int, w: int, target: int, radius: int, max_turn: float, generator: torch.Generator) -> np.ndarray:
    missing = np.zeros((h, w), dtype=bool)
    dy, dx = _disc(radius)
    count = 0
    steps = max(h, w)  # one stroke is at most about max(H, W) * radius pixels long
    while count < target:
        u = _uniform(generator, 3 + steps).double().numpy()
        y, x = u[0] * h, u[1] * w
        heading = u[2] * 2.0 * math.pi
        for t in range(steps):
            yy = np.clip(np.rint(y + dy).astype(int), 0, h - 1)
            xx = np.clip(np.rint(x + dx).astype(int), 0, w - 1)
            missing[yy, xx] = True
            count = int(missing.sum())
            if count >= target:
                break
            heading += (u[3 + t] - 0.5) * 2.0 * max_turn
            vy, vx = math.sin(heading) * radius, math.cos(heading) * radius
            # Bounce off the image border so strokes stay inside instead of being cut short.
            if not 0.0 <= y + vy <= h - 1:
                vy, heading = -vy, math.atan2(-vy, vx)
            if not 0.0 <= x + vx <= w - 1:
                vx, heading = -vx, math.atan2(vy, -vx)
            y, x = y + vy, x + vx
    return missing


def doodle_masks(
    n: int, shape: Sequence[int], fraction: float, generator: torch.Generator,
    brush: float = 0.04, max_turn: float = math.pi / 6,
) -> Tensor:
    """Free-hand "doodle" holes: thick random strokes until `fraction` of the pixels are missing.

    Algorithm (multigrid Table 3 only says "doodle mask with approximately 25% missing pixels"):
    a stroke starts at a uniform random point with a uniform random heading and walks in steps
    of one brush radius r = max(1, round(brush * min(H, W))) (r = 3 at 64x64, 1 at 16x16); at
    each step the heading turns by a uniform angle in [-max_turn, max_turn] (a smooth random
    curve), the walk bounces off the border, and a disc of radius r is stamped at every point.
    Strokes of up to max(H, W) steps are drawn until at least round(fraction * H * W) pixels
    are missing; drawing stops at the first stamp that reaches the target, so the missing
    fraction exceeds `fraction` by less than one disc (pi r^2 / (H W), under 1% at 64x64).
    """
    h, w = _hw(shape)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"doodle fraction must be in (0, 1), got {fraction}")
    radius = max(1, int(round(brush * min(h, w))))
    target = int(round(fraction * h * w))
    out = np.zeros((n, h, w), dtype=bool)
    for k in range(n):
        out[k] = _one_doodle(h, w, target, radius, max_turn, generator)
    return torch.from_numpy(~out).float().unsqueeze(1)


# ---------------------------------------------------------------------------------------
def make_mask(
    kind: str, size: float, n: int, shape: Sequence[int], generator: torch.Generator, count: int = 10
) -> Tensor:
    """Masks [n, 1, H, W] (1 = observed) of one kind.

    `shape` is an image's shape ((H, W) or (C, H, W)).  `size` is the square side for
    ``square`` / ``centre`` / ``multi_block`` and the missing fraction for ``salt_pepper`` /
    ``doodle``; `count` is the number of blocks of ``multi_block``.
    """
    if kind == "square":
        return block_masks(n, shape, int(size), 1, generator)
    if kind == "centre":
        return centre_masks(n, shape, int(size))
    if kind == "multi_block":
        return block_masks(n, shape, int(size), count, generator)
    if kind == "salt_pepper":
        return salt_pepper_masks(n, shape, float(size), generator)
    if kind == "doodle":
        return doodle_masks(n, shape, float(size), generator)
    raise ValueError(f"unknown mask kind '{kind}'; expected one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask name: `make_mask(kind, size, ..., count=count)`."""

    name: str
    kind: str
    size: float
    count: int = 1

    def make(self, n: int, shape: Sequence[int], generator: torch.Generator) -> Tensor:
        return make_mask(self.kind, self.size, n, shape, generator, count=self.count)


_FRACTION = r"(0?\.\d+|1(?:\.0*)?|0)"
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"M(\d+)", "square"),
    (r"B(\d+)", "square"),
    (r"B(\d+)c", "centre"),
    (r"MB(\d+)(?:x(\d+))?", "multi_block"),
    (r"P" + _FRACTION, "salt_pepper"),
    (r"pepper", "salt_pepper"),
    (r"doodle" + _FRACTION + "?", "doodle"),
)


def parse_mask_name(name: str) -> MaskSpec:
    """"M30", "B20", "B20c", "MB10", "MB10x8", "P.5", "pepper", "doodle", "doodle.3" -> MaskSpec."""
    for pattern, kind in _PATTERNS:
        m = re.fullmatch(pattern, name)
        if m is None:
            continue
        if kind in ("square", "centre"):
            return MaskSpec(name, kind, int(m.group(1)))
        if kind == "multi_block":
            return MaskSpec(name, kind, int(m.group(2) or 10), count=int(m.group(1)))
        if kind == "salt_pepper":
            return MaskSpec(name, kind, 0.6 if name == "pepper" else float(m.group(1)))
        return MaskSpec(name, kind, float(m.group(1)) if m.group(1) else 0.25)
    raise ValueError(
        f"unknown mask name {name!r}: expected M<k>, B<k>, B<k>c, MB<n>[x<k>], P<fraction> (e.g. P.5), "
        "pepper, doodle or doodle<fraction>"
    )


def mask_from_name(name: str, n: int, shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """`parse_mask_name(name).make(n, shape, generator)`."""
    return parse_mask_name(name).make(n, shape, generator)


def mask_name_validator(instance: object, attribute: object, value: "str | None") -> None:
    """attrs validator for an optional mask-name option: None, or a name `parse_mask_name`
    accepts ("M32", "B20", "MB10", "P.5", "doodle", "pepper", ...)."""
    if value is None:
        return
    try:
        parse_mask_name(value)
    except ValueError as exc:
        raise ValueError(f"'{getattr(attribute, 'name', 'mask')}' must be a mask name or \"none\": {exc}") from None

