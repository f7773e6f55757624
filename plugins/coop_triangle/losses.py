"""The Gaussian terms of the divergence triangle (13), as plain tensor functions.

With q_phi(z|x) = N(mu, diag s^2), p(z) = N(0, I) and p_theta(x|z) = N(g(z), sigma^2 I):

- KL(Q || P) = E_Q[ KL(q_phi(z|x) || p(z)) ] + E_Q[ ||x - g(z)||^2 / (2 sigma^2) ] + const
  (the VAE terms: `gaussian_kl_standard` and `reconstruction`);
- KL(P || Pi) = E_P[ E_alpha(x) ] + log Z(alpha) + E_P[ -log q_phi(z | x) ] + const
  (the EBM term and the latent NLL `gaussian_nll` of z under q_phi(. | g(z)));
- KL(Q || Pi) = E_data[ E_alpha(x) ] + log Z(alpha) + const.

The constants do not depend on (alpha, theta, phi) for a fixed sigma; log Z cancels in (13).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import torch
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)

Reduction = Literal["mean", "batch_mean"]


def gaussian_kl_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1 - log s^2).

    Summing over the latent dimensions gives KL(N(mu, diag s^2) || N(0, I)) of one example.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_nll(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise -log N(z; mu, exp(logvar)) = 0.5 ((z - mu)^2 / s^2 + log s^2 + log 2 pi).

    The public code leaves out the log 2 pi constant (same gradients, a shifted value)."""
    return 0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + LOG_2PI)


def reduce_latent(values: Tensor, how: Reduction) -> Tensor:
    """'mean': average over batch and latent dimensions; 'batch_mean': sum over the latent
    dimensions of each example, then average over the batch (the per-example KL / NLL)."""
    if how == "mean":
        return values.mean()
    if how == "batch_mean":
        return values.flatten(1).sum(1).mean()
    raise ValueError(f"unknown reduction {how!r}")


def reconstruction(x: Tensor, recon: Tensor, observed: Optional[Tensor] = None) -> Tensor:
    """sum_i ||x_i - recon_i||^2 / batch (the public code's summed MSE per example).

    With `observed` (1 = observed, broadcast over channels) the sum runs over observed pixels
    only (the VAE treatment of occluded data)."""
    sq = (x - recon).pow(2)
    if observed is not None:
        sq = sq * observed.to(sq.dtype)
    return sq.sum() / x.shape[0]
