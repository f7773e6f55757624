"""Langevin dynamics (TPAMI eq. 7 and eq. 15) as a `Sampler`.

One update, for a log-density log p (up to a constant):

    x <- x + (delta^2 / 2) * grad log p(x) + delta * U,   U ~ N(0, I)

With log p = -E(Y) this is the Langevin revision of eq. 7; with log p = log q(X, Y) as a
function of X it is the Langevin inference of eq. 15.  Options: noise off (gradient descent,
the zero-temperature limit of Section 2.1), a noise scale, clipping, and a Metropolis-Hastings
correction (MALA) for the finite step size (the paper mentions it after eq. 7).

The loop is written for speed: gradients are taken with respect to the input only (parameter
gradients are neither computed nor accumulated), randomness comes from the explicit generator,
diagnostics stay on the device, and there is no Python branching on tensor values.
"""
from __future__ import annotations

from typing import Optional

import attrs
import torch
from torch import Tensor

from coopcore import LogDensity, SamplerOutput, non_negative, positive, preset_options


@attrs.frozen(kw_only=True)
class LangevinOptions:
    """Langevin dynamics settings."""

    n_steps: int = attrs.field(default=10, validator=non_negative)
    step_size: float = attrs.field(default=0.002, validator=positive)
    noise: bool = True
    # Multiplies the injected noise delta * U; 1 is exact Langevin.
    noise_scale: float = attrs.field(default=1.0, validator=non_negative)
    clip: Optional[tuple[float, float]] = None
    metropolis: bool = False

    def __attrs_post_init__(self) -> None:
        if self.clip is not None and not self.clip[0] < self.clip[1]:
            raise ValueError(f"'clip' must be [low, high] with low < high, got {list(self.clip)}")


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


def value_and_grad(log_density: LogDensity, x: Tensor) -> tuple[Tensor, Tensor]:
    """log p(x) per example and its gradient w.r.t. x only."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_density(xg)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    return lp.detach(), grad


def _per_example(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


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
        o = self.options
        steps = self.n_steps if n_steps is None else n_steps
        x = init.detach().clone()
        m = None if mask is None else mask.to(dtype=x.dtype, device=x.device)
        h = 0.5 * o.step_size**2
        sd = o.step_size * o.noise_scale if o.noise else 0.0
        energies, norms, accepts = [], [], []
        use_mh = o.metropolis and sd > 0
        lp: Optional[Tensor] = None
        grad: Optional[Tensor] = None
        for _ in range(steps):
            if lp is None or grad is None:
                lp, grad = value_and_grad(log_density, x)
            energies.append(-lp.mean())
            norms.append(grad.flatten(1).norm(dim=1).mean())
            drift = h * grad
            if m is not None:
                drift = drift * m
            proposal = x + drift
            if sd > 0:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sd
                proposal = proposal + (noise if m is None else noise * m)
            if o.clip is not None:
                proposal = proposal.clamp(o.clip[0], o.clip[1])
                if m is not None:  # entries outside the mask keep their value, clipped or not
                    proposal = torch.where(m > 0, proposal, x)
            if use_mh:
                lp_new, grad_new = value_and_grad(log_density, proposal)
                x, lp, grad, rate = self._metropolis(x, lp, grad, proposal, lp_new, grad_new, h, sd, m, generator)
                accepts.append(rate)
            else:
                # Plain Langevin needs the gradient at the new point only if another step follows.
                x, lp, grad = proposal, None, None
        zero = torch.zeros(0, device=x.device)
        return SamplerOutput(
            samples=x,
            energies=torch.stack(energies) if energies else zero,
            grad_norms=torch.stack(norms) if norms else zero,
            acceptance=torch.stack(accepts).mean() if accepts else None,
        )

    @staticmethod
    def _metropolis(x, lp, grad, prop, lp_new, grad_new, h, sd, m, generator):
        """MALA accept/reject per chain: the Gaussian proposal densities both ways."""

        def log_q(to: Tensor, frm: Tensor, g: Tensor) -> Tensor:
            d = to - frm - h * g
            if m is not None:
                d = d * m
            return -d.flatten(1).pow(2).sum(1) / (2.0 * sd**2)

        log_alpha = lp_new - lp + log_q(x, prop, grad_new) - log_q(prop, x, grad)
        u = torch.rand(lp.shape, generator=generator, device=lp.device, dtype=lp.dtype)
        accept = torch.log(u) < log_alpha
        a = _per_example(accept, x)
        return (
            torch.where(a, prop, x),
            torch.where(accept, lp_new, lp),
            torch.where(a, grad_new, grad),
            accept.to(x.dtype).mean(),
        )
