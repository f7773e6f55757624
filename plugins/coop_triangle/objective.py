"""The divergence triangle (Han et al., Section 3, Algorithm 1) as a coopnets `Objective`.

Three models: the generator p_theta(x | z) ("generator" role), the energy-based model
pi_alpha(x) ~ exp(-E_alpha(x)) ("descriptor" role) and the inference model q_phi(z | x) =
N(mu(x), diag(exp(logvar(x)))) ("encoder" role).  The loss (13)

    max_alpha min_theta min_phi  D = KL(Q || P) + KL(P || Pi) - KL(Q || Pi)

unpacks (see `losses.py`) into, per example,

    D = ||x - g(z~)||^2 / (2 sigma^2) + KL(q(z|x) || N(0, I)) + E(x~) - log q(z | x~) - E(x) + const,

with z~ ~ q(z | x) for data x, z ~ N(0, I) and x~ ~ p_theta(x | z) (tests/test_triangle.py checks
this identity and its gradients against closed-form KLs of three joint Gaussians).  One iteration follows Algorithm 1: draw z and
x~ = G(z) (lines 2-3), take the data batch x and z~ ~ q(z | x) by reparameterisation (lines
4-5), then

- alpha step (line 6), ascent on D:  L_E = mean E(x) - mean E(x~)      (x~ detached);
- phi step (line 7):   L_I = w_R R + w_KL KL + w_NLL NLL(z | q(. | x~))  (x~ detached);
- theta step (line 8): L_G = w_R R + mean E(G(z)) + w_NLL NLL(z | q(. | G(z))), through the
  (already updated) EBM and inference model;

each step repeated `ebm_steps` / `encoder_steps` / `generator_steps` times ("optional:
multiple-step update", line 9; Section 4.3 uses several theta steps) on the same samples.
R = sum_i ||x_i - G(z~_i)||^2 / batch.

Settings: the paper gives (13) and Algorithm 1; the public CIFAR code fixes the scalings
(recipes.md, "triangle"), and those are the defaults here, each an option:

- `recon_weight = 1` on the summed squared error (a Gaussian p(x|z) with 2 sigma^2 = 1);
  `recon_weight = "sigma"` uses 1 / (2 sigma^2) with the generator's sigma (eq. 13 for any sigma);
- `kl_reduction = "mean"`: the code averages the KL over batch *and* latent dimensions (1/d of
  the per-example KL of (13)); `"batch_mean"` is the per-example KL of (13);
- `nll_weight = 0.1` and `nll_reduction = "batch_mean"` (code: 0.1 x the per-example NLL summed
  over latent dimensions, averaged over the batch); (13) itself has weight 1;
- `grad_clip = 100`: total gradient norm per network before each optimiser step (code);
  the reported grad norms are the norms before clipping.
- The weights of the EBM terms are 1 (code and (13)).

Choices where the paper is silent (options):

- `posterior_sample = "shared"`: Algorithm 1 draws z~ once (line 5) and both the phi and the theta
  step are "given (z~, x)", so the theta step reuses the z~ of the phi step (detached, drawn
  before phi was updated).  The public code draws a fresh z~ from the updated inference model
  for its G step: `"redraw"`.
- `sample_noise = false`: x~ = G(z) as in the public code; Algorithm 1 line 3 reads x~ ~
  p_theta(x | z), i.e. G(z) + sigma eps (`sample_noise = true`; with the code's sigma = sqrt(1/2)
  that noise is as large as the image range, which is presumably why the code leaves it out).
- `n_latent = 0`: M~ (prior samples per iteration) = the batch size M (code).
- Learning rates, Adam betas, weight decay and the 0.998/epoch decay belong to the recipe's
  optimiser tables.

Learning from incomplete data (Section 4.4, Table 3; `occlusion.py`): with `occlusion` set
(a coopcore.masks name: "P.5", "P.7", "MB10", "B20", "B30", ...) every training example gets a
fixed mask drawn from (`occlusion_seed`, its index); the models see the observed pixels with
the current imputations in the holes (zero-filled at first), and after each iteration the
holes of the batch's examples are replaced by reconstructions.  Choices:

- `impute_with = "mean"`: the reconstruction G(mu(x)) of the updated models (the deterministic
  reconstruction the paper's Table 2 and the public code use for "reconstructed images");
  `"sample"` uses G(z~) with a fresh z~ ~ q(z | x).
- `recon_pixels = "all"`: every loss sees the completed image, reconstruction term included
  (the paper: "our model utilizes the generated samples which become gradually recovered";
  VAEs "only consider the un-occluded parts"); `"observed"` restricts the reconstruction term
  to the observed pixels.
- `fill_value = 0` (the paper's zero-fill), `pixel_range = 2` (images in [-1, 1]) for the
  reported `recovery_error` (Table 3's metric on the batch, against the ground truth the batch
  carries; the ground truth of the holes is used for nothing else).

All randomness (z, eps, masks) comes from the `generator` argument or from `occlusion_seed`.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional, Union

import attrs
import torch
from torch import Tensor

from coopcore import Batch, Parts, StepResult, non_negative, positive
from coopcore.masks import mask_name_validator

from .losses import Reduction, gaussian_kl_standard, gaussian_nll, reconstruction, reduce_latent
from .occlusion import (
    OcclusionState, load_occlusion_state, occlusion_for, recovery_error, recovery_error_over, require_occlusion,
)

__all__ = [
    "Triangle", "TriangleOptions", "gaussian_kl_standard", "gaussian_nll", "reconstruction", "reduce_latent",
]


def _clip(module: torch.nn.Module, max_norm: Optional[float]) -> Tensor:
    """Clip the module's gradients to `max_norm` (if given); return the norm before clipping."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return torch.zeros((), device=next(module.parameters()).device)
    if max_norm is None:
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in params]))
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _recon_weight(instance: Any, attribute: attrs.Attribute, value: Union[float, str]) -> None:
    if isinstance(value, str):
        if value != "sigma":
            raise ValueError(f"'{attribute.name}' must be a number >= 0 or \"sigma\", got {value!r}")
    elif not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 or \"sigma\", got {value!r}")


