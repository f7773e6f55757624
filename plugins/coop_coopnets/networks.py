"""The descriptor and generator networks of the CoopNets paper (TPAMI Sections 4.1-4.6).

`ConvDescriptor` is a bottom-up ConvNet: strided convolutions with TensorFlow-style "same"
padding (so 28 -> 14 -> 7 -> 4 as in the authors' code), a non-linearity after each, then a
fully connected layer whose outputs are summed to give f(Y) (the code's "fc" layer).
`ConvGenerator` is a top-down ConvNet: optional FC layer under z, then transposed
convolutions whose padding is solved so each layer reaches the listed spatial size, batch
normalisation with batch statistics and a tanh output.

Each architecture of the paper is registered under its own name with the paper's settings as
defaults (see `plugin.py`); every setting stays overridable from a recipe.
"""
from __future__ import annotations

from typing import Literal, Optional

import attrs
from torch import Tensor, nn

from coopcore import (
    EnergyModelBase,
    GeneratorBase,
    all_positive,
    init_normal,
    non_negative,
    optional_positive,
    positive,
    same_padding,
    transposed_conv_padding,
    transposed_conv_stride,
)

from .layers import BatchNormShift, CroppedConvTranspose


def _activation(name: str, leak: float) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(leak)
    if name == "elu":
        return nn.ELU()
    if name == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}")


def _generator_layer(size_in: int, size_out: int, kernel: int) -> tuple[int, int, int]:
    """(stride, padding, output_padding) of a generator layer taking size_in to size_out: stride
    `coopcore.transposed_conv_stride`, padding `coopcore.transposed_conv_padding`, and the kernel
    must cover the output (no layer made of output padding alone)."""
    stride = transposed_conv_stride(size_in, size_out)
    if (size_in - 1) * stride + kernel < size_out:
        raise ValueError(f"kernel {kernel} is too small to go from {size_in} to {size_out}")
    try:
        pad, out_pad = transposed_conv_padding(size_in, size_out, kernel, stride)
    except ValueError:
        raise ValueError(f"cannot go from {size_in} to {size_out} with kernel {kernel} (stride {stride})") from None
    return stride, pad, out_pad


# `texture.py` imports the initialiser under its former plugin-local name.
_init_normal = init_normal


def _same_length(*named: tuple[str, tuple]) -> None:
    lengths = {n: len(v) for n, v in named}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"these lists must have the same length: {lengths}")


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ConvDescriptorOptions:
    """A bottom-up ConvNet descriptor: conv layers, then FC outputs summed into f(Y)."""

    # Shape [C, H, W] of one input image; must match the dataset's examples.
    input_shape: tuple[int, int, int] = attrs.field(default=(1, 28, 28), validator=all_positive)
    # Output channels of each conv layer (one entry per layer).
    channels: tuple[int, ...] = attrs.field(default=(64, 128, 256), validator=all_positive)
    # Kernel size of each conv layer ("same" padding, as in the authors' TensorFlow code).
    kernels: tuple[int, ...] = attrs.field(default=(4, 4, 4), validator=all_positive)
    # Stride of each conv layer.
    strides: tuple[int, ...] = attrs.field(default=(2, 2, 2), validator=all_positive)
    # Width of the final fully connected layer; its outputs are summed into the score f(Y).
    fc_outputs: int = attrs.field(default=100, validator=positive)
    # Non-linearity after each conv layer.
    activation: Literal["leaky_relu", "relu", "elu", "swish"] = "leaky_relu"
    # Negative slope of leaky_relu (ignored by the other activations).
    leak: float = attrs.field(default=0.2, validator=non_negative)
    # Weights ~ N(0, init_std): code 0.01, paper 0.001; None keeps PyTorch's default init.
    init_std: Optional[float] = 0.01
    # s of the Gaussian reference distribution (eq. 3); None = flat reference.
    reference_std: Optional[float] = attrs.field(default=0.016, validator=optional_positive)

    def __attrs_post_init__(self) -> None:
        _same_length(("channels", self.channels), ("kernels", self.kernels), ("strides", self.strides))


