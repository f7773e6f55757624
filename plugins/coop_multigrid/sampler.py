"""Langevin dynamics of multi-grid minimal CD and the coarse-to-fine sampling chain.

One step (Gao et al., eq. 8), with log p = -E the log-density handed to `run`:

    Y <- Y + (d^2 / 2) grad log p(Y) [+ d N(0, I) when `noise`],   then clip to `clip`

The reference distribution enters through the energy: a descriptor with a Gaussian reference
(`reference_std = s`) has E = ||Y||^2 / (2 s^2) - f(Y), so the step carries the -Y / s^2
auto-encoding term of eq. 8; with the uniform reference of the paper's experiments
(`reference_std = none`) E = -f and the step is the code's `Y + (d^2/2) df/dY`.
The paper's experiments run l = 30 steps (code: 90) with d = 0.3 and clip to [0, 255] on raw
pixels; eq. (8) has the noise term, the authors' code drops it (`noise`).  `clip` defaults to
none here because the pixel range depends on the dataset; a recipe on raw pixels sets it to
[0, 255].  Contract as every coopnets sampler: explicit generator, gradients w.r.t. the input
only, diagnostics as device tensors, no host syncs in the loop; `mask` (1 = may change,
0 = keep) keeps the other entries exactly, clipping included.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import attrs
import torch
from torch import Tensor

from coopcore import LogDensity, Sampler, SamplerOutput, langevin_dynamics, non_negative, positive

from .grids import upscale


@attrs.frozen(kw_only=True)
class MultigridLangevinOptions:
    """Langevin dynamics of multi-grid minimal CD (per grid)."""

    # l, steps per grid (paper 30; the authors' code 90).
    n_steps: int = attrs.field(default=30, validator=non_negative)
    # d, the step size (paper 0.3, on raw [0, 255] pixels).
    step_size: float = attrs.field(default=0.3, validator=positive)
    # True: eq. (8) as Algorithm 1 runs it, with the d * N(0, I) term (the paper; Fig. 5's
    # different samples from one 1x1 start need it).  False: the authors' code (no noise).
    noise: bool = True
    # [low, high] to clip to after each step (recipes: [0, 255] for raw pixels); none = no clipping.
    clip: Optional[tuple[float, float]] = None

    def __attrs_post_init__(self) -> None:
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"'clip' must be [low, high] with low < high, got {list(self.clip)}")


class MultigridLangevin:
    """l steps of Langevin dynamics (noise switchable) with optional clipping and mask."""

    def __init__(self, options: MultigridLangevinOptions = MultigridLangevinOptions()) -> None:
        self.options = options
        self.n_steps = options.n_steps

    def run(
        self,
        log_density: LogDensity,
        init: Tensor,
        generator: torch.Generator,
        mask: Optional[Tensor] = None,
    ) -> SamplerOutput:
        """l steps of `coopcore.langevin_dynamics` with drift d^2 / 2 and noise std d (0 without noise)."""
        o = self.options
        # Only the sign of the mask matters here (entries <= 0 are kept); the kernel's 0/1 weight
        # multiplies the moving entries by exactly 1.
        moves = None if mask is None else ~(mask.to(device=init.device) <= 0)
        return langevin_dynamics(
            log_density, init, generator,
            n_steps=o.n_steps,
            drift=0.5 * o.step_size**2,
            noise_std=o.step_size if o.noise else 0.0,
            mask=moves, clip=o.clip,
        )


def multigrid_chain(
    sampler: Sampler,
    log_densities: Sequence[LogDensity],
    start: Tensor,
    factor: Union[int, Sequence[int]],
    generator: torch.Generator,
    masks: Optional[Sequence[Optional[Tensor]]] = None,
    observed: Optional[Sequence[Optional[Tensor]]] = None,
) -> list[SamplerOutput]:
    """Algorithm 1, step 4: from the start images (1 x 1), for each grid k up-scale the previous
    grid's samples and run the sampler under that grid's log-density.

    `factor` is the up-scaling factor d of every step, or one factor per grid (e.g. [4, 4, 2]
    for 1 -> 4 -> 16 -> 32).  Returns one `SamplerOutput` per grid (coarse to fine);
    `[o.samples for o in ...]` are the samples of every grid.  With `masks[k]` (sampler
    convention, 1 = may change) and `observed[k]` (the observed image at grid k), the kept
    entries start from and stay at the observed values (inpainting).
    """
    factors = [factor] * len(log_densities) if isinstance(factor, int) else [int(f) for f in factor]
    if len(factors) != len(log_densities):
        raise ValueError(f"need one factor per grid ({len(log_densities)}), got {factors}")
    outputs: list[SamplerOutput] = []
    y = start.detach()
    for k, (log_p, d) in enumerate(zip(log_densities, factors)):
        y = upscale(y, d)
        m = None if masks is None else masks[k]
        if m is not None and observed is not None and observed[k] is not None:
            y = torch.where(m > 0, y, observed[k].to(y.dtype))
        out = sampler.run(log_p, y, generator, mask=m)
        outputs.append(out)
        y = out.samples.detach()
    return outputs
