"""The divergence triangle (TPAMI 2020, Section 3, Algorithm 1) as a coopnets `Objective`.

Three models: the generator p_theta(x | z) ("generator" role), the energy-based model
pi_alpha(x) ~ exp(-E_alpha(x)) ("descriptor" role) and the inference model q_phi(z | x) =
N(mu(x), diag(exp(logvar(x)))) ("encoder" role).  The objective (13)

    max_alpha min_theta min_phi  KL(Q || P) + KL(P || Pi) - KL(Q || Pi)

needs no MCMC.  One iteration follows Algorithm 1: draw z ~ N(0, I) and x~ = G(z) (lines 2-3),
take the data batch x and z~ ~ q(z | x) by reparameterisation (lines 4-5), then

- alpha / E step (line 6):  L_E = mean E(x) - mean E(x~)      (x~ detached; E = -score);
- phi / I step (line 7):    L_I = R + w_kl * KL(q(z|x) || N(0, I)) + w_nll * NLL(z | q(. | x~)),
                            with x~ detached (only phi is updated);
- theta / G step (line 8):  L_G = R + mean E(G(z)) + w_nll * NLL(z | q(. | G(z))),
                            gradients through the (just updated, not stepped) EBM and encoder;

where R = sum_i ||x_i - G(z~_i)||^2 / batch is the reconstruction term of KL(Q || P) (a Gaussian
observation model with 2 sigma^2 = 1, as in the public code).  These are the per-iteration
steps recorded from the public code (recipes.md, "triangle").  Choices:

- Averaging (public code): the KL term is averaged over batch *and* latent dimensions
  (`kl_reduction = "mean"`, 1/d of the usual per-example KL); `"batch_mean"` sums over latent
  dimensions and averages over the batch (the usual ELBO scaling).  The latent NLL (the
  Gaussian negative log-likelihood of z under q(z | G(z)), log(2 pi) constant included) uses the
  same choices through `nll_reduction`; the code's averaging for it is not recorded, so it
  defaults to `"mean"` like the KL.
- Weights: `kl_weight = 1`, `nll_weight = 0.1` (code).  The EBM term of the G step has weight 1.
- The samples (z, x~, z~) are drawn once per iteration and shared by the three steps, as in
  Algorithm 1; the I step's z~ is reused (detached) by the G step's reconstruction, and x~ is
  recomputed as G(z) with gradients in the G step.  `generator_steps > 1` repeats the G step
  (Algorithm 1, line 9, "optional: multiple-step update"; Section 4.3 uses several theta steps).
- Gradients are clipped to a total norm of `grad_clip = 100` per network before each optimiser
  step (code); `grad_clip = "none"` disables clipping.  The reported grad norms are the norms
  before clipping.
- Learning rates (E 1e-4, G 3e-4, I 3e-4, Adam beta1 0.5), weight decay (5e-4, code: G only) and
  the 0.998/epoch decay belong to the recipe's optimiser tables, not to this objective.
- All randomness (z, eps) comes from the `generator` argument.  No state is kept between
  iterations, so `state_dict()` is empty.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import Batch, Parts, StepResult, non_negative, positive

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1 - log s^2).

    Summing over the latent dimensions gives KL(N(mu, diag s^2) || N(0, I)) of one example.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_nll(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise -log N(z; mu, exp(logvar)) = 0.5 ((z - mu)^2 / s^2 + log s^2 + log 2 pi)."""
    return 0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI)


def reduce_latent(values: Tensor, how: str) -> Tensor:
    """'mean': average over batch and latent dimensions (public code); 'batch_mean': sum over
    the latent dimensions of each example, then average over the batch."""
    if how == "mean":
        return values.mean()
    if how == "batch_mean":
        return values.flatten(1).sum(1).mean()
    raise ValueError(f"unknown reduction {how!r}")


def reconstruction(x: Tensor, recon: Tensor) -> Tensor:
    """sum_i ||x_i - recon_i||^2 / batch (public code)."""
    return (x - recon).pow(2).sum() / x.shape[0]