@attrs.frozen(kw_only=True)
class TriangleOptions:
    """Divergence triangle (Han et al., Algorithm 1); defaults = the public code's scalings."""

    # Number of prior samples z per iteration (M~ of Algorithm 1); 0 = the batch size.
    n_latent: int = attrs.field(default=0, validator=non_negative)
    # Weight of the reconstruction sum ||x - G(z~)||^2 / batch; "sigma" = 1 / (2 sigma_G^2).
    recon_weight: Union[float, Literal["sigma"]] = attrs.field(default=1.0, validator=_recon_weight)
    # Weight of KL(q(z|x) || N(0, I)) in the phi step.
    kl_weight: float = attrs.field(default=1.0, validator=non_negative)
    # Weight of the latent NLL -log q(z | G(z)) in the phi and theta steps (code: 0.1; (13): 1).
    nll_weight: float = attrs.field(default=0.1, validator=non_negative)
    # "mean": over batch x latent dims; "batch_mean": sum over dims, mean over batch.
    kl_reduction: Reduction = "mean"
    nll_reduction: Reduction = "batch_mean"
    # Total gradient-norm clip per network before each optimiser step (code: 100); "none" = off.
    grad_clip: Optional[float] = 100.0
    # Updates per iteration of each network (Algorithm 1, line 9).
    ebm_steps: int = attrs.field(default=1, validator=positive)
    encoder_steps: int = attrs.field(default=1, validator=positive)
    generator_steps: int = attrs.field(default=1, validator=positive)
    # x~ = G(z) (code) or G(z) + sigma eps, a draw from p_theta(x | z) (Algorithm 1 line 3 literally).
    sample_noise: bool = False
    # z~ of the theta step: "shared" with the phi step (Algorithm 1) or "redraw" (code).
    posterior_sample: Literal["shared", "redraw"] = "shared"
    # Learning from incomplete data (Section 4.4): a coopcore.masks name, or "none".
    occlusion: Optional[str] = attrs.field(default=None, validator=mask_name_validator)
    # Seed of the per-example masks (example i's mask depends only on this and i).
    occlusion_seed: int = attrs.field(default=0, validator=non_negative)
    # Initial value of the missing pixels (paper: zero-fill).
    fill_value: float = 0.0
    # Reconstruction that replaces the missing pixels: G(mu(x)) or G(z~).
    impute_with: Literal["mean", "sample"] = "mean"
    # Pixels of the reconstruction term: the completed image or the observed pixels only.
    recon_pixels: Literal["all", "observed"] = "all"
    # Range of pixel values for the recovery error (2 for images in [-1, 1]).
    pixel_range: float = attrs.field(default=2.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"'grad_clip' must be > 0 or \"none\", got {self.grad_clip}")
        if self.recon_pixels == "observed" and self.occlusion is None:
            raise ValueError("'recon_pixels' = \"observed\" needs an 'occlusion'")


