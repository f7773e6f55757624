"""Multi-grid versions of an image (Gao et al., Section 6).

Down-scaling replaces each d x d block by its mean (a projection onto orthogonal block
indicators); up-scaling replicates each pixel into a d x d block of constant intensity (the
pseudo-inverse of the down-scaling).  Hence down(up(y)) == y exactly, and up(down(y)) == y for
images that are constant on blocks.  All functions act on [B, C, H, W] tensors and take any
integer factor d >= 1 (the paper notes d need not be an integer; non-integer factors are not
implemented: every grid here is an integer multiple of the previous one).

The chain of grids starts at a small "start" grid (1 x 1 in the paper: Y^(0), each image's mean
colour), then each grid is d times larger: 1 -> 4 -> 16 -> 64 for d = 4 and three grids.
`check_sizes` accepts an explicit list with a different factor per step (e.g. 1 -> 4 -> 16 -> 32
for 32 x 32 images), which the paper's construction allows since each step is its own
projection.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_image(x: Tensor, factor: int) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] tensor, got shape {tuple(x.shape)}")
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"the scale factor must be a positive integer, got {factor!r}")


def downscale(x: Tensor, factor: int) -> Tensor:
    """d x d block means: [B, C, H, W] -> [B, C, H/d, W/d] (H and W must be multiples of d)."""
    _check_image(x, factor)
    if x.shape[-2] % factor or x.shape[-1] % factor:
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the factor {factor}")
    if factor == 1:
        return x
    # Anchor on each block's first pixel: the mean is anchor + mean(x - anchor), which is exact
    # for blocks of constant intensity (so down(up(y)) == y bit for bit; a plain float sum of
    # d*d equal values need not be).
    anchor = x[..., ::factor, ::factor]
    return anchor + F.avg_pool2d(x - upscale(anchor, factor), kernel_size=factor, stride=factor)


def upscale(x: Tensor, factor: int) -> Tensor:
    """Block replication: [B, C, h, w] -> [B, C, h*d, w*d], each pixel a d x d constant block."""
    _check_image(x, factor)
    if factor == 1:
        return x
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def downscale_to(x: Tensor, size: int) -> Tensor:
    """Block means down to a `size` x `size` grid (x must be square with a multiple of `size`)."""
    if x.shape[-1] != x.shape[-2] or x.shape[-1] % size:
        raise ValueError(f"cannot block-average a {tuple(x.shape[-2:])} image to {size}x{size}")
    return downscale(x, x.shape[-1] // size)


def upscale_to(x: Tensor, size: int) -> Tensor:
    """Block replication up to a `size` x `size` grid (`size` a multiple of x's side)."""
    if x.shape[-1] != x.shape[-2] or size % x.shape[-1]:
        raise ValueError(f"cannot block-replicate a {tuple(x.shape[-2:])} image to {size}x{size}")
    return upscale(x, size // x.shape[-1])


def grid_sizes(size: int, factor: int, n_grids: int) -> list[int]:
    """[start, grid1, ..., grid_S] with grid_S = size and each grid `factor` times the previous.

    `grid_sizes(64, 4, 3) == [1, 4, 16, 64]`.  `size` must be divisible by factor**n_grids; the
    first entry is the start grid (1 x 1 when size == factor**n_grids).
    """
    if factor < 2:
        raise ValueError(f"the scale factor must be >= 2, got {factor}")
    if n_grids < 1:
        raise ValueError(f"need at least one grid, got {n_grids}")
    if size % factor**n_grids:
        raise ValueError(f"image size {size} is not divisible by factor**n_grids = {factor}**{n_grids}")
    start = size // factor**n_grids
    return [start * factor**k for k in range(n_grids + 1)]


def check_sizes(sizes: Sequence[int], size: int) -> list[int]:
    """Validate an explicit [start, grid1, ..., grid_S]: increasing, each a multiple of the
    previous, the last equal to the image size.  Returns it as a list."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"need a start size and at least one grid, got {sizes}")
    if sizes[-1] != size:
        raise ValueError(f"the last grid size {sizes[-1]} must equal the image size {size}")
    for a, b in zip(sizes, sizes[1:]):
        if not (0 < a < b and b % a == 0):
            raise ValueError(f"grid sizes must increase, each a multiple of the previous; got {sizes}")
    return sizes


def start_images(x: Tensor, start_size: int) -> Tensor:
    """Algorithm 1, step 3: each training image's own start version (its 1 x 1 mean colour)."""
    return downscale_to(x, start_size)


def observed_block_means(x: Tensor, observed: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Block means over the OBSERVED pixels only, and the observed fraction of each block.

    `observed` is [B, 1 or C, H, W] with 1 = observed.  Returns (means [B, C, size, size],
    fraction [B, 1 or C, size, size]); a block without observed pixels gets mean 0.  For a
    fully observed block the mean is exactly `downscale_to(x, size)` (x * 1 == x and / 1 is
    exact), so masked and unmasked paths agree bit for bit where nothing is missing.
    """
    m = observed.to(x.dtype)
    frac = downscale_to(m, size)
    total = downscale_to(x * m, size)
    return total / frac.clamp_min(torch.finfo(x.dtype).tiny), frac


def draw_start(
    pool: Tensor,
    n: int,
    generator: torch.Generator,
    weights: Optional[Tensor] = None,
    per_channel: bool = False,
) -> Tensor:
    """n start images drawn with replacement from `pool` (the training images' 1 x 1 versions):
    sampling p^(0), the histogram (empirical distribution) of the 1 x 1 images.

    `weights` (one per pool entry, e.g. 1 for entries filled so far, 0 otherwise) restricts and
    weights the draw; uniform over the pool when omitted.  `per_channel` draws each colour
    channel from its own one-dimensional histogram independently (the paper calls p^(0) "a
    one-dimensional histogram"; for grey images both readings coincide).
    """
    if weights is None:
        weights = torch.ones(pool.shape[0], device=pool.device)
    if not per_channel:
        idx = torch.multinomial(weights.float(), n, replacement=True, generator=generator)
        return pool[idx].clone()
    c = pool.shape[1]
    idx = torch.multinomial(weights.float(), n * c, replacement=True, generator=generator).view(n, c)
    channel = torch.arange(c, device=pool.device).expand(n, c)
    return pool[idx, channel].clone()  # [n, C, s, s]
