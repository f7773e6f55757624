"""MNIST / Fashion-MNIST networks of the divergence-triangle paper (Table 6, 28x28).

Generator p_theta(x | z):      z 1x1x100 -> 3x3 convT(1024) s1 BN ReLU  (3x3)
                               -> 4x4 convT(512) s2 BN ReLU (7x7) -> 4x4 convT(256) s2 BN ReLU (14x14)
                               -> 4x4 convT(1) s2 tanh (28x28)
Inference model q_phi(z | x):  x 28x28x1 -> 4x4 conv(128) s2 LReLU (14) -> 4x4 conv(256) s2 LReLU (7)
                               -> 4x4 conv(512) s2 LReLU (3) -> conv(100) heads for mu and log-variance
Energy-based model pi_alpha:   x 28x28x1 -> 4x4 conv(128) s2 LReLU -> conv(256) -> conv(512) (3x3)
                               -> conv(1) = the energy E(x)

Choices where Table 6 is silent or inconsistent (all exposed as options):

- Padding: the 4x4 stride-2 convolutions use padding 1 (28 -> 14 -> 7 -> 3, the sizes the table
  lists); the transposed ones use padding 1, with output_padding 1 for 3 -> 7.
- The last layer: Table 6 lists a 4x4 conv from the 3x3 map to 1x1, which no symmetric padding
  achieves.  Default `head_kernel = 3` (a convolution covering the whole 3x3 map, i.e. a fully
  connected layer); `head_kernel = 4` zero-pads one row/column at the bottom/right instead.
- The inference model's "conv(100) -> mu, sigma": two parallel heads of 100 channels, one for mu
  and one for log sigma^2 (coopcore's Encoder protocol returns (mu, logvar)).
- No BN in the inference and energy models (Table 6 says "No"); BN after every generator layer but
  the last.  Generator BN always uses batch statistics (no running buffers), as the other
  generators of this project do (the trainer keeps every network in train mode).
- LeakyReLU slope 0.2 (the paper's "default leaky factor"); ReLU in the generator.
- Init (recipes.md, public code): conv/linear weights N(0, 0.02), biases 0, BN gamma N(1, 0.02),
  beta 0.
- The EBM's network output is the energy E(x) (the public code's convention); its score is
  f(x) = -E(x) with a flat reference (reference_std None), so `energy(x)` returns the output.
- Generator `sigma`: the triangle loss uses sum ||x - G(z)||^2 (no 1/(2 sigma^2) factor),
  which is a Gaussian observation model with 2 sigma^2 = 1, so sigma defaults to sqrt(1/2).
  The `triangle` objective itself does not read sigma.
"""
from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
from torch import Tensor, nn

from coopcore import EnergyModelBase, GeneratorBase, all_positive, non_negative, positive


