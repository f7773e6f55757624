"""DCGAN-style generator and discriminator (Radford et al. 2016) for square images.

Generator: z -> transposed conv to a k x k map (k = side / 2^L) -> L transposed convs 4x4
stride 2 (padding 1), each doubling the side, with batch norm (batch statistics) + ReLU on
the hidden maps and tanh on the output.  Discriminator: L convs 4x4 stride 2 (padding 1) with
LeakyReLU 0.2, then a conv over the whole remaining map to one logit, which is the descriptor's
score D(x) (flat reference, p(x) = exp(D(x)) / Z as in CoopInit eq. 1).  Weights N(0, 0.02).

Where DCGAN's discriminator has batch norm we default to none (`norm = "none"`): the same
network is CoopInit's descriptor, whose score must be a function of each example alone for the
Langevin dynamics and the energy, and batch statistics also break the per-example input
gradients of WGAN-GP and R1.  `norm = "batch"` restores DCGAN's layout (BN after every conv
but the first), `"spectral"` uses spectral normalisation (Miyato et al. 2018) on every conv.

Registered as `gan.generator.dcgan32` / `gan.discriminator.dcgan32` (z 100 -> 4x4x512 ->
8x8x256 -> 16x16x128 -> 32x32x3; 64-128-256 convs) and `...dcgan64` (one more layer each:
512-256-128-64 / 64-128-256-512), plus the configurable `gan.generator.dcgan` /
`gan.discriminator.dcgan`.
"""
from __future__ import annotations

from typing import Literal

import attrs
from torch import Tensor, nn

from coopcore import EnergyModelBase, GeneratorBase, all_positive, init_normal, positive


def _check_square(shape: tuple[int, ...], n_layers: int, field: str) -> int:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"'{field}' must be [C, S, S] (square images), got {list(shape)}")
    side = shape[1]
    if side % (2**n_layers) != 0 or side // (2**n_layers) < 1:
        raise ValueError(f"'{field}' side {side} must be divisible by 2^{n_layers} (one halving per channel entry)")
    return side // (2**n_layers)


@attrs.frozen(kw_only=True)
class DCGANGeneratorOptions:
    """DCGAN generator: z -> k x k x channels[0] -> ... -> image, one doubling per channels entry."""

    latent_dim: int = attrs.field(default=100, validator=positive)
    output_shape: tuple[int, int, int] = attrs.field(default=(3, 32, 32), validator=all_positive)
    # Channels of the hidden maps, from the first (k x k) to the last before the output.
    channels: tuple[int, ...] = attrs.field(default=(512, 256, 128), validator=all_positive)
    batch_norm: bool = True
    init_std: float = attrs.field(default=0.02, validator=positive)
    # Observation noise of the Generator protocol (CoopInit's losses do not use it).
    sigma: float = attrs.field(default=0.3, validator=positive)

    def __attrs_post_init__(self) -> None:
        if not self.channels:
            raise ValueError("'channels' must have at least one entry")
        _check_square(self.output_shape, len(self.channels), "output_shape")


class DCGANGenerator(GeneratorBase):
    """DCGAN generator (transposed convs, BN + ReLU, tanh output)."""

    def __init__(self, options: DCGANGeneratorOptions = DCGANGeneratorOptions()) -> None:
        super().__init__((options.latent_dim,), options.output_shape, options.sigma)
        self.options = options
        start = _check_square(options.output_shape, len(options.channels), "output_shape")
        chans = options.channels

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if options.batch_norm else nn.Identity()

        layers: list[nn.Module] = [nn.ConvTranspose2d(options.latent_dim, chans[0], start, 1, 0, bias=not options.batch_norm),
                                   norm(chans[0]), nn.ReLU()]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=not options.batch_norm), norm(b), nn.ReLU()]
        layers += [nn.ConvTranspose2d(chans[-1], options.output_shape[0], 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_normal(self, options.init_std, norm_std=options.init_std)  # BN gamma N(1, std) (DCGAN)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], -1, 1, 1))


@attrs.frozen(kw_only=True)
class DCGANDiscriminatorOptions:
    """DCGAN discriminator: 4x4 stride-2 convs, LeakyReLU 0.2, conv to one logit."""

    input_shape: tuple[int, int, int] = attrs.field(default=(3, 32, 32), validator=all_positive)
    channels: tuple[int, ...] = attrs.field(default=(64, 128, 256), validator=all_positive)
    norm: Literal["none", "batch", "spectral"] = "none"
    leak: float = attrs.field(default=0.2, validator=positive)
    init_std: float = attrs.field(default=0.02, validator=positive)

    def __attrs_post_init__(self) -> None:
        if not self.channels:
            raise ValueError("'channels' must have at least one entry")
        _check_square(self.input_shape, len(self.channels), "input_shape")


class DCGANDiscriminator(EnergyModelBase):
    """DCGAN discriminator; score(x) = D(x), one logit per example."""

    def __init__(self, options: DCGANDiscriminatorOptions = DCGANDiscriminatorOptions()) -> None:
        super().__init__(options.input_shape, None)
        self.options = options
        end = _check_square(options.input_shape, len(options.channels), "input_shape")
        convs: list[nn.Module] = []
        c = options.input_shape[0]
        for i, ch in enumerate(options.channels):
            conv = nn.Conv2d(c, ch, 4, 2, 1)
            convs.append(conv)
            if options.norm == "batch" and i > 0:
                convs.append(nn.BatchNorm2d(ch))
            convs.append(nn.LeakyReLU(options.leak))
            c = ch
        convs.append(nn.Conv2d(c, 1, end, 1, 0))
        self.net = nn.Sequential(*convs)
        init_normal(self, options.init_std, norm_std=options.init_std)  # BN gamma N(1, std) (DCGAN)
        if options.norm == "spectral":
            for m in self.net:
                if isinstance(m, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(m)

    def score(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1).sum(1)
