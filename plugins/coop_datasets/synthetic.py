"""A seeded synthetic dataset of any shape: for contract tests, benchmarks and smoke runs.

Needs no files.  `kind = "gaussian"` draws i.i.d. N(0, 1) values clipped to [-1, 1];
`kind = "blobs"` draws smooth random images (a few Gaussian bumps per channel, scaled to
[-1, 1]) for image-shaped data, so samplers and descriptors see spatial structure.  The same
options always give the same tensor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import torch

from coopcore import TensorImageDataset, all_positive, non_negative, positive


@attrs.frozen(kw_only=True)
class SyntheticOptions:
    """Seeded random examples of a given shape (no files)."""

    # Per-example shape: [C, H, W] images, [C, T, H, W] videos or [D] vectors.
    shape: tuple[int, ...] = attrs.field(default=(1, 8, 8), validator=all_positive)
    n: int = attrs.field(default=64, validator=positive)
    seed: int = attrs.field(default=0, validator=non_negative)
    kind: Literal["gaussian", "blobs"] = "blobs"

    def __attrs_post_init__(self) -> None:
        if not self.shape:
            raise ValueError("'shape' must have at least one dimension")


def _blobs(shape: tuple[int, ...], n: int, g: torch.Generator) -> torch.Tensor:
    c, *spatial = shape
    axes = [torch.linspace(-1.0, 1.0, s) for s in spatial]
    grids = torch.meshgrid(*axes, indexing="ij")
    out = torch.zeros(n, c, *spatial)
    for _ in range(3):
        centres = torch.rand(n, c, len(spatial), generator=g) * 2 - 1
        width = 0.2 + 0.4 * torch.rand(n, c, 1, generator=g)
        d2 = sum((grids[k] - centres[..., k].view(n, c, *([1] * len(spatial)))) ** 2 for k in range(len(spatial)))
        out = out + torch.exp(-d2 / (2 * width.view(n, c, *([1] * len(spatial))) ** 2))
    lo = out.flatten(1).min(1).values.view(n, *([1] * len(shape)))
    hi = out.flatten(1).max(1).values.view(n, *([1] * len(shape)))
    return (out - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1


def synthetic_dataset(options: SyntheticOptions, root: Optional[Path] = None) -> TensorImageDataset:
    """Seeded synthetic examples of any shape (no files; contract tests and benchmarks)."""
    g = torch.Generator().manual_seed(options.seed)
    shape = tuple(options.shape)
    if options.kind == "blobs" and len(shape) >= 2:
        x = _blobs(shape, options.n, g)
    else:
        x = torch.randn((options.n, *shape), generator=g).clamp(-1.0, 1.0)
    labels = torch.arange(options.n) % 10
    return TensorImageDataset(x.contiguous(), name=f"synthetic-{options.kind}", labels=labels)
