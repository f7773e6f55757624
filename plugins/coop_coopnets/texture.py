"""Texture descriptor and generator of the TPAMI paper, Section 4.1 (Experiment 1).

Descriptor, as printed: 100 filters of 15 x 15 with sub-sampling 3, then 70 of 9 x 9 and 30 of
7 x 7, both with sub-sampling 1.  A texture model is stationary, so there is no fully connected
layer: f(Y) is the sum of the top layer's responses over all positions and channels (the
authors' MatConvNet code back-propagates a map of ones from the top layer).  Not printed, taken
from that code (``convNet_texture.m``): padding (k - 1) / 2 per layer (7, 4, 3), so a 224 x 224
image gives 75 x 75 maps at all three layers; a ReLU after every layer, the top one included.
Receptive fields: 15, 15 + 8 * 3 = 39 and 39 + 6 * 3 = 57 pixels; neighbouring top-layer units
are 3 pixels apart.

Generator, as printed: a 7 x 7 latent map, five transposed convolutions with 5 x 5 kernels and
up-sampling 2 (7 -> 14 -> 28 -> 56 -> 112 -> 224), tanh at the bottom, batch normalisation and
ReLU between layers (Section 4 preamble).  Not printed, from the code (``frame_gan.m``): one
latent channel, channels 512-256-128-64-C, MatConvNet crop [1, 2] (exactly 2x per layer; our
`CroppedConvTranspose` crops the same rows), LeakyReLU 0.2 and init N(0, 0.005); the paper's
ReLU and N(0, 0.001) are options.
"""
from __future__ import annotations

from typing import Literal, Optional

import attrs
from torch import Tensor, nn

from coopcore import EnergyModelBase, GeneratorBase, all_positive, non_negative, optional_positive, positive

from .layers import BatchNormShift, CroppedConvTranspose, transposed_crop
from .networks import _activation, _init_normal, _same_length

Activation = Literal["relu", "leaky_relu", "elu", "swish"]


def _conv_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TextureDescriptorOptions:
    """A stationary (fully convolutional) descriptor: f = sum of the top layer's responses."""

    input_shape: tuple[int, int, int] = attrs.field(default=(3, 224, 224), validator=all_positive)
    channels: tuple[int, ...] = attrs.field(default=(100, 70, 30), validator=all_positive)
    kernels: tuple[int, ...] = attrs.field(default=(15, 9, 7), validator=all_positive)
    strides: tuple[int, ...] = attrs.field(default=(3, 1, 1), validator=all_positive)
    # Not printed.  'same' = (k - 1) // 2 on every side as the authors' code (7, 4, 3);
    # 'valid' = no padding (responses only where the filter lies inside the image).
    padding: Literal["same", "valid"] = "same"
    activation: Activation = "relu"
    leak: float = attrs.field(default=0.2, validator=non_negative)
    # The code applies the ReLU to the top layer too before summing; False sums linear responses.
    top_activation: bool = True
    # Weights ~ N(0, init_std): code 0.01, paper 0.001; None keeps PyTorch's default init.
    init_std: Optional[float] = 0.01
    # s of the Gaussian reference (paper: 0.012 for textures); None = flat reference.
    reference_std: Optional[float] = attrs.field(default=0.012, validator=optional_positive)

    def __attrs_post_init__(self) -> None:
        _same_length(("channels", self.channels), ("kernels", self.kernels), ("strides", self.strides))
        texture_descriptor_sizes(self)


def texture_descriptor_sizes(o: TextureDescriptorOptions) -> list[int]:
    """The side of the (square) response map after each layer; ValueError if one vanishes."""
    _, h, w = o.input_shape
    if h != w:
        raise ValueError(f"'input_shape' must be square, got {list(o.input_shape)}")
    sizes = []
    for k, s in zip(o.kernels, o.strides):
        pad = (k - 1) // 2 if o.padding == "same" else 0
        h = _conv_size(h, k, s, pad)
        if h < 1:
            raise ValueError(f"'kernels' {list(o.kernels)} do not fit input_shape {list(o.input_shape)}")
        sizes.append(h)
    return sizes


