"""Spatial-temporal descriptor and generator of the TPAMI paper, Section 4.7 (Experiment 7,
dynamic textures, Table 6).  Videos are [B, C, T, H, W] (Conv3d's layout); the paper's clips
are 128 x 128 pixels x 64 frames, i.e. [3, 64, 128, 128].

Descriptor (bottom-up), as printed:
  1. 120 filters of 5 x 5 pixels x 5 frames, sub-sampling 2 in pixels and frames, ReLU;
  2. "spatially fully connected": 30 filters covering the whole spatial extent of layer 1's
     output, temporal size 5, temporal sub-sampling 2, temporal padding 2, ReLU;  the spatial
     map becomes 1 x 1;
  3. 10 filters of 1 x 1 x 5, temporal sub-sampling 2, temporal padding 2;
  f(Y) = the sum of layer 3's outputs (over channels and frames), as for every descriptor of
  the paper (the authors' code back-propagates a tensor of ones from that layer).
Layer 1's padding is not printed.  We use TensorFlow 'SAME' padding as the authors' code does
(1 before, 2 after for an even size and a 5-tap stride-2 filter): the map after layer 1 is then
exactly half the input, 32 frames x 64 x 64 for the paper's clip, which is what "sub-sampling
size of 2" implies and what the generator mirrors (its layer 2 produces 32 frames x 32 x 32,
up-sampled 2x twice in space and once in time).  'valid' (no padding) is the option.
Sizes for the paper's clip: [120, 32, 64, 64] -> [30, 16, 1, 1] -> [10, 8, 1, 1].

Generator (top-down), as printed: latent X of 5 channels x 1 x 1 pixels x 10 frames;
  1. transposed conv, 1 x 1 x 5 kernels, 256 channels (temporal stride 1, no cropping:
     10 -> 14 frames);
  2. "spatially fully connected" transposed conv, temporal kernel 5, 128 channels: from 1 x 1 to
     the whole spatial map at once (the kernel covers the map, size / 4 = 32 pixels);
  3. 5 x 5 x 5 kernels, up-sampling 2 in pixels and frames, 64 channels;
  4. 5 x 5 x 2 kernels (5 x 5 pixels x 2 frames), up-sampling 2 x 2 x 1, 3 channels, tanh;
  batch normalisation + ReLU between consecutive layers.
The paper does not print layer 2's temporal stride or the frame counts between layers.  They
follow from the authors' code and the output size: frames 10 -> 14 -> 32 (stride 2; the full
transposed output is 31 frames, the 32nd receives only the bias, as TensorFlow's 'VALID'
transposed convolution gives) -> 64 -> 64; pixels 1 -> 1 -> 32 -> 64 -> 128.  Layers 3 and 4
crop the full transposed output the TensorFlow 'SAME' way (see `layers.CroppedConvTranspose`).

Both nets take their sizes from options (frames, pixels, channels, kernels, strides), so a tiny
clip such as [3, 8, 16, 16] trains in a test; invalid combinations raise ValueError naming the
option.
"""
from __future__ import annotations

from typing import Literal, Optional

import attrs
import torch.nn.functional as F
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
)

from .layers import BatchNormShift, CroppedConvTranspose, SpatiallyFullConv3d, transposed_crop
from .networks import _activation

Activation = Literal["relu", "leaky_relu", "elu", "swish"]


def _conv_out(size: int, kernel: int, stride: int, pad_total: int) -> int:
    return (size + pad_total - kernel) // stride + 1


