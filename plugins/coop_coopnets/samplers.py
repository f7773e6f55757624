"""Langevin dynamics (TPAMI eq. 7 and eq. 15) as a `Sampler`.

One update, for a log-density log p (up to a constant):

    x <- x + (delta^2 / 2) * grad log p(x) + delta * U,   U ~ N(0, I)

With log p = -E(Y) this is the Langevin revision of eq. 7; with log p = log q(X, Y) as a
function of X it is the Langevin inference of eq. 15.  Options: noise off (gradient descent,
the zero-temperature limit of Section 2.1), a noise scale, clipping, and a Metropolis-Hastings
correction (MALA) for the finite step size (the paper mentions it after eq. 7).

The loop is `coopcore.langevin_dynamics` (drift delta^2 / 2, noise std delta * noise_scale):
gradients are taken with respect to the input only (parameter gradients are neither computed
nor accumulated), randomness comes from the explicit generator, diagnostics stay on the
device, and there is no Python branching on tensor values.
"""
from __future__ import annotations

from typing import Optional

import attrs
import torch
from torch import Tensor

from coopcore import LogDensity, SamplerOutput, langevin_dynamics, non_negative, positive, preset_options


@attrs.frozen(kw_only=True)
class LangevinOptions:
    """Langevin dynamics settings."""

    n_steps: int = attrs.field(default=10, validator=non_negative, metadata={
        "doc": "Number of Langevin steps per run (l_p in eq. 7, l_q in eq. 15); 0 returns init unchanged."})
    step_size: float = attrs.field(default=0.002, validator=positive, metadata={
        "doc": "delta of x <- x + (delta^2 / 2) grad log p(x) + delta U: the drift is delta^2 / 2, "
               "the noise std delta (presets: langevin_revision 0.002 as in TPAMI, langevin_inference 0.1)."})
    # Add the noise delta * U; false = gradient ascent on log p (the zero-temperature limit).
    noise: bool = True
    # Multiplies the injected noise delta * U; 1 is exact Langevin.
    noise_scale: float = attrs.field(default=1.0, validator=non_negative)
    # [low, high] to clamp to after each step; none = no clipping.
    clip: Optional[tuple[float, float]] = None
    # Metropolis-Hastings correction of each step (MALA); needs the noise on and no clipping.
    metropolis: bool = False

    def __attrs_post_init__(self) -> None:
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"'clip' must be [low, high] with low < high, got {list(self.clip)}")
        if self.metropolis and self.clip is not None:
            # A clamped Gaussian proposal puts point masses on the bounds; the acceptance ratio
            # would use the unclamped density, so the chain would not leave p invariant.
            raise ValueError("'metropolis' cannot be combined with 'clip': the correction assumes the "
                             "unclipped Gaussian proposal; drop one of them")
        if self.metropolis and (not self.noise or self.noise_scale == 0):
            raise ValueError("'metropolis' needs the Langevin noise (noise = true, noise_scale > 0): "
                             "without noise there is nothing to accept or reject")


LangevinRevisionOptions = preset_options(
    LangevinOptions, "LangevinRevisionOptions",
    "Langevin revision of the descriptor (TPAMI eq. 7): paper settings delta = 0.002, l_p = 10.",
    n_steps=10, step_size=0.002,
)
LangevinInferenceOptions = preset_options(
    LangevinOptions, "LangevinInferenceOptions",
    "Langevin inference of the generator's latents (TPAMI eq. 15); delta = 0.1 by default.",
    n_steps=10, step_size=0.1,
)


class Langevin:
    """Langevin dynamics on any differentiable log-density (revision or inference)."""

    def __init__(self, options: LangevinOptions = LangevinOptions()) -> None:
        self.options = options
        self.n_steps = options.n_steps

    def run(
        self,
        log_density: LogDensity,
        init: Tensor,
        generator: torch.Generator,
        mask: Optional[Tensor] = None,
        n_steps: Optional[int] = None,
    ) -> SamplerOutput:
        """`n_steps` (default: the options') steps of the kernel with drift delta^2 / 2 and noise
        std delta * noise_scale (0 without noise)."""
        o = self.options
        return langevin_dynamics(
            log_density, init, generator,
            n_steps=self.n_steps if n_steps is None else n_steps,
            drift=0.5 * o.step_size**2,
            noise_std=o.step_size * o.noise_scale if o.noise else 0.0,
            mask=mask, clip=o.clip, metropolis=o.metropolis,
        )
