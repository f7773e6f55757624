"""The networks of the divergence-triangle paper (Han et al., Appendix, Tables 4-6).

One configurable class per role; the paper's tables are presets of their options
(`presets.py`, registered in `plugin.py`):

- `TriangleGenerator`  g_theta(z): z -> 1x1 -> transposed convs reaching the listed sizes,
  BN + ReLU on the hidden layers, an output non-linearity (tanh) on the last.
- `TriangleEncoder`    q_phi(z | x): strided convs + LeakyReLU (optional BN), then two
  parallel conv heads taking the last map to 1x1: mu and log sigma^2.
- `TriangleEBM`        pi_alpha(x) ~ exp(-E(x)): the same bottom-up stack, then a conv head
  to 1x1x1 whose output is the energy E(x).

A table lists, per layer, the kernel, the stride, the output size and the channels; the
options hold exactly these lists (`kernels`, `strides`, `sizes`, `channels`) and the padding
of every layer is solved from them, so a preset is a literal transcription of its table.

Choices where the tables are silent or inconsistent (all options):

- Padding: solved per layer, the smallest padding that gives the listed size (e.g. 4x4 stride-2
  convs use padding 1, 28 -> 14 -> 7 -> 3; a 3x3 stride-1 conv uses padding 1, 32 -> 32);
  transposed convs use output_padding where needed (3 -> 7).  The public CIFAR code uses the
  same paddings.
- Table 6's last layer is a 4x4 conv from a 3x3 map to 1x1, which no symmetric padding gives:
  `head_kernel = 3` (a conv over the whole 3x3 map, i.e. fully connected) is the MNIST default;
  `head_kernel = 4` zero-pads one row/column at the bottom/right instead.
- The inference model's "conv(100) -> mu, sigma": two parallel heads of `latent_dim` channels,
  one for mu and one for log sigma^2 (the public code; coopcore's Encoder returns (mu, logvar)).
- Table 4 (CelebA) writes "ReLU" after the generator's output layer and "LReLU" after the
  inference and energy heads; Tables 5/6 and the public code use tanh and no activation there.
  We read Table 4's entries as slips: `out_activation = "tanh"` and `head_activation = "none"`
  by default; `out_activation = "relu"` / `head_activation = "leaky_relu"` follow Table 4
  literally.
- Biases: the public code has no bias in the hidden convs (bias only in the output/head
  layers); `bias = true` adds them.
- BatchNorm always uses batch statistics (no running buffers), as the other networks of this
  project (the trainer keeps every network in train mode).  BN after every hidden layer where
  the table says "Yes" (`batch_norm`), order conv -> BN -> non-linearity.
- LeakyReLU slope 0.2 (the paper's "default leaky factor"); ReLU in the generator.
- Init (paper Section 4 and code): conv weights N(0, 0.02), BN gamma N(1, 0.02), beta 0
  (`init_std`).  The public code initialises weights only: the biases (those of the output
  layer and heads, and of hidden layers with `bias = true`) keep PyTorch's default draw,
  uniform in +-1/sqrt(fan_in); `zero_bias = true` sets them to 0 instead.
- The EBM's network output is the energy E(x) (the public code's `energy_form = identity`);
  its score is f(x) = -E(x) with a flat reference (reference_std None), so `energy(x)`
  returns the network output.  `reference_std = s` adds TPAMI's Gaussian reference
  ||x||^2 / (2 s^2) to the energy, for the network used as a CoopNets descriptor.
- Generator `sigma`: the triangle loss uses sum ||x - G(z)||^2 (no 1/(2 sigma^2) factor), a
  Gaussian observation model with 2 sigma^2 = 1, so sigma defaults to sqrt(1/2).  The
  `triangle` objective reads it only with `recon_weight = "sigma"`.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import attrs
from torch import Tensor, nn

from coopcore import (
    EnergyModelBase,
    GeneratorBase,
    all_positive,
    conv_padding,
    init_normal,
    non_negative,
    positive,
    transposed_conv_padding,
)


# ---------------------------------------------------------------------------------------
def _bn(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, track_running_stats=False)


def _same_length(**named: tuple) -> None:
    lengths = {n: len(v) for n, v in named.items()}
    if len(set(lengths.values())) != 1:
        names = ", ".join(f"'{n}' ({k})" for n, k in lengths.items())
        raise ValueError(f"{names} must have one entry per layer (the same length)")


# ---------------------------------------------------------------------------------------
# generator
@attrs.frozen(kw_only=True)
class TriangleGeneratorOptions:
    """Divergence-triangle generator; defaults = Table 6 (MNIST 28x28)."""

    latent_dim: int = attrs.field(default=100, validator=positive)
    out_channels: int = attrs.field(default=1, validator=positive)
    # Output channels of the hidden transposed convs (Table 6: 1024, 512, 256).
    channels: tuple[int, ...] = attrs.field(default=(1024, 512, 256), validator=all_positive)
    # Per layer, hidden layers then the output layer: output side, kernel, stride.
    sizes: tuple[int, ...] = attrs.field(default=(3, 7, 14, 28), validator=all_positive)
    kernels: tuple[int, ...] = attrs.field(default=(3, 4, 4, 4), validator=all_positive)
    strides: tuple[int, ...] = attrs.field(default=(1, 2, 2, 2), validator=all_positive)
    # BatchNorm after every hidden layer (all three tables: yes).
    batch_norm: bool = True
    # Bias in the hidden layers (public code: none).
    bias: bool = False
    # Non-linearity of the output layer (Tables 5/6: tanh; Table 4 writes ReLU).
    out_activation: Literal["tanh", "relu", "none"] = "tanh"
    # Weights N(0, init_std), BN gamma N(1, init_std) (paper / code: 0.02).
    init_std: float = attrs.field(default=0.02, validator=positive)
    # Biases 0 at the start; false (public code) keeps PyTorch's default bias initialisation.
    zero_bias: bool = False
    # Observation noise of the Gaussian model; sqrt(1/2) matches the loss sum ||x - G(z)||^2.
    sigma: float = attrs.field(default=math.sqrt(0.5), validator=positive)

    def __attrs_post_init__(self) -> None:
        if len(self.sizes) != len(self.channels) + 1:
            raise ValueError(f"'sizes' needs one entry per hidden layer plus the output layer "
                             f"({len(self.channels) + 1}), got {len(self.sizes)}")
        _same_length(sizes=self.sizes, kernels=self.kernels, strides=self.strides)
        size = 1
        for s, k, st in zip(self.sizes, self.kernels, self.strides):
            try:
                transposed_conv_padding(size, s, k, st)
            except ValueError as exc:
                raise ValueError(f"'sizes': {exc}") from None
            size = s


class TriangleGenerator(GeneratorBase):
    """Top-down generator g_theta(z) of the divergence triangle (Tables 4-6)."""

    def __init__(self, options: TriangleGeneratorOptions = TriangleGeneratorOptions()) -> None:
        o = options
        super().__init__((o.latent_dim,), (o.out_channels, o.sizes[-1], o.sizes[-1]), o.sigma)
        self.options = o
        layers: list[nn.Module] = []
        c_in, size = o.latent_dim, 1
        outs = (*o.channels, o.out_channels)
        for i, (c, s, k, st) in enumerate(zip(outs, o.sizes, o.kernels, o.strides)):
            pad, out_pad = transposed_conv_padding(size, s, k, st)
            last = i == len(outs) - 1
            layers.append(nn.ConvTranspose2d(c_in, c, k, st, pad, output_padding=out_pad, bias=o.bias or last))
            if not last:
                if o.batch_norm:
                    layers.append(_bn(c))
                layers.append(nn.ReLU())
            elif o.out_activation == "tanh":
                layers.append(nn.Tanh())
            elif o.out_activation == "relu":
                layers.append(nn.ReLU())
            c_in, size = c, s
        self.net = nn.Sequential(*layers)
        init_normal(self, o.init_std, norm_std=o.init_std, zero_bias=o.zero_bias)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


# ---------------------------------------------------------------------------------------
# bottom-up stack shared by the inference model and the EBM
@attrs.frozen(kw_only=True)
class _BottomUpOptions:
    """Strided convs + LeakyReLU, then a head taking the last map to 1x1."""

    in_channels: int = attrs.field(default=1, validator=positive)
    # Side of the (square) input image.
    input_size: int = attrs.field(default=28, validator=positive)
    # Per hidden layer: output channels, output side, kernel, stride (Table 6 defaults).
    channels: tuple[int, ...] = attrs.field(default=(128, 256, 512), validator=all_positive)
    sizes: tuple[int, ...] = attrs.field(default=(14, 7, 3), validator=all_positive)
    kernels: tuple[int, ...] = attrs.field(default=(4, 4, 4), validator=all_positive)
    strides: tuple[int, ...] = attrs.field(default=(2, 2, 2), validator=all_positive)
    # Kernel of the head (last map -> 1x1); larger than the map = zero padding at bottom/right.
    head_kernel: int = attrs.field(default=3, validator=positive)
    # BatchNorm after every hidden conv (Table 4: yes; Tables 5/6: no).
    batch_norm: bool = False
    bias: bool = False
    leak: float = attrs.field(default=0.2, validator=non_negative)
    # Non-linearity after the head (Table 4 writes LReLU; Tables 5/6 and code: none).
    head_activation: Literal["none", "leaky_relu"] = "none"
    init_std: float = attrs.field(default=0.02, validator=positive)
    # Biases 0 at the start; false (public code) keeps PyTorch's default bias initialisation.
    zero_bias: bool = False

    def __attrs_post_init__(self) -> None:
        _same_length(channels=self.channels, sizes=self.sizes, kernels=self.kernels, strides=self.strides)
        size = self.input_size
        for s, k, st in zip(self.sizes, self.kernels, self.strides):
            try:
                conv_padding(size, s, k, st)
            except ValueError as exc:
                raise ValueError(f"'sizes': {exc}") from None
            size = s
        if self.head_kernel < size:
            raise ValueError(f"'head_kernel' must be >= the last map's side {size} (the head gives 1x1), "
                             f"got {self.head_kernel}")


def _bottom_up(o: _BottomUpOptions) -> tuple[nn.Sequential, int, int]:
    """The hidden conv stack; returns (layers, channels, side of the last map)."""
    layers: list[nn.Module] = []
    c_in, size = o.in_channels, o.input_size
    for c, s, k, st in zip(o.channels, o.sizes, o.kernels, o.strides):
        layers.append(nn.Conv2d(c_in, c, k, st, conv_padding(size, s, k, st), bias=o.bias))
        if o.batch_norm:
            layers.append(_bn(c))
        layers.append(nn.LeakyReLU(o.leak))
        c_in, size = c, s
    return nn.Sequential(*layers), c_in, size


def _head(c_in: int, c_out: int, size: int, o: _BottomUpOptions) -> nn.Module:
    """Conv from the size x size map to 1x1 (see the module docstring for head_kernel > size)."""
    layers: list[nn.Module] = []
    if o.head_kernel > size:
        pad = o.head_kernel - size  # zero rows/columns added at the bottom/right
        layers.append(nn.ZeroPad2d((0, pad, 0, pad)))
    layers.append(nn.Conv2d(c_in, c_out, o.head_kernel))
    if o.head_activation == "leaky_relu":
        layers.append(nn.LeakyReLU(o.leak))
    return nn.Sequential(*layers)


@attrs.frozen(kw_only=True)
class TriangleEncoderOptions(_BottomUpOptions):
    """Divergence-triangle inference model; defaults = Table 6 (MNIST 28x28)."""

    latent_dim: int = attrs.field(default=100, validator=positive)


class TriangleEncoder(nn.Module):
    """Inference model q_phi(z | x) = N(mu(x), diag(exp(logvar(x)))) (Tables 4-6)."""

    def __init__(self, options: TriangleEncoderOptions = TriangleEncoderOptions()) -> None:
        super().__init__()
        o = options
        self.options = o
        self.input_shape = (o.in_channels, o.input_size, o.input_size)
        self.latent_shape = (o.latent_dim,)
        self.features, c, size = _bottom_up(o)
        self.mu = _head(c, o.latent_dim, size, o)
        self.logvar = _head(c, o.latent_dim, size, o)
        init_normal(self, o.init_std, norm_std=o.init_std, zero_bias=o.zero_bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h).flatten(1), self.logvar(h).flatten(1)


def _optional_positive(instance: object, attribute: attrs.Attribute, value: Optional[float]) -> None:
    """Validator: > 0 or none."""
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0 or \"none\" (a flat reference), got {value!r}")


@attrs.frozen(kw_only=True)
class TriangleEBMOptions(_BottomUpOptions):
    """Divergence-triangle energy-based model; defaults = Table 6 (MNIST 28x28)."""

    # Gaussian reference N(0, s^2 I) of the energy, E(x) = ||x||^2 / (2 s^2) + network output;
    # "none" = flat (the triangle's model).  Set when the network serves as a CoopNets
    # descriptor (TPAMI eq. 4; the baseline rows of the triangle's Table 1).
    reference_std: Optional[float] = attrs.field(default=None, validator=_optional_positive)


class TriangleEBM(EnergyModelBase):
    """Energy-based model pi_alpha(x) ~ exp(-E(x)) (Tables 4-6); score f = -E, flat reference
    unless `reference_std` is set."""

    def __init__(self, options: TriangleEBMOptions = TriangleEBMOptions()) -> None:
        o = options
        super().__init__((o.in_channels, o.input_size, o.input_size), o.reference_std)
        self.options = o
        self.features, c, size = _bottom_up(o)
        self.head = _head(c, 1, size, o)
        init_normal(self, o.init_std, norm_std=o.init_std, zero_bias=o.zero_bias)

    def network_energy(self, x: Tensor) -> Tensor:
        """The network output, E(x) in the public code, one value per example."""
        return self.head(self.features(x)).flatten(1).sum(1)

    def score(self, x: Tensor) -> Tensor:
        return -self.network_energy(x)
