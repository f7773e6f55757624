"""GAN losses on discriminator logits, and the gradient regularisers.

All losses take the discriminator outputs (logits) on real and fake examples, `d_real` [B] and
`d_fake` [B], and return a 0-d tensor: the batch mean of the per-example loss.  Every function
is differentiable with respect to its inputs (and through them, the networks).

- non-saturating (Goodfellow et al. 2014; StyleGAN2's default):
  D: softplus(-d_real) + softplus(d_fake) = -log sigmoid(d_real) - log(1 - sigmoid(d_fake));
  G: softplus(-d_fake) = -log sigmoid(d_fake).
- hinge (Lim & Ye 2017; CoopInit appendix C eqs. 13-14):
  D: relu(1 - d_real) + relu(1 + d_fake);  G: -d_fake.
- WGAN (Arjovsky et al. 2017; CoopInit eq. 11): D: d_fake - d_real;  G: -d_fake.
- WGAN-GP penalty (Gulrajani et al. 2017; CoopInit eq. 12):
  lambda * (||grad_x D(x_hat)||_2 - 1)^2 on x_hat = eps x_real + (1 - eps) x_fake,
  eps ~ U[0, 1) per example from an explicit torch.Generator.
- R1 (Mescheder et al. 2018): gamma / 2 * ||grad_x D(x_real)||^2; with lazy regularisation
  (StyleGAN2) it is applied every k-th step only and multiplied by k.
- zCR, latent consistency regularisation (Zhao et al. 2021, "Improved consistency
  regularization for GANs"; CoopInit Table 6): with a perturbed latent z' = z + dz,
  dz ~ N(0, sigma^2 I), D adds lambda_dis * mean_i (D(G(z_i)) - D(G(z'_i)))^2 (D should not
  care about a small move in latent space) and G adds -lambda_gen * mean_i ||G(z_i) - G(z'_i)||^2
  (G should not collapse nearby latents onto one image).
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

#: A discriminator: images [B, ...] -> logits [B].
Critic = Callable[[Tensor], Tensor]
LossName = Literal["ns", "hinge", "wgan"]


# --- non-saturating -------------------------------------------------------------------
def ns_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Non-saturating discriminator loss: mean softplus(-d_real) + softplus(d_fake)."""
    return (F.softplus(-d_real) + F.softplus(d_fake)).mean()


def ns_g_loss(d_fake: Tensor) -> Tensor:
    """Non-saturating generator loss: mean softplus(-d_fake)."""
    return F.softplus(-d_fake).mean()


# --- hinge ----------------------------------------------------------------------------
def hinge_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Hinge discriminator loss: mean relu(1 - d_real) + relu(1 + d_fake)."""
    return (F.relu(1.0 - d_real) + F.relu(1.0 + d_fake)).mean()


def hinge_g_loss(d_fake: Tensor) -> Tensor:
    """Hinge generator loss: mean -d_fake."""
    return (-d_fake).mean()


# --- Wasserstein ----------------------------------------------------------------------
def wgan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """WGAN critic loss: mean d_fake - d_real."""
    return (d_fake - d_real).mean()


def wgan_g_loss(d_fake: Tensor) -> Tensor:
    """WGAN generator loss: mean -d_fake."""
    return (-d_fake).mean()


D_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ns": ns_d_loss, "hinge": hinge_d_loss, "wgan": wgan_d_loss,
}
G_LOSSES: dict[str, Callable[[Tensor], Tensor]] = {
    "ns": ns_g_loss, "hinge": hinge_g_loss, "wgan": wgan_g_loss,
}


def d_loss(name: LossName, d_real: Tensor, d_fake: Tensor) -> Tensor:
    """The discriminator loss called `name` ("ns", "hinge" or "wgan")."""
    try:
        return D_LOSSES[name](d_real, d_fake)
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; expected one of {sorted(D_LOSSES)}") from None


def g_loss(name: LossName, d_fake: Tensor) -> Tensor:
    """The generator loss called `name` ("ns", "hinge" or "wgan")."""
    try:
        return G_LOSSES[name](d_fake)
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; expected one of {sorted(G_LOSSES)}") from None


# --- gradient regularisers -------------------------------------------------------------
def _input_grad(critic: Critic, x: Tensor) -> Tensor:
    """d sum_i D(x_i) / d x, kept in the graph (create_graph) so the penalty trains D."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1)


def interpolates(x_real: Tensor, x_fake: Tensor, generator: torch.Generator) -> Tensor:
    """x_hat = eps x_real + (1 - eps) x_fake, eps ~ U[0, 1) per example (from `generator`)."""
    shape = (x_real.shape[0],) + (1,) * (x_real.dim() - 1)
    eps = torch.rand(shape, generator=generator, device=x_real.device, dtype=x_real.dtype)
    return eps * x_real.detach() + (1.0 - eps) * x_fake.detach()


def gradient_penalty(
    critic: Critic, x_real: Tensor, x_fake: Tensor, generator: torch.Generator, lam: float = 10.0
) -> Tensor:
    """WGAN-GP: lambda * mean (||grad_x D(x_hat)||_2 - 1)^2 over random interpolates."""
    grad = _input_grad(critic, interpolates(x_real, x_fake, generator))
    return lam * (grad.norm(2, dim=1) - 1.0).pow(2).mean()


def r1_penalty(critic: Critic, x_real: Tensor, gamma: float = 10.0) -> Tensor:
    """R1: gamma / 2 * mean ||grad_x D(x_real)||^2."""
    grad = _input_grad(critic, x_real)
    return 0.5 * gamma * grad.pow(2).sum(1).mean()


def r1_due(step: int, interval: int = 1) -> bool:
    """Lazy regularisation: R1 is applied on steps 0, k, 2k, ... (k = `interval`)."""
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    return step % interval == 0


def lazy_r1_penalty(critic: Critic, x_real: Tensor, step: int, gamma: float = 10.0, interval: int = 1) -> Tensor | None:
    """R1 every `interval`-th step, multiplied by `interval` (StyleGAN2's lazy regularisation,
    which keeps the expected penalty per step equal to the eager one); None on other steps."""
    if not r1_due(step, interval):
        return None
    return interval * r1_penalty(critic, x_real, gamma)


# --- latent consistency regularisation (zCR) ----------------------------------------------
def perturb_latent(z: Tensor, std: float, generator: torch.Generator) -> Tensor:
    """z + dz with dz ~ N(0, std^2 I), drawn from `generator` (one draw of z's shape)."""
    return z + std * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)


def zcr_discriminator_term(d_fake: Tensor, d_fake_perturbed: Tensor, weight: float) -> Tensor:
    """zCR's discriminator term: weight * mean_i (D(G(z_i)) - D(G(z_i + dz_i)))^2 on the logits."""
    return weight * (d_fake - d_fake_perturbed).pow(2).mean()


def zcr_generator_term(x: Tensor, x_perturbed: Tensor, weight: float,
                       reduction: Literal["mean", "sum"] = "mean") -> Tensor:
    """zCR's generator term: -weight * mean_i d(G(z_i), G(z_i + dz_i)), where d is the squared
    difference averaged over each example's elements ("mean", the scale of an MSE) or summed
    (the squared L2 norm, "sum").  Negative: minimising it pushes the two images apart."""
    sq = (x - x_perturbed).flatten(1).pow(2)
    per_example = sq.mean(1) if reduction == "mean" else sq.sum(1)
    return -weight * per_example.mean()
