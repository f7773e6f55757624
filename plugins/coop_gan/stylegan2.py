"""A StyleGAN2 generator and discriminator (Karras et al., CVPR 2020), as CoopInit uses them.

Written from the StyleGAN2 paper's description (and the StyleGAN2-ADA `cifar` configuration's
published settings, which are CoopInit's base model):

Generator
- mapping network: z normalised to unit second moment, then `mapping_layers` fully connected
  layers (LeakyReLU 0.2, learning-rate multiplier 0.01) to w; the `cifar` config uses 2 layers
  and z, w of 512.  No style mixing (the `cifar` config disables it): one w for every layer.
- synthesis network: a learned constant 4x4 input; per resolution r = 8 .. R an upsampling
  3x3 modulated convolution and a 3x3 modulated convolution; each modulated convolution scales
  the input channels of its weight by a style s = A(w) (affine, bias 1), demodulates
  (divides each output filter by the norm of its modulated weights), adds per-pixel noise with
  a learned per-layer strength (initialised to 0), a bias and LeakyReLU 0.2 times sqrt(2);
- "skip" output: a 1x1 modulated convolution without demodulation (toRGB) per resolution, the
  RGB images summed after upsampling the coarser one; linear output.
Discriminator
- 'orig': fromRGB (1x1) at the top, then per resolution a 3x3 conv and a downsampling 3x3 conv;
  'skip': fromRGB at every resolution from a downsampled image, added to the features;
  'resnet': a 1x1 downsampling shortcut per block, (features + shortcut) / sqrt(2);
- epilogue at 4x4: minibatch standard deviation (group size, channels), 3x3 conv, fully
  connected, fully connected to one logit = the descriptor's score D(x).
Both: equalised learning rate (weights stored N(0, 1) and scaled at run time by
1 / sqrt(fan_in), the learning-rate multiplier folded in), LeakyReLU 0.2 with gain sqrt(2),
channels(r) = min(capacity * channel_base / r, channel_max).

Choices where the description leaves something open (options where it matters):
- Resampling: StyleGAN2 filters with the [1, 3, 3, 1] FIR kernel.  Upsampling here is bilinear
  interpolation, which is that filter applied to the zero-inserted map except at the borders;
  downsampling blurs with the same kernel (zero padding) and strides by 2.
- Noise inputs: StyleGAN2 draws fresh N(0, 1) noise maps at every forward pass.  Here they are
  part of the latent vector (`noise_mode = "latent"`: latent = [z, all noise maps]), so they come
  from the same explicit torch.Generator as z, a forward pass is deterministic given its latent,
  and the cooperative stage's generator loss uses the very noise that produced x^.
  `"const"` fixes them at construction (StyleGAN2's `noise_mode='const'`), `"none"` drops them.
- Minibatch std: groups of min(group size, N) examples; when N is not a multiple, the largest
  divisor of N below the group size (StyleGAN2 requires a multiple).
- Capacity: CoopInit scales its networks by "M s" (Section 5.4, Tables 8-9; M = 2^13 "in
  Karras et al. (2020a)", without saying how it enters).  We read M s as the TensorFlow
  StyleGAN2 `fmap_base`, whose layers at resolution r have fmap_base / (r/2) channels; in this
  module's PyTorch-style formula that is channel_base = 2 M = 16384 (the default) and
  capacity = s: channels(r) = min(s * 16384 / r, 512).  Section 5.4 fixes the reading: its base
  model is s = 1/4, for which, following DiffAugment (Zhao et al. 2020b), the paper "halve[s]
  the number of channels of feature maps at higher resolution layers (i.e., 16x16 and above)":
  512-512-256-128 at 4-8-16-32, which is DiffAugment's CIFAR
  StyleGAN2 (TF fmap_base 2048 = 2^13 / 4); and s = 1 is the network of Table 1's baseline
  (FID 6.40 with gamma = 0.01), StyleGAN2-ADA's `cifar` (512 at every resolution up to 32x32).
  The other reading, s times StyleGAN2-ADA's PyTorch channel_base 32768, gives 512-512-512-256
  at s = 1/4 (halving only at 32x32) and the same network for s = 1/2 and s = 1, which Table 9
  reports as different; it is `channel_base = 32768`.  Table 9's discriminator scales are
  `capacity` of the discriminator alone (the generator stays at s = 1/4).  `capacity_table`
  lists the channels per resolution.
- Mixed precision and conv clamping are not implemented.
- Class conditioning (CoopInit Table 8's "+Cond"; StyleGAN2-ADA's conditional networks), on with
  `n_classes` > 0 on both networks (0, the default, builds exactly the unconditional networks
  with the same parameter names).  Labels are int64 class indices y [B]
  (`coopcore.conditioning`).  Generator: the one-hot label goes through a linear embedding
  (`embed`, equalised lr, to `embed_dim` = w_dim by default), is normalised to unit second
  moment like z, and the mapping network takes [z normalised, embedding normalised]
  (z_dim + embed_dim inputs).  Discriminator (projection, Miyato & Koyama 2018, as in
  StyleGAN2-ADA): a label mapping network (`label_embed` then `label_mapping`: embedding,
  normalisation, `mapping_layers` = 8 fully connected layers with learning-rate multiplier
  0.01, StyleGAN2-ADA's defaults for D, to `cmap_dim` = the 4x4 channels by default) gives
  cmap(y); the last layer outputs `cmap_dim` features phi(x) instead of one logit, and
  D(x, y) = sum(phi(x) * cmap(y)) / sqrt(cmap_dim).  The one-hot product is computed as a
  column lookup of the embedding weight (no one-hot tensor, no host sync); with
  `spectral_norm` the label layers are normalised too.
- Spectral normalisation (CoopInit Table 6's "+ R1 + Spectral Norm"; Miyato et al. 2018), a
  discriminator option, off by default: every conv and fully connected weight of D is divided
  by its largest singular value, estimated by one power iteration per forward pass in training
  mode (torch.nn.utils.parametrizations.spectral_norm; a conv kernel is read as the matrix
  [out, in * k * k], as Miyato et al. do).  What is normalised is the *effective* weight W c of
  the equalised learning rate.  Since sigma(W c) = c sigma(W), that is W / sigma(W): the runtime
  gain c cancels, so with SN the layers use the normalised stored weight with gain 1 (keeping c
  would leave every layer's spectral norm at c = 1/sqrt(fan_in) instead of 1).  SN already makes
  the layer invariant to the stored weight's scale, which is what the equalised learning rate
  was for.  Biases and the learning-rate multipliers of biases are left as they are.
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coopcore import EnergyModelBase, GeneratorBase, non_negative, positive
from coopcore.conditioning import require_labels

SQRT2 = math.sqrt(2.0)


def _power_of_two(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 4 or value & (value - 1):
        raise ValueError(f"'{attribute.name}' must be a power of two >= 4, got {value!r}")


# CoopInit's M (Section 5.4: "M = 2^13 in Karras et al. (2020a)"), read as TF StyleGAN2's
# fmap_base, and the PyTorch-style channel_base it amounts to: TF gives a layer at resolution r
# fmap_base / (r/2) channels, so channel_base = 2 M (see the module docstring).
COOPINIT_M = 2**13
COOPINIT_CHANNEL_BASE = 2 * COOPINIT_M


def channels_at(res: int, channel_base: int, channel_max: int, capacity: float) -> int:
    """Feature maps at resolution `res`: min(capacity * channel_base / res, channel_max), >= 1."""
    return max(1, min(int(capacity * channel_base / res), channel_max))


def capacity_table(capacity: float, resolution: int = 32, channel_base: int = COOPINIT_CHANNEL_BASE,
                   channel_max: int = 512) -> dict[int, int]:
    """Channels per resolution (4 .. `resolution`) of the StyleGAN2 pair at CoopInit's scale
    s = `capacity` (the defaults are the networks' defaults)."""
    res = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    return {r: channels_at(r, channel_base, channel_max, capacity) for r in res}


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU 0.2 with StyleGAN2's gain sqrt(2) (keeps the activations' scale)."""
    return F.leaky_relu(x, 0.2) * SQRT2


_FIR = torch.tensor([1.0, 3.0, 3.0, 1.0])


def blur(x: Tensor, pad: int) -> Tensor:
    """Depthwise [1,3,3,1] x [1,3,3,1] / 64 filter with zero padding `pad` on every side."""
    c = x.shape[1]
    k = torch.outer(_FIR, _FIR).to(device=x.device, dtype=x.dtype)
    k = (k / k.sum()).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad)), k, groups=c)


def downsample(x: Tensor) -> Tensor:
    """Blur and keep every second pixel: [.., H, W] -> [.., H/2, W/2]."""
    c = x.shape[1]
    k = torch.outer(_FIR, _FIR).to(device=x.device, dtype=x.dtype)
    k = (k / k.sum()).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(x, (1, 1, 1, 1)), k, stride=2, groups=c)


def upsample(x: Tensor) -> Tensor:
    """Bilinear 2x upsampling (the [1,3,3,1] filter on the zero-inserted map, borders aside)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class EqualLinear(nn.Module):
    """Fully connected layer with equalised learning rate: y = x (W c)^T + b lr_mul,
    c = lr_mul / sqrt(in), W ~ N(0, 1 / lr_mul^2) as stored."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return lrelu(y) if self.activation else y

    def one_hot(self, labels: Tensor) -> Tensor:
        """The layer applied to one-hot vectors of `labels` (int64 [B]): column `label` of the
        effective weight plus the bias, looked up instead of multiplied."""
        w = self.weight * self.weight_gain
        y = w.t().index_select(0, labels) + self.bias * self.lr_mul
        return lrelu(y) if self.activation else y


def normalize_2nd_moment(x: Tensor) -> Tensor:
    """x / sqrt(mean(x^2) + 1e-8) per example (StyleGAN's pixel norm of z and label embeddings)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualConv2d(nn.Module):
    """Convolution with equalised learning rate; `down` blurs and strides by 2 (StyleGAN2's
    downsampling convolution); optional bias and LeakyReLU (gain sqrt 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True,
                 activation: bool = True, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.kernel, self.down, self.activation = kernel, down, activation

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        if self.down:
            # blur to H + kernel - 2, then a strided valid conv: H / 2 (even H).
            x = blur(x, (self.kernel + 1) // 2)
            x = F.conv2d(x, w, self.bias, stride=2)
        else:
            x = F.conv2d(x, w, self.bias, padding=self.kernel // 2)
        return lrelu(x) if self.activation else x


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution: weight * style (per input channel, per example),
    optionally demodulated; `up` upsamples the input 2x first."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, w_dim: int,
                 demodulate: bool = True, up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.demodulate, self.up, self.kernel = demodulate, up, kernel
        self.out_channels = out_channels

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        b, c, _, _ = x.shape
        styles = self.affine(w)  # [B, in]
        weight = self.weight[None] * self.weight_gain * styles[:, None, :, None, None]  # [B, out, in, k, k]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        if self.up:
            x = upsample(x)
        h, wd = x.shape[2], x.shape[3]
        out = F.conv2d(x.reshape(1, b * c, h, wd), weight.reshape(b * self.out_channels, c, self.kernel, self.kernel),
                       padding=self.kernel // 2, groups=b)
        return out.reshape(b, self.out_channels, h, wd)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + per-pixel noise (learned strength) + bias + LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, up: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, demodulate=True, up=up)
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor, noise: Optional[Tensor]) -> Tensor:
        x = self.conv(x, w)
        if noise is not None:
            x = x + noise * self.noise_strength
        return lrelu(x + self.bias.view(1, -1, 1, 1))


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation, plus bias (StyleGAN2's toRGB)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


def _check_scales(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class StyleGAN2GeneratorOptions:
    """StyleGAN2 generator; defaults: StyleGAN2-ADA's `cifar` config (32x32, 2 mapping layers, z = w = 512)."""

    resolution: int = attrs.field(default=32, validator=_power_of_two)
    img_channels: int = attrs.field(default=3, validator=positive)
    z_dim: int = attrs.field(default=512, validator=positive)
    w_dim: int = attrs.field(default=512, validator=positive)
    mapping_layers: int = attrs.field(default=2, validator=non_negative)
    mapping_lr_mul: float = attrs.field(default=0.01, validator=positive)
    # channels(r) = min(capacity * channel_base / r, channel_max).  channel_base 16384 = 2 M with
    # CoopInit's M = 2^13 read as TF's fmap_base, so `capacity` is CoopInit's s (Section 5.4:
    # s = 1/4 gives 512-512-256-128 at 4-32); at s = 1 every layer up to 32x32 has 512 channels,
    # exactly StyleGAN2-ADA's `cifar` (channel_base 32768).  32768 = the other reading of "M s".
    channel_base: int = attrs.field(default=COOPINIT_CHANNEL_BASE, validator=positive)
    channel_max: int = attrs.field(default=512, validator=positive)
    # CoopInit's scale factor s (Tables 8-9; 1 = Table 1's network).
    capacity: float = attrs.field(default=1.0, validator=_check_scales)
    # Noise inputs: "latent" (drawn with z, part of the latent vector), "const" or "none".
    noise_mode: Literal["latent", "const", "none"] = "latent"
    # Observation noise of the Generator protocol (CoopInit's losses do not use it).
    sigma: float = attrs.field(default=0.3, validator=positive)
    # Class conditioning: the number of classes (0 = unconditional, the network without labels);
    # the generator is then called G(z, y) with int64 class indices y.
    n_classes: int = attrs.field(default=0, validator=non_negative)
    # Width of the label embedding fed to the mapping network beside z (0 = w_dim, StyleGAN2-ADA).
    embed_dim: int = attrs.field(default=0, validator=non_negative)


class StyleGAN2Generator(GeneratorBase):
    """StyleGAN2 generator: mapping network, modulated/demodulated convs, noise, skip toRGB."""

    def __init__(self, options: StyleGAN2GeneratorOptions = StyleGAN2GeneratorOptions()) -> None:
        o = options
        self.resolutions = [2**i for i in range(2, int(math.log2(o.resolution)) + 1)]
        # One noise map at 4x4, two at every higher resolution (one per synthesis layer).
        self.noise_shapes = [4] + [r for r in self.resolutions[1:] for _ in range(2)]
        n_noise = sum(r * r for r in self.noise_shapes) if o.noise_mode == "latent" else 0
        super().__init__((o.z_dim + n_noise,), (o.img_channels, o.resolution, o.resolution), o.sigma)
        self.options = o
        self.n_classes = o.n_classes
        ch = {r: channels_at(r, o.channel_base, o.channel_max, o.capacity) for r in self.resolutions}
        embed_dim = (o.embed_dim or o.w_dim) if o.n_classes else 0
        if o.n_classes:
            self.embed = EqualLinear(o.n_classes, embed_dim)
        dims = [o.z_dim + embed_dim] + [o.w_dim] * o.mapping_layers
        self.mapping = nn.ModuleList(
            EqualLinear(a, b, lr_mul=o.mapping_lr_mul, activation=True) for a, b in zip(dims[:-1], dims[1:])
        )
        w_dim = dims[-1]
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        self.layers = nn.ModuleList([SynthesisLayer(ch[4], ch[4], w_dim, up=False)])
        self.torgb = nn.ModuleList([ToRGB(ch[4], o.img_channels, w_dim)])
        for prev, r in zip(self.resolutions[:-1], self.resolutions[1:]):
            self.layers.append(SynthesisLayer(ch[prev], ch[r], w_dim, up=True))
            self.layers.append(SynthesisLayer(ch[r], ch[r], w_dim, up=False))
            self.torgb.append(ToRGB(ch[r], o.img_channels, w_dim))
        if o.noise_mode == "const":
            for i, r in enumerate(self.noise_shapes):
                self.register_buffer(f"noise_const{i}", torch.randn(1, 1, r, r))

    def embed_labels(self, y: Tensor) -> Tensor:
        """The normalised label embedding the mapping network takes beside z (conditional only)."""
        return normalize_2nd_moment(self.embed.one_hot(y))

    def map(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """The mapping network (z, y) -> w: z normalised to unit second moment, concatenated with
        the normalised label embedding when conditional."""
        y = require_labels(self, y, z.shape[0])
        w = normalize_2nd_moment(z)
        if y is not None:
            w = torch.cat([w, self.embed_labels(y)], dim=1)
        for layer in self.mapping:
            w = layer(w)
        return w

    def _noise(self, latent: Tensor) -> list[Optional[Tensor]]:
        b = latent.shape[0]
        mode = self.options.noise_mode
        if mode == "none":
            return [None] * len(self.noise_shapes)
        if mode == "const":
            return [getattr(self, f"noise_const{i}") for i in range(len(self.noise_shapes))]
        maps, start = [], self.options.z_dim
        for r in self.noise_shapes:
            maps.append(latent[:, start : start + r * r].reshape(b, 1, r, r))
            start += r * r
        return maps

    def forward(self, latent: Tensor, y: Optional[Tensor] = None) -> Tensor:
        latent = latent.flatten(1)
        w = self.map(latent[:, : self.options.z_dim], y)
        noise = self._noise(latent)
        x = self.const[None].expand(latent.shape[0], -1, -1, -1)
        x = self.layers[0](x, w, noise[0])
        img = self.torgb[0](x, w)
        for i in range(1, len(self.resolutions)):
            x = self.layers[2 * i - 1](x, w, noise[2 * i - 1])
            x = self.layers[2 * i](x, w, noise[2 * i])
            img = upsample(img) + self.torgb[i](x, w)
        return img


@attrs.frozen(kw_only=True)
class StyleGAN2DiscriminatorOptions:
    """StyleGAN2 discriminator; defaults: StyleGAN2-ADA's `cifar` config ('orig', mbstd group 32)."""

    resolution: int = attrs.field(default=32, validator=_power_of_two)
    img_channels: int = attrs.field(default=3, validator=positive)
    architecture: Literal["orig", "skip", "resnet"] = "orig"
    # As for the generator: channel_base 16384 = 2 M makes `capacity` CoopInit's s.
    channel_base: int = attrs.field(default=COOPINIT_CHANNEL_BASE, validator=positive)
    channel_max: int = attrs.field(default=512, validator=positive)
    # CoopInit Table 9's "discriminator scale s" (1/16 .. 1).
    capacity: float = attrs.field(default=1.0, validator=_check_scales)
    # Minibatch standard deviation layer: group size (0 = the whole batch) and channels.
    mbstd_group_size: int = attrs.field(default=32, validator=non_negative)
    mbstd_channels: int = attrs.field(default=1, validator=non_negative)
    # Spectral normalisation of every conv / fully connected weight (CoopInit Table 6, Miyato et
    # al. 2018); normalises the effective (equalised-lr) weight, see the module docstring.
    spectral_norm: bool = False
    # Class conditioning by projection: the number of classes (0 = unconditional, the network
    # without labels); D(x, y) = sum(phi(x) * cmap(y)) / sqrt(cmap_dim).
    n_classes: int = attrs.field(default=0, validator=non_negative)
    # Width of cmap(y) and phi(x) (0 = the 4x4 channels, StyleGAN2-ADA's default).
    cmap_dim: int = attrs.field(default=0, validator=non_negative)
    # Fully connected layers of the label mapping network (StyleGAN2-ADA's D: 8).
    mapping_layers: int = attrs.field(default=8, validator=non_negative)
    # Learning-rate multiplier of those layers (StyleGAN2-ADA: 0.01).
    mapping_lr_mul: float = attrs.field(default=0.01, validator=positive)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectrally normalise the effective weight of every EqualConv2d / EqualLinear in `module`.

    The layers compute with `weight * weight_gain`; SN of that product equals SN of `weight`
    (sigma is homogeneous), so the stored weight is parametrised by
    torch.nn.utils.parametrizations.spectral_norm (one power iteration per access in training
    mode) and the gain is set to 1.
    """
    for m in list(module.modules()):
        if isinstance(m, (EqualConv2d, EqualLinear)):
            nn.utils.parametrizations.spectral_norm(m, "weight", n_power_iterations=1)
            m.weight_gain = 1.0


def minibatch_std(x: Tensor, group_size: int, channels: int) -> Tensor:
    """Append `channels` feature maps holding the average standard deviation of the features
    over groups of examples (example i is in group i mod (N / G), as in StyleGAN2)."""
    n, c, h, w = x.shape
    g = n if group_size == 0 else min(group_size, n)
    while n % g:
        g -= 1
    f = channels
    if c % f:
        raise ValueError(f"minibatch std: {c} channels are not divisible into {f} groups")
    y = x.reshape(g, -1, f, c // f, h, w)
    y = (y - y.mean(dim=0)).pow(2).mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [n/g, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class StyleGAN2Discriminator(EnergyModelBase):
    """StyleGAN2 discriminator ('orig' | 'skip' | 'resnet'); score(x) = D(x), one logit."""

    def __init__(self, options: StyleGAN2DiscriminatorOptions = StyleGAN2DiscriminatorOptions()) -> None:
        o = options
        super().__init__((o.img_channels, o.resolution, o.resolution), None)
        self.options = o
        self.n_classes = o.n_classes
        res = [2**i for i in range(int(math.log2(o.resolution)), 1, -1)]  # R, ..., 4
        ch = {r: channels_at(r, o.channel_base, o.channel_max, o.capacity) for r in res}
        skip = o.architecture == "skip"
        self.fromrgb = nn.ModuleList(
            EqualConv2d(o.img_channels, ch[r], 1) for r in (res if skip else res[:1])
        )
        self.conv0 = nn.ModuleList(EqualConv2d(ch[r], ch[r], 3) for r in res[:-1])
        self.conv1 = nn.ModuleList(EqualConv2d(ch[r], ch[r // 2], 3, down=True) for r in res[:-1])
        self.shortcut = nn.ModuleList(
            EqualConv2d(ch[r], ch[r // 2], 1, bias=False, activation=False, down=True) for r in res[:-1]
        ) if o.architecture == "resnet" else None
        c4 = ch[4]
        self.epilogue_conv = EqualConv2d(c4 + o.mbstd_channels, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activation=True)
        self.cmap_dim = (o.cmap_dim or c4) if o.n_classes else 0
        self.out = EqualLinear(c4, self.cmap_dim or 1)
        if o.n_classes:
            self.label_embed = EqualLinear(o.n_classes, self.cmap_dim)
            self.label_mapping = nn.ModuleList(
                EqualLinear(self.cmap_dim, self.cmap_dim, lr_mul=o.mapping_lr_mul, activation=True)
                for _ in range(o.mapping_layers)
            )
        if o.spectral_norm:
            apply_spectral_norm(self)

    def cmap(self, y: Tensor) -> Tensor:
        """The projection vector of labels y: embedding, normalisation, label mapping [B, cmap_dim]."""
        c = normalize_2nd_moment(self.label_embed.one_hot(y))
        for layer in self.label_mapping:
            c = layer(c)
        return c

    def score(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        y = require_labels(self, y, x.shape[0])
        phi = self.features(x)
        if y is None:
            return phi.squeeze(1)
        return (phi * self.cmap(y)).sum(dim=1) * (1.0 / math.sqrt(self.cmap_dim))

    def energy(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return -self.score(x, y)  # flat reference (reference_std None)

    def features(self, x: Tensor) -> Tensor:
        """The last layer's output: [B, 1] (the logit) unconditional, [B, cmap_dim] phi(x) for
        the projection when conditional."""
        o = self.options
        skip = o.architecture == "skip"
        img = x
        h = self.fromrgb[0](img)
        for i in range(len(self.conv0)):
            if skip and i > 0:
                h = h + self.fromrgb[i](img)
            y = self.conv1[i](self.conv0[i](h))
            if self.shortcut is not None:
                y = (y + self.shortcut[i](h)) * math.sqrt(0.5)
            h = y
            if skip:
                img = downsample(img)
        if skip:
            h = h + self.fromrgb[-1](img)
        if o.mbstd_channels > 0:
            h = minibatch_std(h, o.mbstd_group_size, o.mbstd_channels)
        h = self.epilogue_conv(h)
        h = self.fc(h.flatten(1))
        return self.out(h)
