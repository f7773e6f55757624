"""Sample pictures as PNG files: image grids, and scatter plots for 2-D point sets.

`save_grid` is what the trainer and `coop sample` call for every named sample batch: image
batches ([N, C, H, W], [N, H, W], videos [N, C, T, H, W]) become a grid; point sets [N, 2]
(2-D toy data) become a scatter plot.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor


#: Frames shown per video, and videos shown per grid.
VIDEO_FRAMES = 8
MAX_VIDEOS = 8


def make_grid(images: Tensor, nrow: Optional[int] = None, padding: int = 2, value_range=(-1.0, 1.0)) -> np.ndarray:
    """[N, C, H, W] in `value_range` -> uint8 HxWxC (or HxW) grid with `padding` pixels between.

    Videos [N, C, T, H, W] become frame strips: a row of evenly spaced frames per video."""
    x = images.detach().float().cpu()
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() == 5:
        # Videos [N, C, T, H, W]: one row per video, VIDEO_FRAMES frames evenly spaced in time,
        # so the motion shows (at most MAX_VIDEOS videos).
        x = x[:MAX_VIDEOS]
        t = x.shape[2]
        k = min(t, VIDEO_FRAMES)
        idx = torch.linspace(0, t - 1, k).round().long()
        x = x[:, :, idx].permute(0, 2, 1, 3, 4).reshape(-1, x.shape[1], x.shape[3], x.shape[4])
        nrow = nrow or k
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


def is_point_set(samples: Tensor) -> bool:
    """True for [N, 2] batches: 2-D points, drawn as a scatter plot rather than an image grid."""
    return samples.dim() == 2 and samples.shape[1] == 2


def save_scatter(points: Tensor, path: Path, reference: Optional[Tensor] = None, title: str = "",
                 limit: Optional[float] = None, size_inches: float = 4.0) -> Path:
    """[N, 2] points as a square scatter-plot PNG (equal axes); `reference` points (e.g. the
    modes of a toy mixture) are drawn on top as red crosses.  The axes span the points (and
    reference) with a margin, or [-limit, limit] when given."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state is touched

    if not is_point_set(points):
        raise ValueError(f"save_scatter needs [N, 2] points, got {tuple(points.shape)}")
    xy = points.detach().float().cpu().numpy()
    fig = Figure(figsize=(size_inches, size_inches), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(xy[:, 0], xy[:, 1], s=2, alpha=0.4, color="tab:blue", linewidths=0)
    shown = xy
    if reference is not None:
        ref = reference.detach().float().cpu().numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=30, marker="x", color="tab:red", linewidths=1.2)
        shown = np.concatenate([xy, ref])
    if limit is None:
        finite = shown[np.isfinite(shown).all(1)]
        limit = float(np.abs(finite).max()) * 1.1 if finite.size else 1.0
        limit = max(limit, 1e-3)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def save_grid(images: Tensor, path: Path, nrow: Optional[int] = None, scale: Optional[int] = None,
              value_range=(-1.0, 1.0)) -> Path:
    """Write a sample batch as a PNG: an image grid, or a scatter plot for [N, 2] points."""
    if is_point_set(images):
        return save_scatter(images, path)
    from PIL import Image

    scale = display_scale(images) if scale is None else scale
    arr = make_grid(images, nrow=nrow, value_range=value_range)
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
