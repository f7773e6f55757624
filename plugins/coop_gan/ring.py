"""The 2-D toy of CoopInit Figure 1: a mixture of Gaussians on a ring, and its mode statistics.

`ring_of_gaussians` (dataset): `n_modes` isotropic Gaussians of standard deviation `std`,
centred at radius * (cos 2 pi k / K, sin 2 pi k / K), equally weighted; `n` examples drawn
from a generator seeded with `seed` (the same options always give the same tensor).  The
paper's Figure 1 shows a ring of Gaussians without giving its parameters; the defaults (8
modes, radius 2, std 0.02) are the usual ones of the mode-collapse literature and the ones the
CPU measurement in recipes.md used.

`ring_statistics` counts what Figure 1 shows by eye (the mode-collapse literature's numbers):

- a sample is *high quality* when it lies within `n_std` standard deviations (3 by default) of
  the nearest mode centre;
- a mode is *covered* when at least `min_count` high-quality samples fall on it (20 of 5,000
  in recipes.md's measurement: a handful of stray points between modes should not count).

`gan.ring_modes` (metric) draws samples from a run and reports either number.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Optional

import attrs
import torch
from torch import Tensor

from coopcore import EvalContext, MetricResult, TensorImageDataset, UsageError, draw_samples, non_negative, positive


@attrs.frozen(kw_only=True)
class RingOptions:
    """A mixture of equally weighted Gaussians on a circle (CoopInit Figure 1's 2-D data)."""

    n_modes: int = attrs.field(default=8, validator=positive)
    radius: float = attrs.field(default=2.0, validator=positive)
    std: float = attrs.field(default=0.02, validator=positive)
    n: int = attrs.field(default=50_000, validator=positive)
    seed: int = attrs.field(default=0, validator=non_negative)


def ring_centres(n_modes: int = 8, radius: float = 2.0) -> Tensor:
    """The K mode centres [K, 2]: radius * (cos, sin)(2 pi k / K), k = 0..K-1."""
    angle = torch.arange(n_modes, dtype=torch.float64) * (2.0 * math.pi / n_modes)
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()


def ring_of_gaussians(options: RingOptions, root: Optional[Path] = None) -> TensorImageDataset:
    """Seeded points [n, 2] from a mixture of Gaussians on a ring; labels = mode index."""
    g = torch.Generator().manual_seed(options.seed)
    mode = torch.randint(options.n_modes, (options.n,), generator=g)
    centres = ring_centres(options.n_modes, options.radius)
    x = centres[mode] + options.std * torch.randn((options.n, 2), generator=g)
    return TensorImageDataset(x.contiguous(), name="ring_of_gaussians", labels=mode)


@attrs.frozen
class RingStatistics:
    """Mode coverage of a set of 2-D samples."""

    modes_covered: int
    high_quality: float  # fraction of samples within n_std of their nearest centre
    counts: tuple[int, ...]  # high-quality samples per mode
    n_samples: int


def ring_statistics(samples: Tensor, centres: Tensor, std: float, n_std: float = 3.0, min_count: int = 20) -> RingStatistics:
    """Count covered modes and the high-quality fraction (definitions in the module docstring)."""
    if samples.dim() != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must be [N, 2], got {tuple(samples.shape)}")
    x = samples.detach().double().cpu()
    c = centres.detach().double().cpu()
    dist = torch.cdist(x, c)  # [N, K]
    nearest, which = dist.min(1)
    good = nearest <= n_std * std
    counts = torch.bincount(which[good], minlength=c.shape[0])
    return RingStatistics(
        modes_covered=int((counts >= min_count).sum()),
        high_quality=float(good.double().mean()) if x.shape[0] else 0.0,
        counts=tuple(int(v) for v in counts),
        n_samples=int(x.shape[0]),
    )


@attrs.frozen(kw_only=True)
class RingModesOptions:
    """Mode coverage on the ring of Gaussians (CoopInit Figure 1)."""

    # Which number is the metric's value: covered modes, or the high-quality fraction.
    report: Literal["modes", "high_quality"] = "modes"
    n_samples: int = attrs.field(default=5000, validator=positive)
    # Which named samples of the objective to score ("generator" for GANs).
    samples: str = "generator"
    # The ring the run was trained on (the dataset's options).
    n_modes: int = attrs.field(default=8, validator=positive)
    radius: float = attrs.field(default=2.0, validator=positive)
    std: float = attrs.field(default=0.02, validator=positive)
    n_std: float = attrs.field(default=3.0, validator=positive)
    min_count: int = attrs.field(default=20, validator=positive)


class RingModes:
    """Modes covered / high-quality fraction of a run's samples on the ring of Gaussians."""

    def __init__(self, options: RingModesOptions = RingModesOptions()) -> None:
        self.options = options
        self.name = f"ring_{options.report}"

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        x = draw_samples(context.objective, o.samples, o.n_samples, context.generator)
        if x.dim() != 2 or x.shape[1] != 2:
            raise UsageError(f"gan.ring_modes: the run's '{o.samples}' samples have shape {tuple(x.shape[1:])}; "
                             "the metric needs 2-D points (a run on ring_of_gaussians)")
        stats = ring_statistics(x, ring_centres(o.n_modes, o.radius), o.std, o.n_std, o.min_count)
        value = float(stats.modes_covered) if o.report == "modes" else stats.high_quality
        return MetricResult(
            name=self.name, value=value, n_samples=stats.n_samples,
            backend=f"ring statistics (within {o.n_std:g} std of a centre; mode covered at >= {o.min_count} samples)",
            details={"modes_covered": stats.modes_covered, "high_quality": stats.high_quality,
                     "counts": list(stats.counts)},
        )
