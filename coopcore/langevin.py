"""The Langevin dynamics kernel shared by every built-in sampler.

One step on a log-density log p (known up to a constant), with drift coefficient `h` and
noise standard deviation `s`:

    x' = x + h * grad log p(x) + s * U,    U ~ N(0, I)

Every Langevin sampler of the papers is a configuration of it: CoopNets (TPAMI eq. 7 / 15) and
multi-grid CD (Gao et al. eq. 8) use ``h = delta^2 / 2`` and ``s = delta`` (times a noise scale),
CoopInit (eq. 4) uses ``h = eta`` and ``s = sqrt(2 eta)`` (times a noise scale); ``s = 0`` is
gradient ascent on log p.  Options: a mask (entries where ``mask <= 0`` keep their initial value
bit for bit), clipping to a range after every step, and a Metropolis-Hastings correction of
the proposal (MALA).

The loop is written for speed and reproducibility: gradients are taken with respect to the
input only (parameter gradients are neither computed nor accumulated, no graph is kept), all
randomness comes from the explicit generator in a fixed order (per step: one ``torch.randn``
of the chains' shape when ``s > 0``, then one ``torch.rand`` per chain when MH is on), and the
diagnostics stay on the device as tensors (no host synchronisation inside the loop).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import accel
from .protocols import LogDensity, SamplerOutput

__all__ = ["langevin_dynamics", "log_density_and_grad"]


def log_density_and_grad(log_density: LogDensity, x: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate a log-density and its gradient with respect to the input only.

    Args:
        log_density: Maps a batch ``[B, ...]`` to one log-density (or score) per example ``[B]``.
        x: The points ``[B, ...]``; they are detached first, so no graph reaches the caller's
            tensors and no parameter receives a gradient (``create_graph`` is off).

    Returns:
        ``(log p(x) [B], d sum log p / dx [B, ...])``, both detached.
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        if accel.current().bf16:
            # The network runs in bf16; the log-densities are summed (and returned) in float32,
            # and the gradient reaches the float32 input as float32.
            with accel.autocast(xg.device.type):
                lp = log_density(xg)
            lp = lp.float()
        else:
            lp = log_density(xg)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    return lp.detach(), grad


def _per_example(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def _mh_select(
    x: Tensor,
    lp: Tensor,
    grad: Tensor,
    prop: Tensor,
    lp_new: Tensor,
    grad_new: Tensor,
    drift: float,
    noise_std: float,
    weight: Optional[Tensor],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MALA accept/reject per chain with the Gaussian proposal densities both ways."""

    def log_q(to: Tensor, frm: Tensor, g: Tensor) -> Tensor:
        d = to - frm - drift * g
        if weight is not None:
            d = d * weight
        return -d.flatten(1).pow(2).sum(1) / (2.0 * noise_std**2)

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