class TextureDescriptor(EnergyModelBase):
    """Descriptor f(Y; theta) of TPAMI 4.1: stacked convolutions, f = sum of top responses."""

    def __init__(self, options: TextureDescriptorOptions = TextureDescriptorOptions()) -> None:
        super().__init__(options.input_shape, options.reference_std)
        self.options = options
        blocks: list[nn.Module] = []
        c = options.input_shape[0]
        n = len(options.channels)
        for i, (ch, k, s) in enumerate(zip(options.channels, options.kernels, options.strides)):
            pad = (k - 1) // 2 if options.padding == "same" else 0
            block: list[nn.Module] = [nn.Conv2d(c, ch, k, s, pad)]
            if i < n - 1 or options.top_activation:
                block.append(_activation(options.activation, options.leak))
            blocks.append(nn.Sequential(*block))
            c = ch
        self.blocks = nn.ModuleList(blocks)
        _init_normal(self, options.init_std)

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """The response maps of every layer (after its non-linearity, where it has one)."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    def score(self, x: Tensor) -> Tensor:
        return self.layer_outputs(x)[-1].flatten(1).sum(1)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class TextureGeneratorOptions:
    """A fully convolutional generator from a latent map (TPAMI 4.1)."""

    latent_channels: int = attrs.field(default=1, validator=positive)
    latent_size: int = attrs.field(default=7, validator=positive)
    # Output channels of every layer but the last (which has out_channels); code 512-256-128-64.
    channels: tuple[int, ...] = attrs.field(default=(512, 256, 128, 64), validator=all_positive)
    out_channels: int = attrs.field(default=3, validator=positive)
    kernel: int = attrs.field(default=5, validator=positive)
    # Up-sampling of every layer (paper: 2).
    upsampling: int = attrs.field(default=2, validator=positive)
    batch_norm: bool = True
    # BN as the authors' TensorFlow code: shift only, eps 1e-3 (see ConvGenerator's options).
    batch_norm_scale: bool = False
    batch_norm_eps: float = attrs.field(default=1e-3, validator=positive)
    # Paper: ReLU; the code: LeakyReLU 0.2 (default).
    activation: Activation = "leaky_relu"
    leak: float = attrs.field(default=0.2, validator=non_negative)
    output: Literal["tanh", "none"] = "tanh"
    # Weights ~ N(0, init_std): code 0.005, paper 0.001; None keeps PyTorch's default init.
    init_std: Optional[float] = 0.005
    # sigma of eq. 11 (paper: 0.3 for textures).
    sigma: float = attrs.field(default=0.3, validator=positive)

    def __attrs_post_init__(self) -> None:
        texture_generator_sizes(self)

    @property
    def size(self) -> int:
        """Side of the generated image: latent_size * upsampling ** number of layers."""
        return self.latent_size * self.upsampling ** (len(self.channels) + 1)


def texture_generator_sizes(o: TextureGeneratorOptions) -> list[int]:
    """The side after every layer; ValueError if the kernel cannot give exact up-sampling."""
    sizes, side = [], o.latent_size
    for _ in range(len(o.channels) + 1):
        try:
            transposed_crop(side, side * o.upsampling, o.kernel, o.upsampling)
        except ValueError as exc:
            raise ValueError(f"'kernel' {o.kernel} with upsampling {o.upsampling}: {exc}") from None
        side *= o.upsampling
        sizes.append(side)
    return sizes


class TextureGenerator(GeneratorBase):
    """Generator g(X; alpha) of TPAMI 4.1: latent map [c, s, s] -> image [C, s * 2^L, s * 2^L]."""

    def __init__(self, options: TextureGeneratorOptions = TextureGeneratorOptions()) -> None:
        o = options
        super().__init__((o.latent_channels, o.latent_size, o.latent_size), (o.out_channels, o.size, o.size), o.sigma)
        self.options = o
        layers: list[nn.Module] = []
        c, side = o.latent_channels, o.latent_size
        outs = (*o.channels, o.out_channels)
        for i, ch in enumerate(outs):
            nxt = side * o.upsampling
            up = (o.upsampling, o.upsampling)
            layers.append(CroppedConvTranspose(c, ch, (o.kernel, o.kernel), up, (side, side), (nxt, nxt)))
            if i < len(outs) - 1:
                if o.batch_norm:
                    layers.append(BatchNormShift(ch, o.batch_norm_eps, o.batch_norm_scale))
                layers.append(_activation(o.activation, o.leak))
            c, side = ch, nxt
        if o.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        _init_normal(self, o.init_std)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], *self.latent_shape))
