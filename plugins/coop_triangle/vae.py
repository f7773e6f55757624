"""The variational auto-encoder (Kingma & Welling 2014) as a coopnets `Objective`: `vae`.

A baseline row of TPAMI Tables 1 and 3 and of the divergence-triangle Tables 1-3 (with
`occlusion` set, Table 3's VAE learning from occluded images).  Two models:

- the decoder p_theta(x | z) = N(g(z), sigma^2 I), z ~ N(0, I): any `Generator` ("generator"
  role; the triangle plugin's `triangle.generator.*` or the CoopNets generators);
- the encoder q_phi(z | x) = N(mu(x), diag(exp(logvar(x)))): any `Encoder` ("encoder" role,
  e.g. `triangle.encoder.*`, which returns (mu, logvar)).

One iteration draws z~ = mu(x) + exp(logvar / 2) * eps (reparameterisation, one sample per
example) and takes one joint gradient step of both networks on the negative ELBO, averaged
over the batch:

    L = kl_weight * KL(q_phi(z | x) || N(0, I)) + ||x - g(z~)||^2 / (2 sigma^2)

(the KL in closed form, `gaussian_kl_standard`).  The reported `neg_elbo` adds the constant
D/2 log(2 pi sigma^2) of the Gaussian likelihood (D = pixels per example), so it is the
single-sample estimate of -ELBO in nats per example; `loss` leaves the constant out.

Choices (options): `sigma` "none" = the generator's own `sigma` (the triangle generators:
sqrt(1/2), i.e. the loss sum ||x - g(z)||^2 + KL of the public VAE code; the CoopNets
generators: 0.3); `kl_weight` = 1 (the ELBO; other values give a beta-VAE).  Samples are
g(z) with z ~ N(0, I): the decoder's mean, without the observation noise, as VAE papers show
and score them.

Learning from incomplete images (divergence triangle Section 4.4, Table 3's VAE row): with
`occlusion` set (a coopcore.masks name; "none" = complete images, the default) every training
example has one fixed mask drawn from (`occlusion_seed`, its index) and an imputation buffer,
the same masks and buffer as the `triangle` objective's (`occlusion.py`).  The paper's VAEs
"build the inference model on occluded images" and proceed "by filling the missing parts with
average pixel intensity in the beginning, then iteratively re-update the missing parts using
reconstructed values", "only consider[ing] the un-occluded parts of training data".  So, per
iteration:

- the encoder sees the completed image x_c = M * x + (1 - M) * buffer (no hole ground truth);
- the reconstruction term of the loss runs over the observed pixels only:
      sum_obs (x - g(z~))^2 / (2 sigma^2) + kl_weight * KL(q(z | x_c) || N(0, I));
- after the joint step the holes of the batch's examples are replaced by g(mu(x_c)) of the
  updated networks, and `recovery_error` reports Table 3's error on them.

Choices where the paper is silent: the starting fill `fill_value = 0`, the middle of the
[-1, 1] range (the triangle's zero-fill, so both rows start from the same images; the paper
says "average pixel intensity" for the VAE); refills with the posterior mean's reconstruction.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import Batch, Parts, StepResult, UsageError, grad_norm, non_negative, optional_positive, positive
from coopcore.masks import mask_name_validator

from .losses import gaussian_kl_standard, reconstruction
from .occlusion import (
    OcclusionState, load_occlusion_state, occlusion_for, recovery_error, recovery_error_over, require_occlusion,
)


@attrs.frozen(kw_only=True)
class VaeOptions:
    """Variational auto-encoder (Kingma & Welling): Gaussian decoder and encoder, optionally
    learning from occluded images (ELBO on the observed pixels, holes refilled with g(mu(x)))."""

    # Observation noise sigma of the decoder N(g(z), sigma^2 I); "none" = the generator's sigma.
    sigma: Optional[float] = attrs.field(default=None, validator=optional_positive)
    # Weight of the KL term (1 = the ELBO; other values give a beta-VAE).
    kl_weight: float = attrs.field(default=1.0, validator=non_negative)
    # Learning from occluded images (triangle Table 3): a coopcore.masks name ("P.5", "P.7",
    # "MB10", "B20", "B30", ...), or "none" for complete images.
    occlusion: Optional[str] = attrs.field(default=None, validator=mask_name_validator)
    # Seed of the per-example masks (the same masks as the `triangle` objective's for one seed).
    occlusion_seed: int = attrs.field(default=0, validator=non_negative)
    # Initial value of the missing pixels.
    fill_value: float = 0.0
    # Range of pixel values for the recovery error (2 for images in [-1, 1]).
    pixel_range: float = attrs.field(default=2.0, validator=positive)


def vae_terms(x: Tensor, recon: Tensor, mu: Tensor, logvar: Tensor, sigma: float) -> dict[str, Tensor]:
    """Per-batch VAE terms, each averaged over the batch (per example):

    - ``recon``: sum over pixels of (x - recon)^2 / (2 sigma^2);
    - ``kl``: KL(N(mu, diag exp(logvar)) || N(0, I)) summed over latent dimensions;
    - ``log_norm``: D/2 log(2 pi sigma^2), the Gaussian likelihood's constant (D pixels).

    -log p(x | z) = recon + log_norm, so -ELBO (one posterior sample) = recon + kl + log_norm.
    """
    n = x.shape[0]
    rec = (x - recon).pow(2).flatten(1).sum(1) / (2.0 * sigma**2)
    kl = gaussian_kl_standard(mu, logvar).flatten(1).sum(1)
    d = x[0].numel()
    log_norm = torch.full((), 0.5 * d * math.log(2.0 * math.pi * sigma**2), dtype=x.dtype, device=x.device)
    return {"recon": rec.sum() / n, "kl": kl.sum() / n, "log_norm": log_norm}


class Vae:
    """Variational auto-encoder: one joint step of decoder and encoder on the negative ELBO
    (with an occlusion: on the observed pixels, the holes refilled with g(mu(x)))."""

    required_models = ("generator", "encoder")
    required_samplers = ()
    # The tiny configuration the registry-wide contract test builds (coopcore.contract); with an
    # occlusion, so the per-example state (masks, imputations) goes through the checkpoint round trip.
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": {
            "generator": {"name": "triangle.generator", "options": {
                "latent_dim": 4, "out_channels": 1, "channels": [8, 4], "sizes": [2, 4, 8], "kernels": [2, 4, 4],
                "strides": [1, 2, 2]}},
            "encoder": {"name": "triangle.encoder", "options": {
                "in_channels": 1, "input_size": 8, "channels": [4, 8], "sizes": [4, 2], "kernels": [4, 4],
                "strides": [2, 2], "head_kernel": 2, "latent_dim": 4}},
        },
        "optimizers": {"generator": {"name": "adam", "lr": 1e-3}, "encoder": {"name": "adam", "lr": 1e-3}},
        "options": {"sigma": 0.5, "occlusion": "B4"},
    }

    def __init__(self, options: VaeOptions, parts: Parts) -> None:
        self.options = options
        self.generator = parts.models["generator"]
        self.encoder = parts.models["encoder"]
        self.opt_g = parts.optimizers["generator"]
        self.opt_e = parts.optimizers["encoder"]
        latent = tuple(getattr(self.encoder, "latent_shape", ()))
        if latent and math.prod(latent) != math.prod(self.generator.latent_shape):
            raise UsageError(f"vae: the encoder's latent shape {list(latent)} does not match the generator's "
                             f"{list(self.generator.latent_shape)}: set the same latent_dim on both models")
        self.occlusion: Optional[OcclusionState] = None
        if options.occlusion is not None:
            self.occlusion = occlusion_for(options, parts.n_train, parts.data_shape, parts.device)

    @property
    def sigma(self) -> float:
        """The decoder's sigma in force (the option, else the generator's)."""
        return float(self.options.sigma) if self.options.sigma is not None else float(self.generator.sigma)

    def posterior(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z~ = mu(x) + exp(logvar(x) / 2) * eps; returns (z~, mu, logvar)."""
        mu, logvar = self.encoder(x)
        return mu + torch.exp(0.5 * logvar) * eps.view_as(mu), mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        return self.generator(z.reshape(z.shape[0], *self.generator.latent_shape))

    def terms(self, x: Tensor, eps: Tensor, observed: Optional[Tensor] = None) -> dict[str, Tensor]:
        """The loss and its parts for data `x` and posterior noise `eps` (differentiable); with
        the mask `observed` (1 = observed) the reconstruction term covers observed pixels only
        and there is no ``log_norm`` (the likelihood of a varying number of pixels)."""
        z, mu, logvar = self.posterior(x, eps)
        recon = self.decode(z)
        if observed is None:
            t = vae_terms(x, recon, mu, logvar, self.sigma)
        else:
            # summed before the division by 2 sigma^2, the KL as a batch mean: the arithmetic of
            # the occluded-image VAE whose golden numbers Table 3 pins
            t = {"recon": reconstruction(x, recon, observed) / (2.0 * self.sigma**2),
                 "kl": gaussian_kl_standard(mu, logvar).flatten(1).sum(1).mean()}
        t["loss"] = t["recon"] + self.options.kl_weight * t["kl"]
        return t

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        occ = self.occlusion
        x, observed = batch.x, None
        if occ is not None:
            idx = batch.index.to(occ.device)
            x = occ.compose(batch.x, idx)  # observed pixels + imputations: no hole ground truth
            observed = occ.masks[idx]
        mu_shape = (x.shape[0], *self.generator.latent_shape)
        eps = torch.randn(mu_shape, generator=generator, device=x.device)
        t = self.terms(x, eps, observed)
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_e.zero_grad(set_to_none=True)
        t["loss"].backward()
        grad_g, grad_e = grad_norm(self.generator), grad_norm(self.encoder)
        self.opt_g.step()
        self.opt_e.step()
        recon, kl = t["recon"].detach(), t["kl"].detach()
        if occ is not None:
            occ.update(idx, self.reconstruct(x))
            recovered = occ.compose(batch.x, idx)
            return StepResult(scalars={
                "loss": t["loss"].detach(),
                "recon": recon,
                "kl": kl,
                "grad_norm_generator": grad_g,
                "grad_norm_encoder": grad_e,
                "recovery_error": recovery_error(batch.x, recovered, observed,
                                                 self.options.pixel_range).to(torch.float32),
            })
        scalars = {
            "loss": t["loss"].detach(),
            "neg_elbo": recon + kl + t["log_norm"],
            "recon": recon,
            "kl": kl,
            # per-pixel squared error, comparable across sigma: recon * 2 sigma^2 / D
            "recon_mse": recon * (2.0 * self.sigma**2) / x[0].numel(),
            "grad_norm_generator": grad_g,
            "grad_norm_encoder": grad_e,
        }
        return StepResult(scalars=scalars)

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"generator": self.generator(self.generator.sample_latent(n, generator))}

    def reconstruct(self, x: Tensor) -> Tensor:
        """g(mu(x)), the deterministic reconstruction (with an occlusion, what refills the holes)."""
        with torch.no_grad():
            return self.decode(self.encoder(x)[0])

    # -- learning from occluded images: Table 3 ---------------------------------------------
    def recovered_images(self, x: Tensor, index: Tensor) -> Tensor:
        """Observed pixels of `x` (the ground truth of examples `index`), imputations in the holes."""
        occ = require_occlusion(self.occlusion)
        return occ.compose(x.to(occ.device), index.to(occ.device))

    def recovery_error_on(self, dataset: Any, batch_size: int = 500, refresh: bool = False,
                          generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Table 3's recovery error over the training set `dataset`; with `refresh` the holes are
        first refilled once with g(mu(x)) of the final networks.  Returns (mean, per-image)."""
        occ = require_occlusion(self.occlusion)
        refill = None
        if refresh:
            def refill(recovered: Tensor, index: Tensor) -> Tensor:
                return self.reconstruct(recovered)
        return recovery_error_over(occ, dataset, self.options.pixel_range, batch_size, refill)

    # -- state ------------------------------------------------------------------------------
    def per_example_state(self) -> dict[str, Tensor]:
        """The imputed pixels, indexed by training example: a run on several processes keeps them
        identical on every rank (coopcore's optional per-example-state hook)."""
        return {} if self.occlusion is None else {"imputed": self.occlusion.imputed}

    def state_dict(self) -> dict[str, Any]:
        """The occlusion masks and imputations (empty without an occlusion)."""
        return {} if self.occlusion is None else {"occlusion": self.occlusion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_occlusion_state(self.occlusion, state, self.options.occlusion)