def langevin_dynamics(
    log_density: LogDensity,
    init: Tensor,
    generator: torch.Generator,
    *,
    n_steps: int,
    drift: float,
    noise_std: float,
    mask: Optional[Tensor] = None,
    clip: Optional[tuple[float, float]] = None,
    metropolis: bool = False,
) -> SamplerOutput:
    """Run `n_steps` of ``x <- x + drift * grad log p(x) + noise_std * N(0, I)`` on every chain.

    Each row of `init` is one chain.  One step:

    1. ``proposal = x + drift * grad`` (the drift times `mask` where a mask is given);
    2. ``proposal = proposal + noise_std * U`` with ``U = torch.randn(x.shape, generator=...)``
       (times `mask`), skipped entirely (no random numbers drawn) when ``noise_std == 0``;
    3. clamp to `clip`;
    4. entries with ``mask <= 0`` are set back to their value in `init` (bit for bit, clipping
       included);
    5. with `metropolis` (and ``noise_std > 0``): accept or reject the proposal per chain with
       probability ``min(1, p(x') q(x | x') / (p(x) q(x' | x)))``, where
       ``q(x' | x) = N(x + drift * grad log p(x), noise_std^2 I)``, using one
       ``torch.rand(B, generator=...)`` draw per step.

    Args:
        log_density: Maps ``[B, ...]`` to the log-density ``[B]`` (up to a constant), e.g.
            ``-energy`` or a descriptor's score; it must depend on each example alone.
        init: Starting points ``[B, ...]`` (not modified).
        generator: The source of all randomness.
        n_steps: Number of steps (0 returns a copy of `init`).
        drift: Coefficient h of the gradient (``delta^2 / 2`` in TPAMI eq. 7, ``eta`` in CoopInit eq. 4).
        noise_std: Standard deviation s of the injected Gaussian noise per step (``delta`` in
            TPAMI eq. 7, ``sqrt(2 eta)`` in CoopInit eq. 4; 0 = deterministic gradient ascent).
        mask: Optional tensor broadcastable to `init`; entries with ``mask > 0`` move (a
            binary mask is the usual case; a value other than 1 also scales the drift and the
            noise of that entry), entries with ``mask <= 0`` keep their initial value exactly.
        clip: Optional ``(low, high)`` to clamp every proposal to.
        metropolis: Apply the Metropolis-Hastings correction (MALA).  The proposal densities
            assume a binary mask and ignore clipping, so the correction is exact without
            clipping (and with a 0/1 mask).

    Returns:
        A `SamplerOutput`: the final samples, ``energies[t]`` = batch mean of ``-log p`` and
        ``grad_norms[t]`` = batch mean of the per-example gradient L2 norm, both at the state
        entering step t (shape ``[n_steps]``), and ``acceptance`` = the mean MH acceptance rate
        over steps (None without MH).  Every diagnostic is a device tensor.

    The speed options of the run (`coopcore.accel`: ``run.capture_sampler``, ``run.precision``)
    apply here: a captured run replays this same loop inside a CUDA graph, and under bf16 the
    network evaluations are autocast while the chains, noise and diagnostics stay float32.
    """
    options = dict(n_steps=n_steps, drift=drift, noise_std=noise_std, clip=clip, metropolis=metropolis)
    if accel.capture_enabled(init):
        return accel.sampler_graphs().run(_langevin_loop, log_density, init, generator, mask, options)
    return _langevin_loop(log_density, init, generator, mask=mask, **options)


def _langevin_loop(
    log_density: LogDensity,
    init: Tensor,
    generator: torch.Generator,
    *,
    n_steps: int,
    drift: float,
    noise_std: float,
    mask: Optional[Tensor] = None,
    clip: Optional[tuple[float, float]] = None,
    metropolis: bool = False,
) -> SamplerOutput:
    """The loop of `langevin_dynamics` (eager, or recorded once into a CUDA graph and replayed)."""
    x = init.detach().clone()
    if accel.current().bf16 and x.dtype in (torch.bfloat16, torch.float16):
        x = x.float()  # chains from a network run under autocast: the chain state stays float32
    start = x  # never modified in place: the values kept entries return to
    weight = None if mask is None else mask.to(dtype=x.dtype, device=x.device)
    keep = None if weight is None else (weight <= 0)
    use_mh = metropolis and noise_std > 0
    energies: list[Tensor] = []
    norms: list[Tensor] = []
    accepts: list[Tensor] = []
    lp: Optional[Tensor] = None
    grad: Optional[Tensor] = None
    for _ in range(n_steps):
        if lp is None or grad is None:
            lp, grad = log_density_and_grad(log_density, x)
        energies.append(-lp.mean())
        norms.append(grad.flatten(1).norm(dim=1).mean())
        step = drift * grad
        if weight is not None:
            step = step * weight
        proposal = x + step
        if noise_std > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * noise_std
            proposal = proposal + (noise if weight is None else noise * weight)
        if clip is not None:
            proposal = proposal.clamp(clip[0], clip[1])
        if keep is not None:
            proposal = torch.where(keep, start, proposal)
        if use_mh:
            lp_new, grad_new = log_density_and_grad(log_density, proposal)
            x, lp, grad, rate = _mh_select(x, lp, grad, proposal, lp_new, grad_new, drift, noise_std, weight,
                                           generator)
            accepts.append(rate)
        else:
            # Plain Langevin needs the gradient at the new point only if another step follows.
            x, lp, grad = proposal, None, None
    zero = torch.zeros(0, device=x.device)
    return SamplerOutput(
        samples=x.detach(),
        energies=torch.stack(energies) if energies else zero,
        grad_norms=torch.stack(norms) if norms else zero,
        acceptance=torch.stack(accepts).mean() if accepts else None,
    )
