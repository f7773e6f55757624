"""The `example` plugin: an MLP descriptor and an annealed Langevin sampler.

It imports nothing from coopnets but `coopcore`'s public API, exactly as any third-party
package would, and registers through two hooks:

- ``coop_register_energy_models``: `example.mlp_descriptor` (`MLPDescriptor`);
- ``coop_register_samplers``: `example.langevin_annealed` (`AnnealedLangevin`).

Each component pairs a factory (here the class itself, called as ``factory(options)``) with a
frozen attrs options class; recipes' ``options`` tables are validated against it by coopcore.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import attrs
import torch
from torch import Tensor, nn

from coopcore import (
    EnergyModelBase,
    LogDensity,
    SamplerOutput,
    all_positive,
    hookimpl,
    non_negative,
    positive,
)


# ---------------------------------------------------------------------------------------
# energy model
@attrs.frozen(kw_only=True)
class MLPDescriptorOptions:
    """An MLP descriptor: f(Y) = w . h(Y) + b with h a fully connected net on the flattened image."""

    # Shape of one example (channels, height, width).
    input_shape: tuple[int, ...] = attrs.field(default=(1, 28, 28), validator=all_positive)
    # Widths of the hidden layers.
    hidden: tuple[int, ...] = attrs.field(default=(256, 256), validator=all_positive)
    activation: Literal["swish", "leaky_relu", "relu"] = "swish"
    # s of the Gaussian reference N(0, s^2 I) (TPAMI eq. 3); "none" for a flat reference.
    reference_std: Optional[float] = attrs.field(default=0.3)

    @reference_std.validator
    def _check_reference_std(self, attribute: attrs.Attribute, value: Optional[float]) -> None:
        if value is not None:
            positive(self, attribute, value)


_ACTIVATIONS = {"swish": nn.SiLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU}


class MLPDescriptor(EnergyModelBase):
    """MLP descriptor over flattened images (one score per example)."""

    def __init__(self, options: MLPDescriptorOptions = MLPDescriptorOptions()) -> None:
        super().__init__(options.input_shape, options.reference_std)
        self.options = options
        layers: list[nn.Module] = []
        width = math.prod(options.input_shape)
        for h in options.hidden:
            layers += [nn.Linear(width, h), _ACTIVATIONS[options.activation]()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def score(self, x: Tensor) -> Tensor:
        """f(x): [B, *input_shape] -> [B]."""
        return self.net(x.flatten(1)).squeeze(1)


# ---------------------------------------------------------------------------------------
# sampler
@attrs.frozen(kw_only=True)
class AnnealedLangevinOptions:
    """Langevin dynamics whose step size decays geometrically from `step_size` to `final_step_size`."""

    n_steps: int = attrs.field(default=10, validator=non_negative)
    # delta at the first step.
    step_size: float = attrs.field(default=0.05, validator=positive)
    # delta at the last step (<= step_size); equal to step_size gives plain Langevin.
    final_step_size: float = attrs.field(default=0.005, validator=positive)
    # False: no injected noise (annealed gradient ascent on log p).
    noise: bool = True

    def __attrs_post_init__(self) -> None:
        if self.final_step_size > self.step_size:
            raise ValueError(
                f"'final_step_size' must not exceed step_size {self.step_size} (the step decays), "
                f"got {self.final_step_size}"
            )


class AnnealedLangevin:
    """x <- x + (d_t^2 / 2) grad log p(x) + d_t U, U ~ N(0, I), d_t decaying geometrically.

    d_t = step_size * r^t with r = (final_step_size / step_size)^(1 / (n_steps - 1)), so the
    first step uses `step_size` and the last `final_step_size`.
    """

    def __init__(self, options: AnnealedLangevinOptions = AnnealedLangevinOptions()) -> None:
        self.options = options
        self.n_steps = options.n_steps

    def step_sizes(self) -> list[float]:
        """The schedule d_0 .. d_{n_steps-1} (plain Python floats: no tensors, no host syncs)."""
        o = self.options
        if o.n_steps <= 1:
            return [o.step_size] * o.n_steps
        ratio = (o.final_step_size / o.step_size) ** (1.0 / (o.n_steps - 1))
        return [o.step_size * ratio**t for t in range(o.n_steps)]

    def run(
        self,
        log_density: LogDensity,
        init: Tensor,
        generator: torch.Generator,
        mask: Optional[Tensor] = None,
    ) -> SamplerOutput:
        x = init.detach().clone()
        # 1 = may change, 0 = keep; `torch.where` keeps masked-out entries bit-identical even if
        # the gradient there is not finite.
        keep = None if mask is None else mask.to(device=x.device) == 0
        energies, norms = [], []
        for delta in self.step_sizes():
            # Differentiate with respect to the input only: no parameter gradients accumulate.
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                lp = log_density(xg)
                (grad,) = torch.autograd.grad(lp.sum(), xg)
            # Diagnostics stay on the device (no .item()); the trainer reads them once.
            energies.append(-lp.detach().mean())
            norms.append(grad.flatten(1).norm(dim=1).mean())
            proposal = x + (0.5 * delta**2) * grad
            if self.options.noise:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                proposal = proposal + delta * noise
            x = proposal if keep is None else torch.where(keep, x, proposal)
        empty = torch.zeros(0, device=x.device)
        return SamplerOutput(
            samples=x.detach(),
            energies=torch.stack(energies) if energies else empty,
            grad_norms=torch.stack(norms) if norms else empty,
        )


# ---------------------------------------------------------------------------------------
# hooks
@hookimpl
def coop_register_energy_models(registry) -> None:
    registry.add(
        "example.mlp_descriptor", MLPDescriptor, MLPDescriptorOptions,
        "example plugin: MLP descriptor over flattened images",
    )


@hookimpl
def coop_register_samplers(registry) -> None:
    registry.add(
        "example.langevin_annealed", AnnealedLangevin, AnnealedLangevinOptions,
        "example plugin: Langevin dynamics with a geometrically decaying step size",
    )
