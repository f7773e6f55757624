"""CoopInit (Zhao, Xie, Li, AAAI 2023): Algorithm 1 (cooperative learning, objective
`coopinit.coop`) and Algorithm 2 (CoopInit schedule, objective `coopinit`).

Algorithm 1, one iteration on a batch x of n observed examples:

- G1: z^ ~ N(0, I), x^ = G(z^);
- D1: x~ = x^, then T times  x~ <- x~ + eta grad_x D(x~) + eps  (eq. 4), the Langevin dynamics
  of the descriptor p(x) = exp(D(x)) / Z (eq. 1);
- D2: one descriptor step on  mean D(x~) - mean D(x)  (the negative of eq. 3's ascent direction);
- G2: one generator step on  (1/n) sum_i ||x~_i - G(z^_i)||^2  (the same z^).

Algorithm 2: N <- 0; while N <= N_coop: Algorithm 1, N <- N + n; then adversarial updates (the
`gan` objective's engine: NS / hinge / WGAN-GP, optional lazy R1) until the run ends.  The
discriminator of the second stage is the descriptor of the first: the same network object,
trained on.

Choices where the paper is silent (each an option):

- Langevin noise.  Eq. 4 prints eps ~ N(0, sqrt(2 eta) I); `noise_scale` = 1 (the default) reads
  sqrt(2 eta) as the standard deviation (the Langevin discretisation whose stationary law is
  exp(D) as eta -> 0) and `noise_scale` multiplies it.  With the recommended eta = 1 that is a
  per-pixel std of 1.41 at every step on images in [-1, 1], and measured on the digits and on a
  CIFAR-10 stand-in it makes the descriptor's scores run away (docs/coopinit.md), and Table 12's
  eta = 5 (std 3.16 per step) is hard to reconcile with it.  The default transcribes the print; the
  Table-1 recipe states its reading, noise_scale = 0: T noise-free gradient steps of size eta,
  the short-run revision several EBM codes use in practice.
- Chains per iteration: as many as the batch (n in Algorithm 1); no clipping of x~.
- Optimisers: one per network for the whole run.  At the switch to the adversarial stage
  the Adam state is kept by default (Algorithm 2 "seamlessly transits"; the moments forget the
  cooperative gradients within a few hundred steps at beta2 = 0.99);
  `reset_optimizers = true` clears it instead.
- The count: images consumed = batch size per iteration, checkpointed with the objective; the
  run's length (`run.iterations` x batch) plays N_coop + N_adv.  `n_coop = 0` means no
  cooperative stage (Algorithm 2's "<=" would otherwise run one cooperative iteration).
- EMA of the generator: updated after every generator step in both stages.
- The revision sampler: eq. 4 is built in (options eta, langevin_steps, noise_scale); a sampler
  configured in the recipe's `revision` role replaces it, run on log p = D(x).  The registered
  `langevin` sampler with step_size = sqrt(2 eta) performs exactly eq. 4 (its drift is
  step_size^2 / 2 = eta, its noise std step_size = sqrt(2 eta), times its noise_scale).
- Class conditioning (the "+Cond" of Table 8; models with `n_classes` > 0, coopcore.conditioning;
  the paper gives no conditional form of Algorithm 1).  Each synthesised example gets a label
  y^ (`fake_labels`: "uniform" draws, right after z^, or "real" = the batch's labels), x^ =
  G(z^, y^); the Langevin revision runs on log p(x | y^) = D(x, y^) with the label fixed; D2 is
  mean D(x~, y^) - mean D(x, y) on the real labels y; G2 regresses G(z^, y^) on x~.  In the
  adversarial stage the `gan` objective's conditioning applies.  `samples(n, generator,
  labels=None)` gives classes i % n_classes unless `labels` are given; "revised" revises with
  the same labels.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor, nn

from coopcore import Batch, Parts, Sampler, StepResult, contrastive_update, langevin_dynamics, non_negative, positive

from .objective import (
    TINY_CONDITIONAL_EXAMPLE,
    TINY_IMAGE_EXAMPLE,
    Adversarial,
    EmaOptions,
    EmaTracker,
    GanOptions,
    Labels,
    fake_labels_field,
    frozen_parameters,
)


def langevin_revision(score: Callable[[Tensor], Tensor], init: Tensor, eta: float, n_steps: int,
                      noise_std: float, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """CoopInit eq. 4, `n_steps` times: x <- x + eta grad_x D(x) + noise_std * N(0, I).

    A configuration of `coopcore.langevin_dynamics` (drift eta, noise std `noise_std`); gradients
    are taken w.r.t. x only.  Returns (samples, mean score per step [T], mean gradient norm per
    step [T]); the diagnostics stay on the device.
    """
    out = langevin_dynamics(score, init, generator, n_steps=n_steps, drift=eta, noise_std=noise_std)
    return out.samples, -out.energies, out.grad_norms


def _eta() -> Any:
    return attrs.field(default=1.0, validator=positive)


def _steps() -> Any:
    return attrs.field(default=10, validator=non_negative)


def _noise_scale() -> Any:
    return attrs.field(default=1.0, validator=non_negative)


@attrs.frozen(kw_only=True)
class CoopOptions(EmaOptions):
    """CoopInit Algorithm 1 (cooperative learning of descriptor and generator)."""

    # Langevin step size eta of eq. 4 (paper default 1.0; Table 12: 0.5, 1, 5).
    eta: float = _eta()
    # Number of Langevin steps T (paper default 10; Table 12: 5, 10, 15).
    langevin_steps: int = _steps()
    # Multiplies the Langevin noise std sqrt(2 eta) (1 = as printed; 0 = no noise).
    noise_scale: float = _noise_scale()
    # Conditional models only: labels of synthesised examples, "uniform" over the classes or
    # "real" (the real batch's labels).
    fake_labels: Literal["uniform", "real"] = fake_labels_field()


class CoopStage:
    """Algorithm 1 on a descriptor/generator pair (used by `coopinit.coop` and `coopinit`)."""

    def __init__(self, eta: float, langevin_steps: int, noise_scale: float, descriptor: nn.Module,
                 generator: nn.Module, opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer,
                 sampler: Optional[Sampler] = None, fake_labels: str = "uniform") -> None:
        self.eta, self.langevin_steps = eta, langevin_steps
        # A sampler configured in the `revision` role replaces eq. 4 (then eta, langevin_steps
        # and noise_scale are unused); e.g. `langevin` with step_size sqrt(2 eta) is eq. 4.
        self.sampler = sampler
        self.noise_std = noise_scale * (2.0 * eta) ** 0.5
        self.descriptor, self.generator = descriptor, generator
        self.opt_d, self.opt_g = opt_d, opt_g
        self.labels = Labels(descriptor, generator, fake_labels)

    def revise(self, x_init: Tensor, generator: torch.Generator,
               y: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """Step D1: T Langevin steps of the descriptor from x_init (parameters get no gradients),
        on log p(x | y) = D(x, y) with the labels fixed when the descriptor is conditional."""
        score = self.descriptor.score
        if self.labels.d and y is not None:
            score = lambda x: self.descriptor.score(x, y)  # noqa: E731 - the label is fixed for the chain
        with frozen_parameters(self.descriptor):
            if self.sampler is not None:
                out = self.sampler.run(score, x_init, generator)
                # The sampler reports energies (-score, flat reference); eq. 4's diagnostics are scores.
                return out.samples.detach(), -out.energies, out.grad_norms
            return langevin_revision(score, x_init, self.eta, self.langevin_steps, self.noise_std, generator)

    def _conditional_update(self, x_obs: Tensor, y_obs: Optional[Tensor], x_syn: Tensor,
                            y_syn: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """D2 with labels: `contrastive_update`'s step (two forward passes, syn detached, float32
        means) on D(x_obs, y_obs) and D(x_syn, y_syn); the core kernel scores without labels."""
        f_obs = self.labels.score(self.descriptor, x_obs, y_obs).float()
        f_syn = self.labels.score(self.descriptor, x_syn.detach(), y_syn).float()
        loss = f_syn.mean() - f_obs.mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.detach(), f_obs.detach(), f_syn.detach()

    def step(self, x_obs: Tensor, generator: torch.Generator, y_obs: Optional[Tensor] = None) -> StepResult:
        n = x_obs.shape[0]
        self.labels.check_batch(y_obs)
        with torch.no_grad():  # G1
            z = self.generator.sample_latent(n, generator)
            y_syn = self.labels.fake(n, generator, x_obs.device, y_obs)
            x_init = self.labels.generate(self.generator, z, y_syn)
        x_syn, scores, norms = self.revise(x_init, generator, y_syn)  # D1
        if self.labels.classes:  # D2
            loss_d, d_real, d_syn = self._conditional_update(x_obs, y_obs, x_syn, y_syn)
        else:
            loss_d, d_real, d_syn = contrastive_update(self.descriptor, self.opt_d, x_obs, x_syn)
        recon = self.labels.generate(self.generator, z, y_syn)  # G2
        loss_g = (x_syn - recon).flatten(1).pow(2).sum(1).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        scalars = {
            "loss_d": loss_d,
            "loss_g": loss_g.detach(),
            "d_real": d_real.mean(),
            "d_fake": d_syn.mean(),
            # How far the revision moved the generator's samples: ||x~ - x^||^2 per example.
            "revision_sq": (x_syn - x_init).flatten(1).pow(2).sum(1).mean(),
        }
        if scores.numel():
            scalars["d_init"] = scores[0]
            scalars["langevin_grad_norm"] = norms[-1]
        return StepResult(scalars=scalars, histograms={"d_real": d_real, "d_fake": d_syn})


TINY_2D_EXAMPLE: dict[str, Any] = {
    "data": {"name": "ring_of_gaussians", "batch_size": 4, "options": {"n": 16}},
    "models": {"descriptor": {"name": "gan.discriminator.mlp", "options": {"hidden": [8, 8]}},
               "generator": {"name": "gan.generator.mlp", "options": {"hidden": [8, 8]}}},
    "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999]},
                   "generator": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999]}},
}


class CoopInitCoop:
    """CoopInit Algorithm 1: cooperative learning, descriptor D as EBM, generator by MCMC teaching."""

    required_models = ("descriptor", "generator")
    required_samplers = ()
    contract_example = {**TINY_IMAGE_EXAMPLE,
                        "options": {"eta": 0.01, "langevin_steps": 2, "noise_scale": 0.5, "g_ema_kimg": 1.0}}
    contract_conditional_example = {**TINY_CONDITIONAL_EXAMPLE, "options": contract_example["options"]}

    def __init__(self, options: CoopOptions, parts: Parts) -> None:
        self.options = options
        self.generator = parts.models["generator"]
        self.coop = CoopStage(options.eta, options.langevin_steps, options.noise_scale, parts.models["descriptor"],
                              self.generator, parts.optimizers["descriptor"], parts.optimizers["generator"],
                              parts.samplers.get("revision"), options.fake_labels)
        self.tracker = EmaTracker(options, self.generator)

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        result = self.coop.step(batch.x, generator, batch.y)
        self.tracker.after_step(batch.x.shape[0])
        return result

    def samples(self, n: int, generator: torch.Generator, labels: Optional[Tensor] = None) -> dict[str, Tensor]:
        """"generator" (the average when on), "generator_raw", and "revised": the trained
        generator's samples after T Langevin steps (what the descriptor learns from).  A
        conditional pair samples classes i % n_classes, or `labels` when given, for all three."""
        out = self.tracker.samples(n, generator, labels)
        with torch.no_grad():
            z = self.generator.sample_latent(n, generator)
            y = self.coop.labels.for_samples(n, z.device, labels)
            x_init = self.coop.labels.generate(self.generator, z, y)
        out["revised"] = self.coop.revise(x_init, generator, y)[0]
        return out

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tracker.load_state_dict(state)


@attrs.frozen(kw_only=True)
class CoopInitOptions(GanOptions):
    """CoopInit Algorithm 2: Algorithm 1 for N_coop images, then adversarial training."""

    # N_coop: training images consumed by the cooperative stage (paper: 0.75M on CIFAR-10).
    # The stage runs while the count N <= n_coop (Algorithm 2); 0 = no cooperative stage.
    n_coop: int = attrs.field(default=750_000, validator=non_negative)
    # Langevin step size eta of eq. 4 (paper default 1.0).
    eta: float = _eta()
    # Number of Langevin steps T (paper default 10).
    langevin_steps: int = _steps()
    # Multiplies the Langevin noise std sqrt(2 eta) (1 = as printed; 0 = no noise, the Table-1
    # recipe's reading: the printed noise makes the scores run away at eta = 1).
    noise_scale: float = _noise_scale()
    # Clear both optimisers' state (Adam moments, step counts) at the switch; paper silent.
    reset_optimizers: bool = False


class CoopInit:
    """CoopInit Algorithm 2: cooperative initialisation for N_coop images, then GAN training."""

    required_models = ("descriptor", "generator")
    required_samplers = ()
    # Batch 4, n_coop 4: iterations at N = 0 and N = 4 are cooperative, from N = 8 adversarial.
    # The contract runs 2 steps (both stages' updates move both networks), then checks the resumed
    # third step, which must find N = 8 in the state and switch to the adversarial stage.
    contract_example = {**TINY_2D_EXAMPLE, "steps": 2,
                        "options": {"n_coop": 4, "eta": 0.01, "langevin_steps": 2, "noise_scale": 0.5,
                                    "g_ema_kimg": 1.0, "r1_gamma": 0.1, "r1_interval": 2}}
    # The same schedule with a conditional StyleGAN2 pair: both stages see labels.
    contract_conditional_example = {**TINY_CONDITIONAL_EXAMPLE, "steps": 2,
                                    "options": contract_example["options"]}

    def __init__(self, options: CoopInitOptions, parts: Parts) -> None:
        self.options = options
        self.descriptor = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        self.opt_d, self.opt_g = parts.optimizers["descriptor"], parts.optimizers["generator"]
        self.coop = CoopStage(options.eta, options.langevin_steps, options.noise_scale, self.descriptor,
                              self.generator, self.opt_d, self.opt_g, parts.samplers.get("revision"),
                              options.fake_labels)
        self.adversarial = Adversarial(options, self.descriptor, self.generator, self.opt_d, self.opt_g)
        self.tracker = EmaTracker(options, self.generator)
        self.switched = False  # whether the switch (and an optimiser reset, if asked) has happened

    @property
    def images(self) -> int:
        """N of Algorithm 2: training images consumed so far."""
        return self.tracker.images

    def in_coop_stage(self) -> bool:
        """Algorithm 2's first loop condition, N <= N_coop (no cooperative stage when N_coop = 0)."""
        return self.options.n_coop > 0 and self.images <= self.options.n_coop

    def _switch(self) -> None:
        self.switched = True
        if self.options.reset_optimizers:
            for opt in (self.opt_d, self.opt_g):
                opt.state.clear()

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        if self.in_coop_stage():
            result = self.coop.step(batch.x, generator, batch.y)
            stage = 0.0
        else:
            if not self.switched:
                self._switch()
            result = self.adversarial.step(batch.x, generator, batch.y)
            stage = 1.0
        self.tracker.after_step(batch.x.shape[0])
        result.scalars["stage"] = torch.tensor(stage, device=batch.x.device)
        return result

    def samples(self, n: int, generator: torch.Generator, labels: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Generator samples (EMA and raw); conditional: classes i % n_classes, or `labels`."""
        return self.tracker.samples(n, generator, labels)

    def state_dict(self) -> dict[str, Any]:
        return {"d_updates": self.adversarial.d_updates, "switched": self.switched, **self.tracker.state_dict(),
                **self.adversarial.ada_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.adversarial.d_updates = int(state.get("d_updates", 0))
        self.switched = bool(state.get("switched", False))
        self.tracker.load_state_dict(state)
        self.adversarial.load_ada_state(state)
