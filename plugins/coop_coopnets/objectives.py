"""The learning algorithms of the CoopNets paper as `Objective`s.

- `CoopNets`: Algorithm 3 (G0 -> D1 -> G1 -> D2 -> G2), with l_q = 0 (X = X^, the left diagram
  of eq. 17, used in all the paper's experiments) or l_q > 0 (Langevin inference started at
  X^, the right diagram), and several G2 steps per iteration.
- `AlgorithmD`: Algorithm 1, the descriptor alone; chains initialised from observed data and
  kept between iterations (persistent contrastive divergence, Section 2.1), or restarted from
  the current batch each iteration (contrastive divergence).
- `AlgorithmG`: Algorithm 2, alternating back-propagation for the generator alone, with one
  persistent latent vector per training example.

Two optional sampler roles of `CoopNets` (absent = the plain algorithm):

- ``revision_late``: the D1 sampler from iteration `late_revision_from` on.  TPAMI 4.5, CelebA:
  "we disable the noise term in the Langevin revision dynamics in the second half of the
  learning algorithm": configure it as the revision sampler with ``noise = false`` and set
  `late_revision_from` to half of ``run.iterations``.
- ``evaluation``: the revision sampler of `samples()` (sample grids and every metric that draws
  "revised" samples), e.g. the 8 Langevin steps on g(X) of the CIFAR-10 evaluation in the
  authors' PyTorch port, when it differs from training's l_p.  Without it, `samples()` uses the
  sampler training uses at that point.

Losses follow the authors' code: descriptor mean f(syn) - mean f(obs) (minimised, the
negative of eq. 8's ascent direction; `coopcore.contrastive_update`); generator sum over
pixels of the batch mean of (Y~ - g(X))^2 / (2 sigma^2) (eq. 16 as a loss), or, with
`generator_loss = "mean"`, the mean over all elements as the spatial-temporal code has it
(Table 6).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import (
    Batch, Parts, StepResult, UsageError, contrastive_update, draw_from_chains, generator_log_joint, grad_norm,
    non_negative, positive,
)


def _reconstruction_loss(y: Tensor, recon: Tensor, sigma: float, reduction: str = "sum") -> Tensor:
    """Squared error over 2 sigma^2: summed over pixels and averaged over the batch ("sum", eq. 16
    as in the image code), or averaged over every element ("mean", the spatial-temporal code)."""
    if reduction == "mean":
        return (y - recon).pow(2).mean() / (2.0 * sigma**2)
    return (y - recon).pow(2).sum() / (y.shape[0] * 2.0 * sigma**2)


def _energy(descriptor, y: Tensor, f: Tensor) -> Tensor:
    """E(Y) = ||Y||^2 / (2 s^2) - f(Y) from an already computed score (eq. 4)."""
    if descriptor.reference_std is None:
        return -f
    return y.flatten(1).pow(2).sum(1) / (2.0 * descriptor.reference_std**2) - f


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class CoopNetsOptions:
    """CoopNets (TPAMI Algorithm 3)."""

    # n~, the number of parallel chains per iteration; 0 = the batch size.
    n_chains: int = attrs.field(default=0, validator=non_negative)
    # Number of G2 updates per iteration ("to allow the generator to catch up").
    generator_steps: int = attrs.field(default=1, validator=positive)
    # Paper: Y^ = g(X^) + eps, eps ~ N(0, sigma^2); the authors' code omits eps (default).
    init_noise: bool = False
    # G2 loss: "sum" = sum over pixels of the batch mean of (Y~ - g(X))^2 / (2 sigma^2) (eq. 16,
    # the image code); "mean" = the mean over all elements, / (2 sigma^2) (the spatial-temporal
    # code, Table 6, with sigma = 1).  They differ by the factor pixels-per-example.
    generator_loss: Literal["sum", "mean"] = "sum"
    # Iteration (counted from 0) from which D1 runs the "revision_late" sampler instead of
    # "revision" (TPAMI 4.5: Langevin noise off in the second half of training for CelebA); 0 = never.
    late_revision_from: int = attrs.field(default=0, validator=non_negative)


class CoopNets:
    """Cooperative training of a descriptor and a generator by MCMC teaching."""

    required_models = ("descriptor", "generator")
    required_samplers = ("revision",)
    # The tiny configuration the registry-wide contract test builds (coopcore.contract).
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": {
            "descriptor": {"name": "coopnets.descriptor", "options": {
                "input_shape": [1, 8, 8], "channels": [4], "kernels": [3], "strides": [2], "fc_outputs": 2,
                "reference_std": 0.5}},
            "generator": {"name": "coopnets.generator", "options": {
                "latent_dim": 4, "out_channels": 1, "sizes": [4, 8], "channels": [4], "kernels": [4, 4]}},
        },
        "samplers": {"revision": {"name": "langevin", "options": {"n_steps": 2, "step_size": 0.05}}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3}, "generator": {"name": "adam", "lr": 1e-3}},
        "options": {"n_chains": 4},
    }

    def __init__(self, options: CoopNetsOptions, parts: Parts) -> None:
        self.options = options
        self.descriptor = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        self.opt_d = parts.optimizers["descriptor"]
        self.opt_g = parts.optimizers["generator"]
        self.revision = parts.samplers["revision"]
        # l_q > 0 (the right diagram of eq. 17) is switched on by configuring a sampler in the
        # "inference" role; l_q is that sampler's n_steps.  Without one, X = X^ (l_q = 0).
        self.inference = parts.samplers.get("inference")
        # Optional: the D1 sampler from `late_revision_from` on, and the sampler of samples().
        self.revision_late = parts.samplers.get("revision_late")
        self.evaluation = parts.samplers.get("evaluation")
        if (options.late_revision_from > 0) != (self.revision_late is not None):
            raise UsageError(
                "objective.options.late_revision_from and [samplers.revision_late] go together: set "
                "late_revision_from > 0 (the iteration of the switch) and configure samplers.revision_late "
                "(e.g. the revision sampler with noise = false), or neither"
            )
        # Iterations taken so far: decides when the late sampler takes over; checkpointed.
        self.iteration = 0

    def current_revision(self):
        """The D1 sampler in force at this iteration (see `late_revision_from`)."""
        late = self.revision_late is not None and self.iteration >= self.options.late_revision_from
        return self.revision_late if late else self.revision

    def _log_p(self, y: Tensor) -> Tensor:
        return -self.descriptor.energy(y)

    def generate(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Step G0: X^ ~ N(0, I) and the chains' start Y^ = g(X^) (+ eps if init_noise)."""
        z, _, y_init = self._generate(n, generator)
        return z, y_init

    def _generate(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(X^, g(X^), the chains' start): the generator's own samples are g(X^); only the
        Langevin chains start from g(X^) + eps (eq. 11), so eps never reaches a 'generator' score."""
        with torch.no_grad():
            z = self.generator.sample_latent(n, generator)
            y = self.generator(z)
            y_init = y
            if self.options.init_noise:
                y_init = y + self.generator.sigma * torch.randn(y.shape, generator=generator, device=y.device)
        return z, y, y_init

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        o = self.options
        n = o.n_chains or batch.x.shape[0]
        z, y_init = self.generate(n, generator)  # G0
        revised = self.current_revision().run(self._log_p, y_init, generator)  # D1
        self.iteration += 1
        y_syn = revised.samples
        if self.inference is not None and self.inference.n_steps > 0:  # G1, right diagram of eq. 17
            log_q = generator_log_joint(self.generator, y_syn, self.generator.sigma)
            z = self.inference.run(log_q, z, generator).samples
        loss_d, f_obs, f_syn = contrastive_update(self.descriptor, self.opt_d, batch.x, y_syn)  # D2
        grad_d = grad_norm(self.descriptor)
        recon_before = None
        for _ in range(o.generator_steps):  # G2
            recon = self.generator(z)
            loss_g = _reconstruction_loss(y_syn, recon, self.generator.sigma, o.generator_loss)
            if recon_before is None:
                recon_before = (y_syn - recon.detach()).pow(2).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        scalars = {
            "loss_descriptor": loss_d,
            "loss_generator": loss_g.detach(),
            "score_obs": f_obs.mean(),
            "score_syn": f_syn.mean(),
            "energy_obs": _energy(self.descriptor, batch.x, f_obs).mean(),
            "energy_syn": _energy(self.descriptor, y_syn, f_syn).mean(),
            "recon_mse": recon_before,
            "grad_norm_descriptor": grad_d,
            "grad_norm_generator": grad_norm(self.generator),
        }
        if revised.grad_norms.numel():
            scalars["langevin_grad_norm"] = revised.grad_norms[-1]
            scalars["langevin_energy_start"] = revised.energies[0]
            scalars["langevin_energy_end"] = revised.energies[-1]
        return StepResult(scalars=scalars, histograms={"score_obs": f_obs, "score_syn": f_syn})

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        _, y_gen, y_init = self._generate(n, generator)
        sampler = self.evaluation if self.evaluation is not None else self.current_revision()
        revised = sampler.run(self._log_p, y_init, generator)
        return {"generator": y_gen, "revised": revised.samples.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iteration = int(state.get("iteration", 0))


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class AlgorithmDOptions:
    """Algorithm D (TPAMI Algorithm 1): descriptor learning by (persistent) contrastive divergence."""

    # Number of chains; 0 = the batch size.
    n_chains: int = attrs.field(default=0, validator=non_negative)
    # True: chains persist across iterations (PCD); False: restart from the batch (CD).
    persistent: bool = True


class AlgorithmD:
    """Descriptor alone: Langevin revision (D1) then density shifting (D2)."""

    required_models = ("descriptor",)
    required_samplers = ("revision",)
    # The tiny configuration the registry-wide contract test builds (coopcore.contract).
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": {"descriptor": {"name": "coopnets.descriptor", "options": {
            "input_shape": [1, 8, 8], "channels": [4], "kernels": [3], "strides": [2], "fc_outputs": 2,
            "reference_std": 0.5}}},
        "samplers": {"revision": {"name": "langevin", "options": {"n_steps": 2, "step_size": 0.05}}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3}},
        "options": {"n_chains": 4, "persistent": True},
    }

    def __init__(self, options: AlgorithmDOptions, parts: Parts) -> None:
        self.options = options
        self.descriptor = parts.models["descriptor"]
        self.opt_d = parts.optimizers["descriptor"]
        self.revision = parts.samplers["revision"]
        self.chains: Optional[Tensor] = None

    def _log_p(self, y: Tensor) -> Tensor:
        return -self.descriptor.energy(y)

    def _init_from(self, x: Tensor, n: int) -> Tensor:
        reps = -(-n // x.shape[0])
        return x.repeat(reps, *([1] * (x.dim() - 1)))[:n].clone()

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        n = self.options.n_chains or batch.x.shape[0]
        if self.chains is None or not self.options.persistent:
            self.chains = self._init_from(batch.x, n)
        start = self.chains
        out = self.revision.run(self._log_p, start, generator)  # D1
        self.chains = out.samples.detach()
        loss_d, f_obs, f_syn = contrastive_update(self.descriptor, self.opt_d, batch.x, self.chains)  # D2
        scalars = {
            "loss_descriptor": loss_d,
            "score_obs": f_obs.mean(),
            "score_syn": f_syn.mean(),
            "energy_obs": _energy(self.descriptor, batch.x, f_obs).mean(),
            "energy_syn": _energy(self.descriptor, self.chains, f_syn).mean(),
            "grad_norm_descriptor": grad_norm(self.descriptor),
        }
        if out.grad_norms.numel():
            scalars["langevin_grad_norm"] = out.grad_norms[-1]
        return StepResult(scalars=scalars, histograms={"score_obs": f_obs, "score_syn": f_syn})

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """n samples of the model as the method draws them: the current chains, then, while more
        are needed, the same chains advanced by further rounds of the training sampler (each round
        the training number of steps).  Never repeated copies: an evaluation of n > n_chains
        samples scores n distinct images.  The training chains themselves are left as they are."""
        if self.chains is None:
            raise RuntimeError("Algorithm D has no chains before its first iteration")
        return {"chains": draw_from_chains(self.chains, n, lambda y: self.revision.run(self._log_p, y, generator).samples)}

    def state_dict(self) -> dict[str, Any]:
        return {"chains": None if self.chains is None else self.chains.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        chains = state.get("chains")
        device = next(self.descriptor.parameters()).device
        self.chains = None if chains is None else chains.to(device)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class AlgorithmGOptions:
    """Algorithm G (TPAMI Algorithm 2): alternating back-propagation."""

    # Keep one latent vector per training example and start each G1 from it (as in the
    # alternating back-propagation paper); False restarts inference from N(0, I).
    persistent_latents: bool = True


class AlgorithmG:
    """Generator alone: Langevin inference of X per example (G1), then reconstruction (G2)."""

    required_models = ("generator",)
    required_samplers = ("inference",)
    # The tiny configuration the registry-wide contract test builds (coopcore.contract).
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": {"generator": {"name": "coopnets.generator", "options": {
            "latent_dim": 4, "out_channels": 1, "sizes": [4, 8], "channels": [4], "kernels": [4, 4]}}},
        "samplers": {"inference": {"name": "langevin", "options": {"n_steps": 2, "step_size": 0.1}}},
        "optimizers": {"generator": {"name": "adam", "lr": 1e-3}},
        "options": {"persistent_latents": True},
    }

    def __init__(self, options: AlgorithmGOptions, parts: Parts) -> None:
        self.options = options
        self.generator = parts.models["generator"]
        self.opt_g = parts.optimizers["generator"]
        self.inference = parts.samplers["inference"]
        self.n_train = parts.n_train
        self.latents: Optional[Tensor] = None

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        g = self.generator
        if self.latents is None:
            self.latents = g.sample_latent(self.n_train, generator)
        idx = batch.index.to(self.latents.device)
        z0 = self.latents[idx] if self.options.persistent_latents else g.sample_latent(len(idx), generator)
        out = self.inference.run(generator_log_joint(g, batch.x, g.sigma), z0, generator)  # G1
        z = out.samples.detach()
        self.latents[idx] = z
        recon = g(z)  # G2
        loss = _reconstruction_loss(batch.x, recon, g.sigma)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        scalars = {
            "loss_generator": loss.detach(),
            "recon_mse": (batch.x - recon.detach()).pow(2).mean(),
            "latent_norm": z.flatten(1).norm(dim=1).mean(),
            "grad_norm_generator": grad_norm(g),
        }
        if out.grad_norms.numel():
            scalars["langevin_grad_norm"] = out.grad_norms[-1]
        return StepResult(scalars=scalars)

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"generator": self.generator(self.generator.sample_latent(n, generator))}

    def per_example_state(self) -> dict[str, Tensor]:
        """The persistent latents, indexed by training example: a run on several processes keeps
        them identical on every rank (coopcore's optional per-example-state hook)."""
        return {} if self.latents is None else {"latents": self.latents}

    def state_dict(self) -> dict[str, Any]:
        return {"latents": None if self.latents is None else self.latents.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        lat = state.get("latents")
        device = next(self.generator.parameters()).device
        self.latents = None if lat is None else lat.to(device)