def init_triangle(module: nn.Module, std: float) -> None:
    """Weights N(0, std), biases 0; BatchNorm gamma N(1, std), beta 0 (recipes.md, triangle)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def _down_path(in_channels: int, channels: tuple[int, ...], leak: float) -> tuple[nn.Sequential, int, int]:
    """4x4 stride-2 padding-1 convs, each followed by LeakyReLU; returns (layers, channels, size)."""
    layers: list[nn.Module] = []
    c, size = in_channels, 28
    for ch in channels:
        layers += [nn.Conv2d(c, ch, 4, 2, 1), nn.LeakyReLU(leak)]
        c, size = ch, (size + 2 - 4) // 2 + 1
    return nn.Sequential(*layers), c, size


def _head(c_in: int, c_out: int, size: int, kernel: int) -> nn.Module:
    """The last conv of Table 6 taking the size x size map to 1x1 (see the module docstring)."""
    if kernel == size:
        return nn.Conv2d(c_in, c_out, kernel)
    pad = kernel - size  # zero rows/columns added at the bottom/right
    if pad < 0:
        raise ValueError(f"head_kernel {kernel} is smaller than the {size}x{size} map")
    return nn.Sequential(nn.ZeroPad2d((0, pad, 0, pad)), nn.Conv2d(c_in, c_out, kernel))


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TriangleGeneratorOptions:
    """Divergence triangle, Table 6 generator (MNIST 28x28): z100 -> 3x3x1024 -> 7x7x512 -> 14x14x256 -> 28x28x1."""

    latent_dim: int = attrs.field(default=100, validator=positive)
    # Output channels of the three hidden transposed convs (Table 6: 1024, 512, 256).
    channels: tuple[int, int, int] = attrs.field(default=(1024, 512, 256), validator=all_positive)
    out_channels: int = attrs.field(default=1, validator=positive)
    # Weights N(0, init_std), BN gamma N(1, init_std) (paper / code: 0.02).
    init_std: float = attrs.field(default=0.02, validator=positive)
    # Observation noise of the Gaussian model; sqrt(1/2) matches the loss sum ||x - G(z)||^2.
    sigma: float = attrs.field(default=math.sqrt(0.5), validator=positive)


class TriangleGenerator(GeneratorBase):
    """Table 6 generator g_theta(z) (divergence triangle, MNIST)."""

    def __init__(self, options: TriangleGeneratorOptions = TriangleGeneratorOptions()) -> None:
        super().__init__((options.latent_dim,), (options.out_channels, 28, 28), options.sigma)
        self.options = options
        c1, c2, c3 = options.channels

        def bn(c: int) -> nn.Module:
            return nn.BatchNorm2d(c, track_running_stats=False)

        self.net = nn.Sequential(
            nn.ConvTranspose2d(options.latent_dim, c1, 3, 1, 0), bn(c1), nn.ReLU(),  # 1 -> 3
            nn.ConvTranspose2d(c1, c2, 4, 2, 1, output_padding=1), bn(c2), nn.ReLU(),  # 3 -> 7
            nn.ConvTranspose2d(c2, c3, 4, 2, 1), bn(c3), nn.ReLU(),  # 7 -> 14
            nn.ConvTranspose2d(c3, options.out_channels, 4, 2, 1), nn.Tanh(),  # 14 -> 28
        )
        init_triangle(self, options.init_std)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TriangleEncoderOptions:
    """Divergence triangle, Table 6 inference model (MNIST 28x28): conv 128-256-512 (s2), heads mu / logvar."""

    latent_dim: int = attrs.field(default=100, validator=positive)
    in_channels: int = attrs.field(default=1, validator=positive)
    channels: tuple[int, int, int] = attrs.field(default=(128, 256, 512), validator=all_positive)
    leak: float = attrs.field(default=0.2, validator=non_negative)
    # Kernel of the final 3x3 -> 1x1 layer: 3 (fully connected, default) or 4 (Table 6, padded).
    head_kernel: Literal[3, 4] = 3
    init_std: float = attrs.field(default=0.02, validator=positive)


class TriangleEncoder(nn.Module):
    """Table 6 inference model q_phi(z | x) = N(mu(x), diag(exp(logvar(x))))."""

    def __init__(self, options: TriangleEncoderOptions = TriangleEncoderOptions()) -> None:
        super().__init__()
        self.options = options
        self.input_shape = (options.in_channels, 28, 28)
        self.latent_shape = (options.latent_dim,)
        self.features, c, size = _down_path(options.in_channels, options.channels, options.leak)
        self.mu = _head(c, options.latent_dim, size, options.head_kernel)
        self.logvar = _head(c, options.latent_dim, size, options.head_kernel)
        init_triangle(self, options.init_std)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h).flatten(1), self.logvar(h).flatten(1)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TriangleEBMOptions:
    """Divergence triangle, Table 6 energy-based model (MNIST 28x28): conv 128-256-512 (s2), conv(1) = energy."""

    in_channels: int = attrs.field(default=1, validator=positive)
    channels: tuple[int, int, int] = attrs.field(default=(128, 256, 512), validator=all_positive)
    leak: float = attrs.field(default=0.2, validator=non_negative)
    head_kernel: Literal[3, 4] = 3
    init_std: float = attrs.field(default=0.02, validator=positive)


class TriangleEBM(EnergyModelBase):
    """Table 6 energy-based model pi_alpha(x) ~ exp(-E(x)); score f = -E, flat reference."""

    def __init__(self, options: TriangleEBMOptions = TriangleEBMOptions()) -> None:
        super().__init__((options.in_channels, 28, 28), None)
        self.options = options
        self.features, c, size = _down_path(options.in_channels, options.channels, options.leak)
        self.head = _head(c, 1, size, options.head_kernel)
        init_triangle(self, options.init_std)

    def network_energy(self, x: Tensor) -> Tensor:
        """The network output, E(x) in the public code, one value per example."""
        return self.head(self.features(x)).flatten(1).sum(1)

    def score(self, x: Tensor) -> Tensor:
        return -self.network_energy(x)
