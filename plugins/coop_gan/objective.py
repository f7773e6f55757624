"""The `gan` objective: adversarial training of a generator against the descriptor used as a
discriminator, D(x) = descriptor.score(x) (a logit per example).

One iteration = `d_steps` discriminator updates, then one generator update:

- D: minimise d_loss(D(x_real), D(G(z))) [+ WGAN-GP penalty] [+ lazy R1 on x_real];
- G: minimise g_loss(D(G(z))) with fresh latents.

This is the adversarial phase of CoopInit (Algorithm 2): after cooperative learning
(`coopnets` objective) the same descriptor/generator pair continues as a GAN, and the losses
are those of CoopInit appendix C (NS, hinge, WAS, WAS-GP with lambda = 10) plus StyleGAN2's R1.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import attrs
import torch
from torch import Tensor

from coopcore import Batch, Parts, StepResult, non_negative, positive

from .losses import d_loss, g_loss, gradient_penalty, lazy_r1_penalty


@attrs.frozen(kw_only=True)
class GanOptions:
    """GAN training with the descriptor as discriminator (NS / hinge / WGAN, optional GP and R1)."""

    # Adversarial loss: "ns" non-saturating, "hinge", "wgan" (Wasserstein; add gp_lambda = 10 for WGAN-GP).
    loss: Literal["ns", "hinge", "wgan"] = attrs.field(default="ns", validator=attrs.validators.in_(("ns", "hinge", "wgan")))
    # WGAN-GP coefficient lambda on random interpolates; 0 = off (Gulrajani et al. and CoopInit: 10).
    gp_lambda: float = attrs.field(default=0.0, validator=non_negative)
    # R1 coefficient gamma on real data; 0 = off.
    r1_gamma: float = attrs.field(default=0.0, validator=non_negative)
    # Lazy regularisation: R1 every r1_interval-th discriminator update, scaled by r1_interval
    # (StyleGAN2 uses 16); 1 = every update.
    r1_interval: int = attrs.field(default=1, validator=positive)
    # Discriminator updates per generator update (WGAN papers use 5).
    d_steps: int = attrs.field(default=1, validator=positive)


class Gan:
    """GAN training; the discriminator is the descriptor network (D(x) = descriptor.score(x))."""

    required_models = ("descriptor", "generator")
    required_samplers = ()

    def __init__(self, options: GanOptions, parts: Parts) -> None:
        self.options = options
        self.descriptor = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        self.opt_d = parts.optimizers["descriptor"]
        self.opt_g = parts.optimizers["generator"]
        # Number of discriminator updates so far: decides when lazy R1 is due; checkpointed.
        self.d_updates = 0

    def discriminate(self, x: Tensor) -> Tensor:
        """D(x): the descriptor's score, one logit per example."""
        return self.descriptor.score(x)

    def _fake(self, n: int, generator: torch.Generator) -> Tensor:
        return self.generator(self.generator.sample_latent(n, generator))

    def _d_update(self, x_real: Tensor, generator: torch.Generator) -> tuple[Tensor, ...]:
        o = self.options
        with torch.no_grad():
            x_fake = self._fake(x_real.shape[0], generator)
        d_real = self.discriminate(x_real)
        d_fake = self.discriminate(x_fake)
        loss = d_loss(o.loss, d_real, d_fake)
        zero = torch.zeros((), device=x_real.device)
        gp = r1 = zero
        if o.gp_lambda > 0:
            gp = gradient_penalty(self.discriminate, x_real, x_fake, generator, o.gp_lambda)
        if o.r1_gamma > 0:
            pen = lazy_r1_penalty(self.discriminate, x_real, self.d_updates, o.r1_gamma, o.r1_interval)
            if pen is not None:
                r1 = pen
        total = loss + gp + r1
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        self.d_updates += 1
        return loss.detach(), d_real.detach(), d_fake.detach(), gp.detach(), r1.detach()

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        x_real = batch.x
        for _ in range(self.options.d_steps):  # the same real batch for every D update
            loss_d, d_real, d_fake, gp, r1 = self._d_update(x_real, generator)
        fake = self._fake(x_real.shape[0], generator)
        loss_g = g_loss(self.options.loss, self.discriminate(fake))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        # The G backward also reached D's parameters; drop those gradients (D was not stepped).
        self.opt_d.zero_grad(set_to_none=True)
        scalars = {
            "loss_d": loss_d,
            "loss_g": loss_g.detach(),
            "d_real": d_real.mean(),
            "d_fake": d_fake.mean(),
            "gp": gp,
            "r1": r1,
        }
        return StepResult(scalars=scalars, histograms={"d_real": d_real, "d_fake": d_fake})

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        with torch.no_grad():
            return {"generator": self._fake(n, generator)}

    def state_dict(self) -> dict[str, Any]:
        return {"d_updates": self.d_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.d_updates = int(state.get("d_updates", 0))
