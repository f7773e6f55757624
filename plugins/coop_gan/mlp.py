"""Tiny MLP generator and discriminator for 2-D toy data (CoopInit Figure 1).

recipes.md records the CPU measurement of Figure 1 with MLPs of 3 hidden layers of 128 units
and ReLU for both networks; the paper does not describe its toy networks.  The discriminator's
output is a logit, used as the descriptor's score D(x) (flat reference: reference_std None, so
p(x) = exp(D(x)) / Z exactly as CoopInit eq. 1).  The generator's output is linear (2-D points
are not bounded to [-1, 1]).
"""
from __future__ import annotations

from typing import Literal

import attrs
from torch import Tensor, nn

from coopcore import EnergyModelBase, GeneratorBase, all_positive, positive


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh, "elu": nn.ELU}[name]()


def mlp(sizes: tuple[int, ...], activation: str) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, `activation` after all but the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_act(activation))
    return nn.Sequential(*layers)


Activation = Literal["relu", "leaky_relu", "tanh", "elu"]


@attrs.frozen(kw_only=True)
class MLPGeneratorOptions:
    """MLP generator z -> x for vector data (2-D toys)."""

    # Not given by the paper; 2 keeps the toy's generator a map between planes (see docs/coopinit.md).
    latent_dim: int = attrs.field(default=2, validator=positive)
    output_dim: int = attrs.field(default=2, validator=positive)
    hidden: tuple[int, ...] = attrs.field(default=(128, 128, 128), validator=all_positive)
    activation: Activation = "relu"
    # Observation noise of the Generator protocol; CoopInit's generator loss does not use it.
    sigma: float = attrs.field(default=1.0, validator=positive)


class MLPGenerator(GeneratorBase):
    """MLP generator for vector data: z [latent_dim] -> x [output_dim], linear output."""

    def __init__(self, options: MLPGeneratorOptions = MLPGeneratorOptions()) -> None:
        super().__init__((options.latent_dim,), (options.output_dim,), options.sigma)
        self.options = options
        self.net = mlp((options.latent_dim, *options.hidden, options.output_dim), options.activation)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.flatten(1))


@attrs.frozen(kw_only=True)
class MLPDiscriminatorOptions:
    """MLP discriminator/descriptor for vector data: x -> one logit (the score D(x))."""

    input_dim: int = attrs.field(default=2, validator=positive)
    hidden: tuple[int, ...] = attrs.field(default=(128, 128, 128), validator=all_positive)
    activation: Activation = "relu"


class MLPDiscriminator(EnergyModelBase):
    """MLP discriminator for vector data; score(x) = D(x), flat reference distribution."""

    def __init__(self, options: MLPDiscriminatorOptions = MLPDiscriminatorOptions()) -> None:
        super().__init__((options.input_dim,), None)
        self.options = options
        self.net = mlp((options.input_dim, *options.hidden, 1), options.activation)

    def score(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).squeeze(1)
