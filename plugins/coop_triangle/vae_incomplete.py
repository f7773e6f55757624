"""A VAE learning from incomplete images: objective `vae_incomplete` (Table 3's VAE row).

The divergence triangle's Section 4.4 describes the VAE baseline of Table 3: VAEs "build the
inference model on occluded images" and proceed "by filling the missing parts with average pixel
intensity in the beginning, then iteratively re-update the missing parts using reconstructed
values"; "unlike VAEs, which only consider the un-occluded parts of training data, our model
utilizes the generated samples".  So, per iteration, with the per-example masks and imputation
buffer of the `triangle` objective (`occlusion.py`; the same masks for the same seed):

- the encoder sees the completed image x_c = M * x + (1 - M) * buffer;
- one joint gradient step of decoder and encoder on the negative ELBO restricted to the
  observed pixels, averaged over the batch:
      sum_obs (x - g(z~))^2 / (2 sigma^2) + kl_weight * KL(q(z | x_c) || N(0, I)),
  z~ = mu(x_c) + exp(logvar(x_c) / 2) eps (one reparameterised sample per example);
- the holes of the batch's examples are replaced by g(mu(x_c)) of the updated networks.

The `vae` objective (`vae.py`) is the same model on complete images; this one adds the masks.
Choices where the paper is silent (options): `sigma` "none" = the generator's own sigma (the
triangle generators' sqrt(1/2): the loss sum of squares + KL, as the triangle's own
reconstruction term); the starting fill `fill_value = 0`, the middle of the [-1, 1] range (the
triangle's zero-fill, so both rows start from the same images; the paper says "average pixel
intensity" for the VAE); refills with the posterior mean's reconstruction.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import Batch, Parts, StepResult, UsageError, grad_norm, non_negative, optional_positive, positive
from coopcore.masks import mask_name_validator, parse_mask_name

from .losses import gaussian_kl_standard, reconstruction
from .occlusion import OcclusionState, recovery_error, recovery_error_over


@attrs.frozen(kw_only=True)
class VaeIncompleteOptions:
    """VAE on occluded images: ELBO on the observed pixels, holes refilled by reconstructions."""

    # The occlusion: a coopcore.masks name ("P.5", "P.7", "MB10", "B20", "B30", ...).
    occlusion: str = attrs.field(default="B30", validator=mask_name_validator)
    # Seed of the per-example masks (the same masks as the `triangle` objective's for one seed).
    occlusion_seed: int = attrs.field(default=0, validator=non_negative)
    # Initial value of the missing pixels.
    fill_value: float = 0.0
    # Decoder noise sigma; "none" = the generator's sigma.
    sigma: Optional[float] = attrs.field(default=None, validator=optional_positive)
    # Weight of the KL term (1 = the ELBO).
    kl_weight: float = attrs.field(default=1.0, validator=non_negative)
    # Range of pixel values for the recovery error (2 for images in [-1, 1]).
    pixel_range: float = attrs.field(default=2.0, validator=positive)


class VaeIncomplete:
    """VAE learning from occluded images (divergence triangle Table 3's VAE row)."""

    required_models = ("generator", "encoder")
    required_samplers = ()
    # The tiny configuration of the registry-wide contract test (coopcore.contract).
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
        "options": {"occlusion": "B4"},
    }

    def __init__(self, options: VaeIncompleteOptions, parts: Parts) -> None:
        self.options = options
        self.generator = parts.models["generator"]
        self.encoder = parts.models["encoder"]
        self.opt_g = parts.optimizers["generator"]
        self.opt_e = parts.optimizers["encoder"]
        latent = tuple(getattr(self.encoder, "latent_shape", ()))
        if latent and math.prod(latent) != math.prod(self.generator.latent_shape):
            raise UsageError(f"vae_incomplete: the encoder's latent shape {list(latent)} does not match the "
                             f"generator's {list(self.generator.latent_shape)}: set the same latent_dim on both")
        shape = tuple(parts.data_shape)
        try:
            self.occlusion = OcclusionState(options.occlusion, parts.n_train, shape, options.occlusion_seed,
                                            options.fill_value, parts.device)
            parse_mask_name(options.occlusion).make(1, shape, torch.Generator())  # does it fit?
        except ValueError as exc:
            raise UsageError(f"objective.options.occlusion = {options.occlusion!r} does not fit the "
                             f"training data (examples of shape {shape}): {exc}") from None

    @property
    def sigma(self) -> float:
        """The decoder's sigma in force (the option, else the generator's)."""
        return float(self.options.sigma) if self.options.sigma is not None else float(self.generator.sigma)

    def decode(self, z: Tensor) -> Tensor:
        return self.generator(z.reshape(z.shape[0], *self.generator.latent_shape))

    def reconstruct(self, x: Tensor) -> Tensor:
        """g(mu(x)), the deterministic reconstruction that refills the holes."""
        with torch.no_grad():
            return self.decode(self.encoder(x)[0])

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        occ, o = self.occlusion, self.options
        idx = batch.index.to(occ.device)
        x = occ.compose(batch.x, idx)  # observed pixels + imputations: no hole ground truth
        observed = occ.masks[idx]
        mu, logvar = self.encoder(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        recon = self.decode(mu + torch.exp(0.5 * logvar) * eps)
        rec = reconstruction(x, recon, observed) / (2.0 * self.sigma**2)
        kl = gaussian_kl_standard(mu, logvar).flatten(1).sum(1).mean()
        loss = rec + o.kl_weight * kl
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        grad_g, grad_e = grad_norm(self.generator), grad_norm(self.encoder)
        self.opt_g.step()
        self.opt_e.step()
        occ.update(idx, self.reconstruct(x))
        recovered = occ.compose(batch.x, idx)
        scalars = {
            "loss": loss.detach(),
            "recon": rec.detach(),
            "kl": kl.detach(),
            "grad_norm_generator": grad_g,
            "grad_norm_encoder": grad_e,
            "recovery_error": recovery_error(batch.x, recovered, observed, o.pixel_range).to(torch.float32),
        }
        return StepResult(scalars=scalars)

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"generator": self.generator(self.generator.sample_latent(n, generator))}

    # -- Table 3 ----------------------------------------------------------------------------
    def recovered_images(self, x: Tensor, index: Tensor) -> Tensor:
        """Observed pixels of `x` (the ground truth of examples `index`), imputations in the holes."""
        return self.occlusion.compose(x.to(self.occlusion.device), index.to(self.occlusion.device))

    def recovery_error_on(self, dataset: Any, batch_size: int = 500, refresh: bool = False,
                          generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Table 3's recovery error over the training set `dataset`; with `refresh` the holes are
        first refilled once with g(mu(x)) of the final networks.  Returns (mean, per-image)."""
        refill = None
        if refresh:
            def refill(recovered: Tensor, index: Tensor) -> Tensor:
                return self.reconstruct(recovered)
        try:
            return recovery_error_over(self.occlusion, dataset, self.options.pixel_range, batch_size, refill)
        except ValueError as exc:
            raise UsageError(f"recovery error: {exc}") from None

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The occlusion masks and imputations."""
        return {"occlusion": self.occlusion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "occlusion" not in state:
            raise UsageError("the checkpoint has no occlusion state (masks and imputed pixels) for this run's "
                             f"objective.options.occlusion = {self.options.occlusion!r}")
        try:
            self.occlusion.load_state_dict(state["occlusion"])
        except ValueError as exc:
            raise UsageError(f"cannot resume the occlusion state: {exc}") from None