_TINY_NETS = {
    "descriptor": {"name": "triangle.ebm", "options": {
        "in_channels": 1, "input_size": 8, "channels": [4, 8], "sizes": [4, 2], "kernels": [4, 4],
        "strides": [2, 2], "head_kernel": 2}},
    "generator": {"name": "triangle.generator", "options": {
        "latent_dim": 4, "out_channels": 1, "channels": [8, 4], "sizes": [2, 4, 8], "kernels": [2, 4, 4],
        "strides": [1, 2, 2]}},
    "encoder": {"name": "triangle.encoder", "options": {
        "in_channels": 1, "input_size": 8, "channels": [4, 8], "sizes": [4, 2], "kernels": [4, 4],
        "strides": [2, 2], "head_kernel": 2, "latent_dim": 4}},
}


class Triangle:
    """Divergence triangle: joint training of an EBM, a generator and an inference model without MCMC."""

    required_models = ("descriptor", "generator", "encoder")
    required_samplers = ()
    # Tiny configuration for the registry-wide contract test; with an occlusion, so the
    # per-example state (masks, imputations) goes through the checkpoint round trip.
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": _TINY_NETS,
        "optimizers": {role: {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999]} for role in _TINY_NETS},
        "options": {"occlusion": "B4", "generator_steps": 2},
    }

    def __init__(self, options: TriangleOptions, parts: Parts) -> None:
        self.options = options
        self.ebm = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        self.encoder = parts.models["encoder"]
        self.opt_e = parts.optimizers["descriptor"]
        self.opt_g = parts.optimizers["generator"]
        self.opt_i = parts.optimizers["encoder"]
        self.occlusion: Optional[OcclusionState] = None
        if options.occlusion is not None:
            self.occlusion = occlusion_for(options, parts.n_train, parts.data_shape, parts.device)

    # -- pieces -------------------------------------------------------------------------
    @property
    def recon_weight(self) -> float:
        w = self.options.recon_weight
        return 1.0 / (2.0 * self.generator.sigma**2) if w == "sigma" else float(w)

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

    def recon_term(self, x: Tensor, z_post: Tensor, observed: Optional[Tensor] = None) -> Tensor:
        """sum ||x - G(z~)||^2 / batch (unweighted), over `observed` pixels if given."""
        return reconstruction(x, self.generator(z_post.view(z_post.shape[0], *self.generator.latent_shape)), observed)

    def ebm_loss(self, x: Tensor, x_gen: Tensor) -> dict[str, Tensor]:
        """alpha-step loss (ascent on D): mean E(x) - mean E(x~)."""
        e_obs, e_syn = self.ebm.energy(x), self.ebm.energy(x_gen)
        return {"loss": e_obs.mean() - e_syn.mean(), "energy_obs": e_obs, "energy_syn": e_syn}

    def encoder_loss(self, x: Tensor, z: Tensor, x_gen: Tensor, eps: Tensor,
                     observed: Optional[Tensor] = None) -> dict[str, Tensor]:
        """phi-step terms: reconstruction, KL and latent NLL (x_gen is used as given)."""
        z_post, mu, logvar = self.posterior_sample(x, eps)
        recon = self.recon_term(x, z_post, observed)
        kl = self.kl_term(mu, logvar)
        nll = self.latent_nll_term(z, x_gen)
        loss = self.recon_weight * recon + self.options.kl_weight * kl + self.options.nll_weight * nll
        return {"loss": loss, "recon": recon, "kl": kl, "latent_nll": nll, "z_post": z_post}

    def generate(self, z: Tensor, noise: Optional[Tensor] = None) -> Tensor:
        """x~ = G(z), plus sigma * noise when `noise` is given (a draw from p_theta(x | z))."""
        x = self.generator(z)
        return x if noise is None else x + self.generator.sigma * noise

    def generator_loss(self, x: Tensor, z: Tensor, z_post: Tensor, noise: Optional[Tensor] = None,
                       observed: Optional[Tensor] = None) -> dict[str, Tensor]:
        """theta-step terms: reconstruction from z~, energy of x~ = G(z) (+ sigma noise), latent
        NLL of z under q(. | x~)."""
        recon = self.recon_term(x, z_post, observed)
        x_fake = self.generate(z, noise)
        e_fake = self.ebm.energy(x_fake).mean()
        nll = self.latent_nll_term(z, x_fake)
        loss = self.recon_weight * recon + e_fake + self.options.nll_weight * nll
        return {"loss": loss, "recon": recon, "energy_gen": e_fake, "latent_nll": nll}

    def _eps(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        return torch.randn((n, *self.encoder.latent_shape), generator=generator, device=device)

    # -- Objective ----------------------------------------------------------------------
    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        o = self.options
        occ = self.occlusion
        x = batch.x if occ is None else occ.compose(batch.x, batch.index)
        observed = occ.masks[batch.index] if (occ is not None and o.recon_pixels == "observed") else None
        n = o.n_latent or x.shape[0]
        z = self.generator.sample_latent(n, generator)  # line 2
        eps = self._eps(x.shape[0], generator, x.device)  # line 5's noise
        noise = None
        if o.sample_noise:
            noise = torch.randn((n, *self.generator.output_shape), generator=generator, device=x.device)
        with torch.no_grad():
            x_gen = self.generate(z, noise)  # line 3

        # alpha step (line 6): lower the energy of data, raise it on generated samples.
        for _ in range(o.ebm_steps):
            e_terms = self.ebm_loss(x, x_gen)
            self.opt_e.zero_grad(set_to_none=True)
            e_terms["loss"].backward()
            grad_e = _clip(self.ebm, o.grad_clip)
            self.opt_e.step()

        # phi step (line 7): VAE terms on data + sleep phase on generated samples.
        for _ in range(o.encoder_steps):
            i_terms = self.encoder_loss(x, z, x_gen, eps, observed)
            self.opt_i.zero_grad(set_to_none=True)
            i_terms["loss"].backward()
            grad_i = _clip(self.encoder, o.grad_clip)
            self.opt_i.step()

        # theta step (line 8), optionally repeated (line 9).
        if o.posterior_sample == "shared":
            z_post = i_terms["z_post"].detach()
        else:
            with torch.no_grad():
                z_post = self.posterior_sample(x, self._eps(x.shape[0], generator, x.device))[0]
        for _ in range(o.generator_steps):
            g_terms = self.generator_loss(x, z, z_post, noise, observed)
            self.opt_g.zero_grad(set_to_none=True)
            g_terms["loss"].backward()
            grad_g = _clip(self.generator, o.grad_clip)
            self.opt_g.step()
        # the backward passes left gradients on the networks that were not stepped with them
        for m in (self.ebm, self.encoder, self.generator):
            m.zero_grad(set_to_none=True)

        e_obs, e_syn = e_terms["energy_obs"].detach(), e_terms["energy_syn"].detach()
        scalars = {
            "loss_ebm": e_terms["loss"].detach(),
            "loss_encoder": i_terms["loss"].detach(),
            "loss_generator": g_terms["loss"].detach(),
            "energy_obs": e_obs.mean(),
            "energy_syn": e_syn.mean(),
            "energy_gen": g_terms["energy_gen"].detach(),
            "recon": i_terms["recon"].detach(),
            "recon_mse": i_terms["recon"].detach() / x[0].numel(),
            "kl": i_terms["kl"].detach(),
            "latent_nll": i_terms["latent_nll"].detach(),
            "grad_norm_ebm": grad_e.detach(),
            "grad_norm_encoder": grad_i.detach(),
            "grad_norm_generator": grad_g.detach(),
        }
        if occ is not None:
            occ.update(batch.index, self.impute(x, generator))
            recovered = occ.compose(batch.x, batch.index)
            scalars["recovery_error"] = recovery_error(batch.x, recovered, occ.masks[batch.index],
                                                       o.pixel_range).to(torch.float32)
        return StepResult(scalars=scalars, histograms={"energy_obs": e_obs, "energy_syn": e_syn})

    def impute(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The reconstruction that fills the holes: G(mu(x)) or G(z~) (`impute_with`)."""
        with torch.no_grad():
            if self.options.impute_with == "mean":
                z_rec = self.encoder(x)[0]
            else:
                z_rec = self.posterior_sample(x, self._eps(x.shape[0], generator, x.device))[0]
            return self.generator(z_rec.view(x.shape[0], *self.generator.latent_shape))

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"generator": self.generator(self.generator.sample_latent(n, generator))}

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(mu(x)), the reconstruction used for the paper's test MSE (Table 2)."""
        with torch.no_grad():
            mu, _ = self.encoder(x)
            return self.generator(mu.view(x.shape[0], *self.generator.latent_shape))

    # -- learning from incomplete data: evaluation ----------------------------------------
    def recovered_images(self, x: Tensor, index: Tensor) -> Tensor:
        """The recovered training images of examples `index` (ground truth `x` supplies only the
        observed pixels): observed pixels of x, current imputations in the holes."""
        occ = require_occlusion(self.occlusion)
        return occ.compose(x.to(occ.device), index.to(occ.device))

    def recovery_error_on(self, dataset: Any, batch_size: int = 500, refresh: bool = False,
                          generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Table 3's recovery error over the whole training set `dataset` (the dataset the run
        trained on; it supplies the ground truth).  With `refresh`, the holes are first filled
        by one more reconstruction from the final models (without training and without
        changing the stored imputations).  Returns (mean error, per-image errors)."""
        occ = require_occlusion(self.occlusion)
        refill = None
        if refresh:
            g = generator if generator is not None else torch.Generator(device=occ.device).manual_seed(0)

            def refill(recovered: Tensor, index: Tensor) -> Tensor:
                return self.impute(recovered, g)
        return recovery_error_over(occ, dataset, self.options.pixel_range, batch_size, refill)

    # -- state ----------------------------------------------------------------------------
    def per_example_state(self) -> dict[str, Tensor]:
        """The imputed pixels, indexed by training example: a run on several processes keeps
        them identical on every rank (coopcore's optional per-example-state hook)."""
        return {} if self.occlusion is None else {"imputed": self.occlusion.imputed}

    def state_dict(self) -> dict[str, Any]:
        """The occlusion masks and imputed pixels (empty without an occlusion)."""
        return {} if self.occlusion is None else {"occlusion": self.occlusion.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_occlusion_state(self.occlusion, state, self.options.occlusion)
