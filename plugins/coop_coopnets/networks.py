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

import math
from typing import Literal, Optional

import attrs
from torch import Tensor, nn

from coopcore import EnergyModelBase, GeneratorBase, all_positive, non_negative, optional_positive, positive


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


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding: output ceil(size / stride); returns (before, after, out)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def transposed_padding(size_in: int, size_out: int, kernel: int) -> tuple[int, int, int]:
    """(stride, padding, output_padding) of a ConvTranspose2d taking size_in to size_out."""
    stride = 1 if size_in == 1 else max(1, math.ceil(size_out / size_in))
    need = (size_in - 1) * stride + kernel - size_out  # = 2 p - op
    if need < 0:
        raise ValueError(f"kernel {kernel} is too small to go from {size_in} to {size_out}")
    pad = math.ceil(need / 2)
    out_pad = 2 * pad - need
    if out_pad >= max(stride, 1) or (stride == 1 and out_pad != 0):
        raise ValueError(f"cannot go from {size_in} to {size_out} with kernel {kernel} (stride {stride})")
    return stride, pad, out_pad


def _init_normal(module: nn.Module, std: Optional[float]) -> None:
    if std is None:
        return
    if not std > 0:
        raise ValueError(f"'init_std' must be > 0 or omitted, got {std}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.BatchNorm3d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _same_length(*named: tuple[str, tuple]) -> None:
    lengths = {n: len(v) for n, v in named}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"these lists must have the same length: {lengths}")


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ConvDescriptorOptions:
    """A bottom-up ConvNet descriptor: conv layers, then FC outputs summed into f(Y)."""

    input_shape: tuple[int, int, int] = attrs.field(default=(1, 28, 28), validator=all_positive)
    channels: tuple[int, ...] = attrs.field(default=(64, 128, 256), validator=all_positive)
    kernels: tuple[int, ...] = attrs.field(default=(4, 4, 4), validator=all_positive)
    strides: tuple[int, ...] = attrs.field(default=(2, 2, 2), validator=all_positive)
    fc_outputs: int = attrs.field(default=100, validator=positive)
    activation: Literal["leaky_relu", "relu", "elu", "swish"] = "leaky_relu"
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
        _init_normal(self, options.init_std)

    def score(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1)).sum(1)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class ConvGeneratorOptions:
    """A top-down ConvNet generator g(X; alpha): [FC] -> transposed convs -> tanh."""

    latent_dim: int = attrs.field(default=100, validator=positive)
    out_channels: int = attrs.field(default=1, validator=positive)
    # Spatial size after each transposed-conv layer; the last is the image size.
    sizes: tuple[int, ...] = attrs.field(default=(4, 7, 14, 28), validator=all_positive)
    # Output channels of every layer except the last (which has out_channels).
    channels: tuple[int, ...] = attrs.field(default=(512, 256, 128), validator=all_positive)
    kernels: tuple[int, ...] = attrs.field(default=(4, 4, 4, 4), validator=all_positive)
    # > 0 puts a fully connected layer of this width under z (TPAMI 4.5 LSUN/CIFAR).
    fc_units: int = attrs.field(default=0, validator=non_negative)
    activation: Literal["leaky_relu", "relu", "elu", "swish"] = "leaky_relu"
    leak: float = attrs.field(default=0.2, validator=non_negative)
    batch_norm: bool = True
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
            transposed_padding(size, s, k)
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
            stride, pad, out_pad = transposed_padding(size, s, k)
            layers.append(nn.ConvTranspose2d(c, ch, k, stride, pad, out_pad))
            if i < len(outs) - 1:
                if options.batch_norm:
                    # Batch statistics always, as in the authors' code; no running buffers.
                    layers.append(nn.BatchNorm2d(ch, track_running_stats=False))
                layers.append(act())
            c, size = ch, s
        if options.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        _init_normal(self, options.init_std)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z.flatten(1))
        return self.net(h.view(h.shape[0], -1, 1, 1))