class ConvDescriptor(EnergyModelBase):
    """Descriptor f(Y; theta) of TPAMI eq. 2 as a bottom-up ConvNet."""

    def __init__(self, options: ConvDescriptorOptions = ConvDescriptorOptions()) -> None:
        super().__init__(options.input_shape, options.reference_std)
        self.options = options
        layers: list[nn.Module] = []
        c, h, w = options.input_shape
        for ch, k, s in zip(options.channels, options.kernels, options.strides):
            top, bottom, h = same_padding(h, k, s)
            left, right, w = same_padding(w, k, s)
            if (top, bottom, left, right) != (0, 0, 0, 0):
                layers.append(nn.ZeroPad2d((left, right, top, bottom)))
            layers.append(nn.Conv2d(c, ch, k, s))
            layers.append(_activation(options.activation, options.leak))
            c = ch
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c * h * w, options.fc_outputs)
        init_normal(self, options.init_std)

    def score(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1)).sum(1)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ConvGeneratorOptions:
    """A top-down ConvNet generator g(X; alpha): [FC] -> transposed convs -> tanh."""

    # Dimension of the latent vector X ~ N(0, I).
    latent_dim: int = attrs.field(default=100, validator=positive)
    # Channels of the generated image (1 grey, 3 colour).
    out_channels: int = attrs.field(default=1, validator=positive)
    # Spatial size after each transposed-conv layer; the last is the image size.
    sizes: tuple[int, ...] = attrs.field(default=(4, 7, 14, 28), validator=all_positive)
    # Output channels of every layer except the last (which has out_channels).
    channels: tuple[int, ...] = attrs.field(default=(512, 256, 128), validator=all_positive)
    # Kernel size of each transposed-conv layer (one entry per entry of sizes).
    kernels: tuple[int, ...] = attrs.field(default=(4, 4, 4, 4), validator=all_positive)
    # > 0 puts a fully connected layer of this width under z (TPAMI 4.5 LSUN/CIFAR).
    fc_units: int = attrs.field(default=0, validator=non_negative)
    # Non-linearity after each hidden layer.
    activation: Literal["leaky_relu", "relu", "elu", "swish"] = "leaky_relu"
    # Negative slope of leaky_relu (ignored by the other activations).
    leak: float = attrs.field(default=0.2, validator=non_negative)
    # Batch normalisation after each hidden transposed conv (batch statistics always).
    batch_norm: bool = True
    # Learn a BN scale gamma too (PyTorch's BatchNorm2d); the authors' code learns the shift only.
    batch_norm_scale: bool = False
    # BN epsilon: 1e-3 as TensorFlow's batch_norm in the authors' code (PyTorch's default is 1e-5).
    batch_norm_eps: float = attrs.field(default=1e-3, validator=positive)
    # Output non-linearity: tanh (images in [-1, 1]) or none (linear output).
    output: Literal["tanh", "none"] = "tanh"
    # Weights ~ N(0, init_std) (code 0.005); None keeps PyTorch's default init.
    init_std: Optional[float] = 0.005
    # sigma of the observation noise (eq. 11).
    sigma: float = attrs.field(default=0.3, validator=positive)

    def __attrs_post_init__(self) -> None:
        _same_length(("sizes", self.sizes), ("kernels", self.kernels))
        if len(self.channels) != len(self.sizes) - 1:
            raise ValueError(
                f"'channels' needs one entry per layer but the last ({len(self.sizes) - 1}), got {len(self.channels)}"
            )
        size = 1
        for s, k in zip(self.sizes, self.kernels):
            _generator_layer(size, s, k)
            size = s


class ConvGenerator(GeneratorBase):
    """Generator g(X; alpha) of TPAMI eq. 11 as a top-down ConvNet."""

    def __init__(self, options: ConvGeneratorOptions = ConvGeneratorOptions()) -> None:
        side = options.sizes[-1]
        super().__init__((options.latent_dim,), (options.out_channels, side, side), options.sigma)
        self.options = options
        act = lambda: _activation(options.activation, options.leak)  # noqa: E731
        self.fc: nn.Module = nn.Identity()
        c = options.latent_dim
        if options.fc_units:
            self.fc = nn.Sequential(nn.Linear(options.latent_dim, options.fc_units), act())
            c = options.fc_units
        layers: list[nn.Module] = []
        size = 1
        outs = (*options.channels, options.out_channels)
        for i, (s, k, ch) in enumerate(zip(options.sizes, options.kernels, outs)):
            stride, _, _ = _generator_layer(size, s, k)
            # The full transposed output cropped as TensorFlow's 'SAME' does (the smaller half of
            # the excess before, the larger after; e.g. 4 -> 7 with a 4x4 stride-2 kernel drops 1
            # row before and 2 after), which PyTorch's symmetric padding cannot express.
            layers.append(CroppedConvTranspose(c, ch, (k, k), (stride, stride), (size, size), (s, s)))
            if i < len(outs) - 1:
                if options.batch_norm:
                    # Batch statistics always, as in the authors' code; no running buffers.
                    layers.append(BatchNormShift(ch, options.batch_norm_eps, options.batch_norm_scale))
                layers.append(act())
            c, size = ch, s
        if options.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        init_normal(self, options.init_std)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z.flatten(1))
        return self.net(h.view(h.shape[0], -1, 1, 1))
