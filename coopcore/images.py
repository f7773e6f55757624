"""Image grids as PNG files."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor


def make_grid(images: Tensor, nrow: Optional[int] = None, padding: int = 2, value_range=(-1.0, 1.0)) -> np.ndarray:
    """[N, C, H, W] in `value_range` -> uint8 HxWxC (or HxW) grid with `padding` pixels between."""
    x = images.detach().float().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() == 5:  # videos [N, C, T, H, W]: show the first frame of each
        x = x[:, :, 0]
    n, c, h, w = x.shape
    lo, hi = value_range
    x = ((x.clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().to(torch.uint8)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    grid = torch.full((c, ncol * (h + padding) + padding, nrow * (w + padding) + padding), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, top : top + h, left : left + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if c == 1 else arr[:, :, :3]


def display_scale(images: Tensor) -> int:
    """An integer upscaling that makes small images visible (16 px -> 8x, 28 -> 4x, 64 -> 2x)."""
    side = int(images.shape[-1])
    return max(1, 128 // max(side, 1))


def save_grid(images: Tensor, path: Path, nrow: Optional[int] = None, scale: Optional[int] = None,
              value_range=(-1.0, 1.0)) -> Path:
    from PIL import Image

    scale = display_scale(images) if scale is None else scale
    arr = make_grid(images, nrow=nrow, value_range=value_range)
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
