"""Masked training and sampling for inpainting (Gao et al., Section 7.4, Table 3).

"In the training stage, we randomly place the mask on each training image [...] in each
Langevin step, only the masked part of the image is updated, and the unmasked part remains
fixed as observed."  "During training the size of the mask is fixed (32 x 32) but the position
is randomly selected for each training image."

The trainer puts no masks into batches, so an objective with `train_mask` (a name understood
by `coopcore.masks`, e.g. "M32") draws one mask per image per iteration from the explicit
generator.  Conventions: an observation mask is 1 = observed, 0 = missing
(`coopcore.masks`); a sampler mask is 1 = may change, 0 = keep.

Coarse grids.  At grid size s a coarse pixel summarises a d x d block of the image.  A block
that is entirely observed is kept at its block mean (which is then exact, see
`observed_block_means`).  A block that is only partly observed is *free* by default
(`coarse_keep_fraction = 1.0`): its value is not determined by the observed pixels alone (at
test time the hole is unknown), and the coarse sample only initialises the next grid, where
the observed pixels are reset to their values anyway.  With `coarse_keep_fraction = q < 1` a
block with at least a fraction q observed is kept at the mean of its OBSERVED pixels.  At the
finest grid blocks are single pixels, so every observed pixel is kept exactly.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from coopcore import Batch, ConfigError
from coopcore.masks import mask_from_name

from .grids import observed_block_means


def fraction_in_unit_interval(instance: Any, attribute: Any, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"'{attribute.name}' must be in (0, 1], got {value!r}")


def check_train_mask(name: Optional[str], shape: Sequence[int], path: str) -> None:
    """Fail at build time (naming the option) when the mask cannot be drawn on these images."""
    if name is None:
        return
    try:
        mask_from_name(name, 1, tuple(shape), torch.Generator().manual_seed(0))
    except ValueError as exc:
        raise ConfigError(path, f"cannot draw mask '{name}' on {list(shape)} images: {exc}") from None


def observation_mask(batch: Batch, train_mask: Optional[str], generator: torch.Generator) -> Optional[Tensor]:
    """[B, 1, H, W] (1 = observed) for this iteration, or None when nothing is masked.

    The `train_mask` is drawn per image from `generator`."""
    if train_mask is None:
        return None
    x = batch.x
    return mask_from_name(train_mask, x.shape[0], tuple(x.shape[1:]), generator).to(x.device, x.dtype)


def grid_masks(
    x: Tensor, observed: Tensor, sizes: Sequence[int], keep_fraction: float = 1.0
) -> tuple[list[Tensor], list[Tensor]]:
    """Per grid: the sampler mask (1 = may change) and the values kept where it is 0.

    `x` [B, C, H, W] the observed images, `observed` [B, 1, H, W] (1 = observed), `sizes` the
    grid sizes (coarse to fine).  See the module docstring for partly observed blocks."""
    masks, values = [], []
    for size in sizes:
        means, frac = observed_block_means(x, observed, size)
        keep = frac >= keep_fraction
        masks.append((~keep).to(x.dtype))
        values.append(means)
    return masks, values


def observed_mean_fill(y: Tensor, observed: Tensor) -> Tensor:
    """y with its missing pixels set to the per-image, per-channel mean of its observed pixels
    (a start for chains that cannot start at the unknown truth, e.g. CD at test time)."""
    m = observed.to(y.dtype)
    count = m.flatten(2).sum(-1).clamp_min(1.0)  # [B, 1]
    mean = (y * m).flatten(2).sum(-1) / count  # [B, C]
    return torch.where(m > 0, y, mean[:, :, None, None].expand_as(y))