def non_negative_each(instance: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    """Validator: every entry >= 0."""
    if any(v < 0 for v in value):
        raise ValueError(f"'{attribute.name}' must contain only values >= 0, got {list(value)!r}")


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class SpatialTemporalDescriptorOptions:
    """The spatial-temporal descriptor of TPAMI 4.7 (defaults: the paper's 128 x 128 x 64 clips)."""

    # [C, T, H, W] of one clip.
    input_shape: tuple[int, int, int, int] = attrs.field(default=(3, 64, 128, 128), validator=all_positive)
    # Output channels of layers 1, 2 (spatially fully connected) and 3.
    channels: tuple[int, int, int] = attrs.field(default=(120, 30, 10), validator=all_positive)
    # Layer 1's filter and sub-sampling as (frames, pixels, pixels).
    kernel: tuple[int, int, int] = attrs.field(default=(5, 5, 5), validator=all_positive)
    stride: tuple[int, int, int] = attrs.field(default=(2, 2, 2), validator=all_positive)
    # Layer 1's padding (not printed): 'same' = TensorFlow SAME as the authors' code (size / stride).
    padding: Literal["same", "valid"] = "same"
    # Temporal filter size, sub-sampling and padding of layers 2 and 3 (paper: 5, 2, 2).
    temporal_kernels: tuple[int, int] = attrs.field(default=(5, 5), validator=all_positive)
    temporal_strides: tuple[int, int] = attrs.field(default=(2, 2), validator=all_positive)
    temporal_paddings: tuple[int, int] = attrs.field(default=(2, 2), validator=non_negative_each)
    activation: Activation = "relu"
    leak: float = attrs.field(default=0.2, validator=non_negative)
    # Weights ~ N(0, init_std): 0.001 as printed; None keeps PyTorch's default init.
    init_std: Optional[float] = 0.001
    # s of the Gaussian reference distribution (Table 6 settings: 0.016); None = flat reference.
    reference_std: Optional[float] = attrs.field(default=0.016, validator=optional_positive)

    def __attrs_post_init__(self) -> None:
        descriptor_sizes(self)


def descriptor_sizes(o: SpatialTemporalDescriptorOptions) -> list[tuple[int, int, int]]:
    """(frames, height, width) after each of the three layers; ValueError if a size vanishes."""
    _, t, h, w = o.input_shape
    sizes = []
    after1 = []
    for n, k, s in zip((t, h, w), o.kernel, o.stride):
        if o.padding == "same":
            after1.append(same_padding(n, k, s)[2])
        else:
            after1.append(_conv_out(n, k, s, 0))
    if min(after1) < 1:
        raise ValueError(f"'input_shape' {list(o.input_shape)} is smaller than layer 1's filter {list(o.kernel)}")
    sizes.append(tuple(after1))
    frames = after1[0]
    for i, (k, s, p) in enumerate(zip(o.temporal_kernels, o.temporal_strides, o.temporal_paddings)):
        frames = _conv_out(frames, k, s, 2 * p)
        if frames < 1:
            raise ValueError(
                f"'temporal_kernels' {list(o.temporal_kernels)}: layer {i + 2} has no output frames "
                f"for input_shape {list(o.input_shape)}"
            )
        sizes.append((frames, 1, 1))
    return sizes


class SpatialTemporalDescriptor(EnergyModelBase):
    """Descriptor f(Y; theta) for video clips [B, C, T, H, W] (TPAMI 4.7)."""

    # A small clip with the same layer structure, for checks that cannot afford the paper's
    # size on a CPU (74M parameters; a forward and backward pass take seconds).
    contract_options = {"input_shape": [3, 8, 16, 16], "channels": [6, 4, 2]}

    def __init__(self, options: SpatialTemporalDescriptorOptions = SpatialTemporalDescriptorOptions()) -> None:
        super().__init__(options.input_shape, options.reference_std)
        self.options = options
        c, t, h, w = options.input_shape
        if options.padding == "same":
            (t0, t1, _), (h0, h1, _), (w0, w1, _) = (
                same_padding(n, k, s) for n, k, s in zip((t, h, w), options.kernel, options.stride)
            )
            self.pad1 = (w0, w1, h0, h1, t0, t1)  # F.pad order: last dimension first
        else:
            self.pad1 = (0, 0, 0, 0, 0, 0)
        sizes = descriptor_sizes(options)
        _, h_1, w_1 = sizes[0]
        c1, c2, c3 = options.channels
        (k2, k3), (s2, s3), (p2, p3) = options.temporal_kernels, options.temporal_strides, options.temporal_paddings
        self.conv1 = nn.Conv3d(c, c1, options.kernel, options.stride)
        # Spatially fully connected, temporally convolutional: the filter spans layer 1's map.
        self.conv2 = SpatiallyFullConv3d(c1, c2, k2, s2, p2, (h_1, w_1))
        self.conv3 = nn.Conv3d(c2, c3, (k3, 1, 1), (s3, 1, 1), (p3, 0, 0))
        self.act = _activation(options.activation, options.leak)
        init_normal(self, options.init_std)

    def layer_outputs(self, x: Tensor) -> list[Tensor]:
        """The outputs of layers 1-3 (after their non-linearities) for a batch of clips."""
        h1 = self.act(self.conv1(F.pad(x, self.pad1)))
        h2 = self.act(self.conv2(h1))
        return [h1, h2, self.conv3(h2)]

    def score(self, x: Tensor) -> Tensor:
        return self.layer_outputs(x)[-1].flatten(1).sum(1)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class SpatialTemporalGeneratorOptions:
    """The spatial-temporal generator of TPAMI 4.7 (defaults: 128 x 128 pixels x 64 frames)."""

    out_channels: int = attrs.field(default=3, validator=positive)
    # Output clip: frames x size x size.
    frames: int = attrs.field(default=64, validator=positive)
    size: int = attrs.field(default=128, validator=positive)
    # Latent X: latent_channels x latent_frames x 1 x 1 (paper: 5 x 10).
    latent_channels: int = attrs.field(default=5, validator=positive)
    latent_frames: int = attrs.field(default=10, validator=positive)
    # Output channels of layers 1-3 (layer 4 has out_channels); paper 256, 128, 64.
    channels: tuple[int, int, int] = attrs.field(default=(256, 128, 64), validator=all_positive)
    # Temporal kernel and up-sampling of layers 1-4 (paper kernels 5, 5, 5, 2; strides from
    # the code: 1, 2, 2, 1).
    temporal_kernels: tuple[int, int, int, int] = attrs.field(default=(5, 5, 5, 2), validator=all_positive)
    temporal_strides: tuple[int, int, int, int] = attrs.field(default=(1, 2, 2, 1), validator=all_positive)
    # Spatial kernel and up-sampling of layers 3 and 4 (paper: 5 x 5, up-sampling 2 and 2).
    # Layer 1 is 1 x 1 spatially and layer 2 spans the map (size / prod(spatial_strides)).
    spatial_kernel: int = attrs.field(default=5, validator=positive)
    spatial_strides: tuple[int, int] = attrs.field(default=(2, 2), validator=all_positive)
    batch_norm: bool = True
    # BN as the authors' TensorFlow code: shift only, eps 1e-3 (see ConvGenerator's options).
    batch_norm_scale: bool = False
    batch_norm_eps: float = attrs.field(default=1e-3, validator=positive)
    activation: Activation = "relu"
    leak: float = attrs.field(default=0.2, validator=non_negative)
    output: Literal["tanh", "none"] = "tanh"
    # Weights ~ N(0, init_std): 0.005 (recipe card / code; the paper prints 0.001 for all nets).
    init_std: Optional[float] = 0.005
    # sigma of eq. 11; the authors' video code uses 1 (its loss is the plain mean squared error / 2).
    sigma: float = attrs.field(default=1.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        generator_sizes(self)


def generator_sizes(o: SpatialTemporalGeneratorOptions) -> list[tuple[int, int]]:
    """(frames, pixels) after each of the four layers; ValueError naming the option otherwise."""
    s3, s4 = o.spatial_strides
    if o.size % (s3 * s4):
        raise ValueError(f"'size' {o.size} must be divisible by the spatial up-sampling {s3 * s4} (spatial_strides)")
    t2_stride, t3_stride, t4_stride = o.temporal_strides[1:]
    if o.frames % (t3_stride * t4_stride):
        raise ValueError(
            f"'frames' {o.frames} must be divisible by the temporal up-sampling of layers 3-4 "
            f"{t3_stride * t4_stride} (temporal_strides)"
        )
    k1, k2, k3, k4 = o.temporal_kernels
    frames1 = (o.latent_frames - 1) * o.temporal_strides[0] + k1  # full transposed output
    frames3 = o.frames // t4_stride
    frames2 = frames3 // t3_stride
    pixels2 = o.size // (s3 * s4)
    try:
        transposed_crop(frames1, frames2, k2, t2_stride)
    except ValueError as exc:
        raise ValueError(
            f"'latent_frames' {o.latent_frames} with temporal_kernels {list(o.temporal_kernels)} and "
            f"temporal_strides {list(o.temporal_strides)} cannot reach {frames2} frames at layer 2 "
            f"('frames' {o.frames} / up-sampling of layers 3-4): {exc}"
        ) from None
    checks = [  # (option to blame, size in, size out, kernel, stride) of layers 3 and 4
        ("temporal_kernels", frames2, frames3, k3, t3_stride),
        ("temporal_kernels", frames3, o.frames, k4, t4_stride),
        ("spatial_kernel", pixels2, pixels2 * s3, o.spatial_kernel, s3),
        ("spatial_kernel", pixels2 * s3, o.size, o.spatial_kernel, s4),
    ]
    for name, n_in, n_out, k, s in checks:
        try:
            transposed_crop(n_in, n_out, k, s)
        except ValueError as exc:
            raise ValueError(f"'{name}': {exc}") from None
    return [(frames1, 1), (frames2, pixels2), (frames3, pixels2 * s3), (o.frames, o.size)]


class SpatialTemporalGenerator(GeneratorBase):
    """Generator g(X; alpha) for video clips: X [B, c, T_z, 1, 1] -> Y [B, C, T, H, W] (TPAMI 4.7)."""

    # A small clip with the same layer structure, for checks that cannot afford the paper's
    # size on a CPU (169M parameters, 168M of them in the spatially fully connected layer).
    contract_options = {"frames": 8, "size": 16, "latent_frames": 2, "temporal_kernels": [1, 5, 5, 2],
                        "channels": [8, 6, 4]}

    def __init__(self, options: SpatialTemporalGeneratorOptions = SpatialTemporalGeneratorOptions()) -> None:
        o = options
        super().__init__(
            (o.latent_channels, o.latent_frames, 1, 1), (o.out_channels, o.frames, o.size, o.size), o.sigma
        )
        self.options = o
        sizes = generator_sizes(o)
        (f1, _), (f2, p2), (f3, p3), (f4, p4) = sizes
        kt, st, k = o.temporal_kernels, o.temporal_strides, o.spatial_kernel
        s3, s4 = o.spatial_strides
        c1, c2, c3 = o.channels
        specs = [  # (in, out, kernel, stride, size_in, size_out)
            (o.latent_channels, c1, (kt[0], 1, 1), (st[0], 1, 1), (o.latent_frames, 1, 1), (f1, 1, 1)),
            (c1, c2, (kt[1], p2, p2), (st[1], 1, 1), (f1, 1, 1), (f2, p2, p2)),  # spatially fully connected
            (c2, c3, (kt[2], k, k), (st[2], s3, s3), (f2, p2, p2), (f3, p3, p3)),
            (c3, o.out_channels, (kt[3], k, k), (st[3], s4, s4), (f3, p3, p3), (f4, p4, p4)),
        ]
        layers: list[nn.Module] = []
        for i, (cin, cout, kernel, stride, size_in, size_out) in enumerate(specs):
            layers.append(CroppedConvTranspose(cin, cout, kernel, stride, size_in, size_out))
            if i < len(specs) - 1:
                if o.batch_norm:
                    # Batch statistics always (the code's batch_norm in training mode).
                    layers.append(BatchNormShift(cout, o.batch_norm_eps, o.batch_norm_scale))
                layers.append(_activation(o.activation, o.leak))
        if o.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)
        init_normal(self, o.init_std)

    def layer_outputs(self, z: Tensor) -> list[Tensor]:
        """The output of each transposed-convolution layer (before BN/activation) and the result."""
        outs = []
        h = z
        for layer in self.net:
            h = layer(h)
            if isinstance(layer, CroppedConvTranspose):
                outs.append(h)
        outs.append(h)
        return outs

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], *self.latent_shape))