def _clip(module: torch.nn.Module, max_norm: Optional[float]) -> Tensor:
    """Clip the module's gradients to `max_norm` (if given); return the norm before clipping."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return torch.zeros((), device=next(module.parameters()).device)
    if max_norm is None:
        return torch.cat([p.grad.detach().flatten() for p in params]).norm()
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


@attrs.frozen(kw_only=True)
class TriangleOptions:
    """Divergence triangle (TPAMI 2020, Algorithm 1)."""

    # Number of prior samples z per iteration (M~ of Algorithm 1); 0 = the batch size.
    n_latent: int = attrs.field(default=0, validator=non_negative)
    # Weight of KL(q(z|x) || N(0, I)) in the I step.
    kl_weight: float = attrs.field(default=1.0, validator=non_negative)
    # Weight of the latent NLL -log q(z | G(z)) in the I and G steps (code: 0.1).
    nll_weight: float = attrs.field(default=0.1, validator=non_negative)
    # "mean": over batch x latent dims (code); "batch_mean": sum over dims, mean over batch.
    kl_reduction: Literal["mean", "batch_mean"] = "mean"
    nll_reduction: Literal["mean", "batch_mean"] = "mean"
    # Total gradient-norm clip per network before each optimiser step (code: 100); "none" = off.
    grad_clip: Optional[float] = 100.0
    # Number of G (theta) steps per iteration (Algorithm 1, line 9).
    generator_steps: int = attrs.field(default=1, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"'grad_clip' must be > 0 or omitted, got {self.grad_clip}")


class Triangle:
    """Divergence triangle: joint training of an EBM, a generator and an inference model without MCMC."""

    required_models = ("descriptor", "generator", "encoder")
    required_samplers = ()

    def __init__(self, options: TriangleOptions, parts: Parts) -> None:
        self.options = options
        self.ebm = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        self.encoder = parts.models["encoder"]
        self.opt_e = parts.optimizers["descriptor"]
        self.opt_g = parts.optimizers["generator"]
        self.opt_i = parts.optimizers["encoder"]

    # -- pieces -------------------------------------------------------------------------
    def posterior_sample(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z~ = mu(x) + exp(logvar(x) / 2) * eps (reparameterisation); returns (z~, mu, logvar)."""
        mu, logvar = self.encoder(x)
        return mu + torch.exp(0.5 * logvar) * eps.view_as(mu), mu, logvar

    def kl_term(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """KL(q(z|x) || N(0, I)) with the configured averaging."""
        return reduce_latent(gaussian_kl_standard(mu, logvar), self.options.kl_reduction)

    def latent_nll_term(self, z: Tensor, x_gen: Tensor) -> Tensor:
        """-log q(z | x_gen), x_gen = G(z), with the configured averaging."""
        mu, logvar = self.encoder(x_gen)
        return reduce_latent(gaussian_nll(z.view_as(mu), mu, logvar), self.options.nll_reduction)

    def encoder_loss(self, x: Tensor, z: Tensor, x_gen: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """I-step terms: reconstruction, KL and latent NLL (x_gen is used as given)."""
        z_post, mu, logvar = self.posterior_sample(x, eps)
        recon = reconstruction(x, self.generator(z_post))
        kl = self.kl_term(mu, logvar)
        nll = self.latent_nll_term(z, x_gen)
        loss = recon + self.options.kl_weight * kl + self.options.nll_weight * nll
        return {"loss": loss, "recon": recon, "kl": kl, "latent_nll": nll, "z_post": z_post}

    # -- Objective ----------------------------------------------------------------------
    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        o = self.options
        x = batch.x
        n = o.n_latent or x.shape[0]
        z = self.generator.sample_latent(n, generator)  # line 2
        eps = torch.randn((x.shape[0], *self.encoder.latent_shape), generator=generator, device=x.device)
        with torch.no_grad():
            x_gen = self.generator(z)  # line 3

        # alpha step (line 6): lower the energy of data, raise it on generated samples.
        e_obs = self.ebm.energy(x)
        e_syn = self.ebm.energy(x_gen)
        loss_e = e_obs.mean() - e_syn.mean()
        self.opt_e.zero_grad(set_to_none=True)
        loss_e.backward()
        grad_e = _clip(self.ebm, o.grad_clip)
        self.opt_e.step()

        # phi step (line 7): VAE terms on data + sleep phase on generated samples.
        terms = self.encoder_loss(x, z, x_gen, eps)
        self.opt_i.zero_grad(set_to_none=True)
        terms["loss"].backward()
        grad_i = _clip(self.encoder, o.grad_clip)
        self.opt_i.step()
        z_post = terms["z_post"].detach()

        # theta step (line 8), optionally repeated (line 9).
        for _ in range(o.generator_steps):
            recon_g = reconstruction(x, self.generator(z_post))
            x_fake = self.generator(z)
            e_fake = self.ebm.energy(x_fake).mean()
            nll_g = self.latent_nll_term(z, x_fake)
            loss_g = recon_g + e_fake + o.nll_weight * nll_g
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            grad_g = _clip(self.generator, o.grad_clip)
            self.opt_g.step()
        # the E and I backward passes through G/encoder leave gradients that were not used
        self.ebm.zero_grad(set_to_none=True)
        self.encoder.zero_grad(set_to_none=True)

        scalars = {
            "loss_ebm": loss_e.detach(),
            "loss_encoder": terms["loss"].detach(),
            "loss_generator": loss_g.detach(),
            "energy_obs": e_obs.detach().mean(),
            "energy_syn": e_syn.detach().mean(),
            "recon": terms["recon"].detach(),
            "recon_mse": terms["recon"].detach() / x[0].numel(),
            "kl": terms["kl"].detach(),
            "latent_nll": terms["latent_nll"].detach(),
            "grad_norm_ebm": grad_e.detach(),
            "grad_norm_encoder": grad_i.detach(),
            "grad_norm_generator": grad_g.detach(),
        }
        return StepResult(scalars=scalars, histograms={"energy_obs": e_obs.detach(), "energy_syn": e_syn.detach()})

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"generator": self.generator(self.generator.sample_latent(n, generator))}

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(mu(x)), the reconstruction used for the paper's test MSE (Table 2)."""
        with torch.no_grad():
            mu, _ = self.encoder(x)
            return self.generator(mu.view(x.shape[0], *self.generator.latent_shape))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None
