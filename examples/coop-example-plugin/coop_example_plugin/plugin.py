"""Registers an MLP descriptor and an annealed Langevin sampler.

Uses only coopcore's public API, exactly as any third-party package would.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import attrs
import torch
from torch import Tensor, nn

from coopcore import EnergyModelBase, SamplerOutput, all_positive, hookimpl, non_negative, positive


@attrs.frozen(kw_only=True)
class MLPDescriptorOptions:
    """A fully connected descriptor: f(Y) = w . h(Y) with an MLP h."""

    input_shape: tuple[int, ...] = attrs.field(default=(1, 28, 28), validator=all_positive)
    hidden: tuple[int, ...] = attrs.field(default=(256, 256), validator=all_positive)
    activation: Literal["swish", "leaky_relu"] = "swish"
    reference_std: Optional[float] = 0.3


class MLPDescriptor(EnergyModelBase):
    """An MLP energy model over flattened images."""

    def __init__(self, options: MLPDescriptorOptions = MLPDescriptorOptions()) -> None:
        super().__init__(options.input_shape, options.reference_std)
        layers: list[nn.Module] = []
        width = math.prod(options.input_shape)
        for h in options.hidden:
            layers += [nn.Linear(width, h), nn.SiLU() if options.activation == "swish" else nn.LeakyReLU(0.2)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def score(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)


@attrs.frozen(kw_only=True)
class AnnealedLangevinOptions:
    """Langevin dynamics whose step size decays geometrically over the run."""

    n_steps: int = attrs.field(default=10, validator=non_negative)
    step_size: float = attrs.field(default=0.05, validator=positive)
    final_step_size: float = attrs.field(default=0.005, validator=positive)
    noise: bool = True


class AnnealedLangevin:
    """x <- x + (d_t^2 / 2) grad log p(x) + d_t U, with d_t from step_size to final_step_size."""

    def __init__(self, options: AnnealedLangevinOptions = AnnealedLangevinOptions()) -> None:
        self.options = options
        self.n_steps = options.n_steps

    def step_sizes(self) -> list[float]:
        o = self.options
        if o.n_steps <= 1:
            return [o.step_size] * o.n_steps
        ratio = (o.final_step_size / o.step_size) ** (1.0 / (o.n_steps - 1))
        return [o.step_size * ratio**t for t in range(o.n_steps)]

    def run(self, log_density, init: Tensor, generator: torch.Generator, mask: Optional[Tensor] = None) -> SamplerOutput:
        x = init.detach().clone()
        m = None if mask is None else mask.to(dtype=x.dtype, device=x.device)
        energies, norms = [], []
        for delta in self.step_sizes():
            with torch.enable_grad():
                xg = x.requires_grad_(True)
                lp = log_density(xg)
                (grad,) = torch.autograd.grad(lp.sum(), xg)
            energies.append(-lp.detach().mean())
            norms.append(grad.flatten(1).norm(dim=1).mean())
            update = 0.5 * delta**2 * grad
            if self.options.noise:
                update = update + delta * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if m is not None:
                update = update * m
            x = (x.detach() + update).detach()
        empty = torch.zeros(0, device=x.device)
        return SamplerOutput(
            samples=x,
            energies=torch.stack(energies) if energies else empty,
            grad_norms=torch.stack(norms) if norms else empty,
        )


@hookimpl
def coop_register_energy_models(registry) -> None:
    registry.add("example.mlp_descriptor", MLPDescriptor, MLPDescriptorOptions)


@hookimpl
def coop_register_samplers(registry) -> None:
    registry.add("example.langevin_annealed", AnnealedLangevin, AnnealedLangevinOptions)
