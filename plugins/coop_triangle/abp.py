"""Alternating back-propagation learning from incomplete images: objective `abp`.

The ABP row of the divergence triangle's Table 3 (Han et al., Section 4.4, citing Han, Lu, Zhu,
Wu, "Alternating back-propagation for generator network", AAAI 2017): the generator alone,
TPAMI's Algorithm G, where both steps see only the observed pixels of each training image:

- inference (G1): each example keeps one latent vector z_i (persistent across epochs); a run of
  the "inference" sampler (Langevin, TPAMI eq. 15) moves it along
  log q(z, x) = -||M * (x - g(z))||^2 / (2 sigma^2) - ||z||^2 / 2 with M = 1 on observed pixels;
- learning (G2): one optimiser step of the generator on sum_obs (x - g(z_i))^2 / (2 sigma^2),
  averaged over the batch (TPAMI eq. 16 on the observed pixels);
- recovery: after the step the holes of the batch's examples are filled with g(z_i) of the
  updated generator; the recovered training image is the observed pixels plus these values
  (the same per-example masks and buffer as the `triangle` objective's occlusion, so both rows
  of Table 3 see identical masks for the same `occlusion_seed`).

The hole pixels' ground truth is never read by the learning: the log-density and the loss are
masked, and the images the objective handles are composed of the observed pixels and the
imputations (zero-filled until an example's first visit).

Choices where the papers are silent (options): one sampler run per visit started from the
example's stored latent (`persistent_latents`; false restarts from N(0, I) every visit, as
Algorithm G's option does); the imputation uses the latents after inference and the generator
after its update (the order of the triangle's imputation).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import Batch, Parts, StepResult, UsageError, generator_log_joint, grad_norm, non_negative, positive
from coopcore.masks import mask_name_validator

from .occlusion import load_occlusion_state, occlusion_for, recovery_error, recovery_error_over


@attrs.frozen(kw_only=True)
class AbpOptions:
    """Alternating back-propagation (Algorithm G) on the observed pixels of occluded images."""

    # Start each example's inference from its stored latent (ABP) or from N(0, I).
    persistent_latents: bool = True
    # The occlusion: a coopcore.masks name ("P.5", "P.7", "MB10", "B20", "B30", ...).
    occlusion: str = attrs.field(default="B30", validator=mask_name_validator)
    # Seed of the per-example masks (the same masks as the `triangle` objective's for one seed).
    occlusion_seed: int = attrs.field(default=0, validator=non_negative)
    # Value the holes hold before an example's first visit (only shown, never learned from).
    fill_value: float = 0.0
    # Range of pixel values for the recovery error (2 for images in [-1, 1]).
    pixel_range: float = attrs.field(default=2.0, validator=positive)


class Abp:
    """Generator learned from the observed pixels only: Langevin inference + reconstruction (G1, G2)."""

    required_models = ("generator",)
    required_samplers = ("inference",)
    # The tiny configuration of the registry-wide contract test (coopcore.contract): the
    # per-example latents, masks and imputations go through the checkpoint round trip.
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": {"generator": {"name": "triangle.generator", "options": {
            "latent_dim": 4, "out_channels": 1, "channels": [8, 4], "sizes": [2, 4, 8], "kernels": [2, 4, 4],
            "strides": [1, 2, 2]}}},
        "samplers": {"inference": {"name": "langevin", "options": {"n_steps": 2, "step_size": 0.1}}},
        "optimizers": {"generator": {"name": "adam", "lr": 1e-3}},
        "options": {"occlusion": "B4"},
    }

    def __init__(self, options: AbpOptions, parts: Parts) -> None:
        self.options = options
        self.generator = parts.models["generator"]
        self.opt_g = parts.optimizers["generator"]
        self.inference = parts.samplers["inference"]
        self.n_train = parts.n_train
        self.latents: Optional[Tensor] = None
        self.occlusion = occlusion_for(options, parts.n_train, parts.data_shape, parts.device)

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        g, occ = self.generator, self.occlusion
        idx = batch.index.to(occ.device)
        x = occ.compose(batch.x, idx)  # observed pixels + imputations: no hole ground truth
        observed = occ.masks[idx].to(x.dtype)
        if self.latents is None:
            self.latents = g.sample_latent(self.n_train, generator)
        lat_idx = idx.to(self.latents.device)
        z0 = self.latents[lat_idx] if self.options.persistent_latents else g.sample_latent(len(idx), generator)
        out = self.inference.run(generator_log_joint(g, x, g.sigma, observed), z0, generator)  # G1
        z = out.samples.detach()
        self.latents[lat_idx] = z
        recon = g(z)  # G2
        residual = (x - recon) * observed
        loss = residual.pow(2).flatten(1).sum(1).mean() / (2.0 * g.sigma**2)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        grad = grad_norm(g)
        self.opt_g.step()
        with torch.no_grad():
            occ.update(idx, g(z))
        recovered = occ.compose(batch.x, idx)
        scalars = {
            "loss_generator": loss.detach(),
            "recon_mse_observed": residual.detach().pow(2).sum() / observed.expand_as(x).sum().clamp_min(1.0),
            "latent_norm": z.flatten(1).norm(dim=1).mean(),
            "grad_norm_generator": grad,
            "recovery_error": recovery_error(batch.x, recovered, occ.masks[idx], self.options.pixel_range)
            .to(torch.float32),
        }
        if out.grad_norms.numel():
            scalars["langevin_grad_norm"] = out.grad_norms[-1]
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
        """Table 3's recovery error over the training set `dataset`.  With `refresh` the holes
        are first filled with g(z_i) of the final generator from the stored latents (no new
        inference).  Returns (mean error, per-image errors)."""
        refill = None
        if refresh:
            if self.latents is None:
                raise UsageError("recovery error: the run has not trained yet (no inferred latents to refresh from)")
            latents = self.latents

            def refill(recovered: Tensor, index: Tensor) -> Tensor:
                with torch.no_grad():
                    return self.generator(latents[index.to(latents.device)])
        return recovery_error_over(self.occlusion, dataset, self.options.pixel_range, batch_size, refill)

    # -- state ------------------------------------------------------------------------------
    def per_example_state(self) -> dict[str, Tensor]:
        """The latents and the imputed pixels, indexed by training example: a run on several
        processes keeps them identical on every rank (coopcore's optional per-example-state hook)."""
        state = {} if self.latents is None else {"latents": self.latents}
        if self.occlusion is not None:
            state["imputed"] = self.occlusion.imputed
        return state

    def state_dict(self) -> dict[str, Any]:
        """The per-example latents and the occlusion masks and imputations."""
        return {"latents": None if self.latents is None else self.latents.detach().cpu(),
                "occlusion": self.occlusion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_occlusion_state(self.occlusion, state, self.options.occlusion)
        lat = state.get("latents")
        device = next(self.generator.parameters()).device
        if lat is not None and tuple(lat.shape) != (self.n_train, *self.generator.latent_shape):
            raise UsageError(f"the checkpoint holds latents of shape {tuple(lat.shape)}; this run needs "
                             f"{(self.n_train, *self.generator.latent_shape)}")
        self.latents = None if lat is None else lat.to(device)
