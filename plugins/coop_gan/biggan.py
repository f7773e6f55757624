"""BigGAN generator and discriminator (Brock, Donahue, Simonyan, ICLR 2019) for 32x32 and 64x64
images, as CoopInit's tables use them (Table 1: conditional CIFAR-10; Table 3: ImageNet 64x64).

The layouts are those of the authors' PyTorch release (BigGAN-PyTorch, `G_arch` / `D_arch` for
resolutions 32 and 64), with `ch` the width multiplier:

Generator: z (optionally split into hierarchical chunks) -> SN linear to a 4x4 map ->
residual up-blocks [BN(c) -> ReLU -> nearest x2 -> conv3x3 -> BN(c) -> ReLU -> conv3x3, plus a
1x1 conv on the upsampled shortcut] -> BN -> ReLU -> conv3x3 -> tanh.
  32 px: 4ch -> 4ch -> 4ch -> 4ch (8, 16, 32);   64 px: 16ch -> 16ch -> 8ch -> 4ch -> 2ch.
BN(c) is class-conditional batch norm: batch statistics without affine, then
x * (1 + gain(c)) + bias(c), where c is the shared class embedding (concatenated with the
block's z chunk when z is hierarchical) and gain/bias are bias-free SN linear maps; without a
shared embedding (the authors' CIFAR script) gain and bias are per-layer class embeddings.

Discriminator: residual down-blocks [(ReLU) -> conv3x3 -> ReLU -> conv3x3 -> avgpool2, shortcut
1x1 conv + avgpool], the first block without the leading ReLU ("optimised" first block), then
ReLU -> sum over space -> SN linear to one logit, plus the projection term
sum(embed(y) * h) (Miyato & Koyama 2018) with an SN class embedding.
  32 px: 3 -> 4ch (down) -> 4ch (down) -> 4ch -> 4ch;   64 px: 3 -> ch -> 2ch -> 4ch -> 8ch (down
  each) -> 16ch.
Non-local self-attention blocks (SAGAN) can follow the block at any listed resolution.

Spectral normalisation (Miyato et al. 2018) on every conv, linear and (in D) embedding; none on
G's class embedding (the authors found SN there cripples G).  Weights initialised orthogonally
(the paper), N(0, 0.02) or Xavier (the CIFAR script uses N(0, 0.02)).

Conditioning convention of the framework: a model is conditional when `n_classes` > 0; the
generator is called `forward(z, y)`, the discriminator `score(x, y)` / `energy(x, y)` with y the
int64 class indices [B] (coopcore.conditioning).  A conditional model called without y raises
ValueError, and so does an unconditional one given labels (`require_labels`).  With
n_classes = 0 the generator's BN is plain BN with a learned affine (or is conditioned on the z
chunks alone when z is hierarchical) and D drops the projection term.

Choices where the paper and the code are silent or that differ from the code (docs/biggan.md):

- Spectral norm is a parametrisation (torch.nn.utils.parametrize) whose power iteration runs
  only in training mode, with gradients enabled and the weight requiring a gradient, i.e. in a
  training forward pass.  The authors' layers iterate in every training-mode forward.  Ours keeps
  the descriptor's score a fixed function of x while CoopInit's Langevin dynamics differentiate
  it (the objective freezes D's parameters there), and under `torch.no_grad()`, so the energy is
  deterministic in train mode as well as in eval mode.  At registration the estimate is warmed
  up with 15 iterations (as torch's own spectral_norm does), so sigma is accurate from the first
  step.  Per-example: SN rescales weights and does not mix examples, and D has no batch norm.
- The authors' D at 32 px labels all four blocks "16" and would attach attention after each;
  here attention follows the first block whose output has the listed resolution (8 and 16 exist
  at 32 px).  The CIFAR preset has no attention, as the authors' CIFAR script.
- Hierarchical z needs a conditioning vector per block: with n_classes = 0 it is the z chunk
  alone; hierarchical z without a shared embedding is refused (the code would concatenate the
  raw class index with z).
"""
from __future__ import annotations

from typing import Callable, Literal, Optional

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from coopcore import EnergyModelBase, GeneratorBase, non_negative, positive, preset_options
from coopcore.conditioning import require_labels

# Channel multipliers of the authors' `G_arch` / `D_arch` at the two resolutions used here.
_G_ARCH: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {
    32: ((4, 4, 4), (4, 4, 4)),
    64: ((16, 16, 8, 4), (16, 8, 4, 2)),
}
# D: (in multipliers after the RGB input, out multipliers, downsample flags).
_D_ARCH: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]] = {
    32: ((4, 4, 4), (4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8), (1, 2, 4, 8, 16), (True, True, True, True, False)),
}
_BOTTOM = 4  # G starts from a 4x4 map at both resolutions (`bottom_width`).

Init = Literal["ortho", "N02", "xavier"]
BNMode = Literal["linear", "embedding", "plain"]


# --- spectral normalisation -------------------------------------------------------------------
class SpectralNorm(nn.Module):
    """Parametrisation W -> W / sigma(W), sigma the largest singular value of W viewed as
    [out, -1], estimated by power iteration with persistent vectors u, v (Miyato et al. 2018).

    The power iteration runs only in a training forward pass (module in training mode, grad
    enabled, the weight requiring grad); elsewhere the stored u, v are used as they are, so a
    network's output is a deterministic function of its input between optimiser steps.
    """

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, eps: float = 1e-8,
                 warmup: int = 15) -> None:
        super().__init__()
        self.n_power_iterations = int(n_power_iterations)
        self.eps = float(eps)
        mat = weight.detach().reshape(weight.shape[0], -1)
        u = F.normalize(torch.randn(mat.shape[0], dtype=mat.dtype, device=mat.device), dim=0, eps=self.eps)
        v = F.normalize(torch.randn(mat.shape[1], dtype=mat.dtype, device=mat.device), dim=0, eps=self.eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        self._power_iteration(mat, warmup)

    @torch.no_grad()
    def _power_iteration(self, mat: Tensor, n: int) -> None:
        for _ in range(n):
            # In place, so the buffers stay the same tensors (state_dict and deep copies, e.g.
            # the EMA generator's, keep pointing at them).
            self._v.copy_(F.normalize(mat.t().mv(self._u), dim=0, eps=self.eps))
            self._u.copy_(F.normalize(mat.mv(self._v), dim=0, eps=self.eps))

    def forward(self, weight: Tensor) -> Tensor:
        mat = weight.reshape(weight.shape[0], -1)
        if self.training and torch.is_grad_enabled() and weight.requires_grad:
            self._power_iteration(mat.detach(), self.n_power_iterations)
        # Clones: the buffers may be updated in place by a later forward before backward runs.
        u, v = self._u.clone(), self._v.clone()
        sigma = torch.dot(u, mat.mv(v))
        return weight / sigma


def _sn(module: nn.Module, iterations: int, eps: float) -> None:
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, iterations, eps))


def _init_weights(root: nn.Module, init: Init) -> None:
    """The authors' `init_weights`: every conv, linear and embedding weight (biases stay at
    their PyTorch defaults, as there).  Called before spectral norm is registered."""
    for m in root.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if init == "ortho":
                nn.init.orthogonal_(m.weight)
            elif init == "N02":
                nn.init.normal_(m.weight, 0.0, 0.02)
            else:
                nn.init.xavier_uniform_(m.weight)


def _apply_sn(root: nn.Module, iterations: int, eps: float, skip: tuple[nn.Module, ...] = ()) -> None:
    for m in list(root.modules()):
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and not any(m is s for s in skip):
            _sn(m, iterations, eps)


# --- shared layers ----------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """SAGAN's non-local block as in BigGAN: theta, phi (C/8) and g (C/2) 1x1 convs, phi and g
    max-pooled 2x2 (a quarter of the keys), softmax over keys, 1x1 conv o back to C, and a
    learned residual gain gamma starting at 0 (the block starts as the identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 8:
            raise ValueError(f"self-attention needs at least 8 channels, got {channels}")
        self.channels = channels
        self.theta = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.phi = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.g = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.o = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        theta = self.theta(x).flatten(2)  # [B, C/8, HW]
        phi = F.max_pool2d(self.phi(x), 2).flatten(2)  # [B, C/8, HW/4]
        g = F.max_pool2d(self.g(x), 2).flatten(2)  # [B, C/2, HW/4]
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # [B, HW, HW/4]
        o = self.o((g @ attn.transpose(1, 2)).view(b, self.channels // 2, h, w))
        return x + self.gamma * o


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose affine parameters come from a conditioning vector.

    mode "linear": gain = 1 + W_g c, bias = W_b c (bias-free linear maps of c: the shared
    embedding, with the z chunk under hierarchical z).  mode "embedding": gain = 1 + E_g[y],
    bias = E_b[y] (per-layer class embeddings; the authors' CIFAR script).  mode "plain": BN
    with its own learned affine (unconditional).
    """

    def __init__(self, channels: int, mode: BNMode, cond_dim: int = 0,
                 n_classes: int = 0, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.mode = mode
        self.bn = nn.BatchNorm2d(channels, eps=eps, momentum=momentum, affine=(mode == "plain"))
        self.gain: nn.Module
        self.bias: nn.Module
        if mode == "linear":
            self.gain = nn.Linear(cond_dim, channels, bias=False)
            self.bias = nn.Linear(cond_dim, channels, bias=False)
        elif mode == "embedding":
            self.gain = nn.Embedding(n_classes, channels)
            self.bias = nn.Embedding(n_classes, channels)

    def forward(self, x: Tensor, cond: Optional[Tensor]) -> Tensor:
        out = self.bn(x)
        if self.mode == "plain":
            return out
        assert cond is not None
        gain = 1.0 + self.gain(cond)
        bias = self.bias(cond)
        return out * gain[:, :, None, None] + bias[:, :, None, None]


# --- generator --------------------------------------------------------------------------------
_resolution = attrs.validators.in_(tuple(sorted(_G_ARCH)))


def _attention_resolutions(instance: object, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    """Validator: positive integer resolutions."""
    if any(int(v) != v or v <= 0 for v in value):
        raise ValueError(f"'{attribute.name}' must list positive resolutions, got {list(value)!r}")


@attrs.frozen(kw_only=True)
class BigGANGeneratorOptions:
    """BigGAN generator (BigGAN-PyTorch `Generator`, resolutions 32 and 64)."""

    # Output side in pixels: 32 (CIFAR layout, 3 up-blocks of 4ch) or 64 (4 up-blocks).
    resolution: int = attrs.field(default=32, validator=_resolution)
    # Output channels (3 for RGB; 1 for the digits used by the tests).
    img_channels: int = attrs.field(default=3, validator=positive)
    # Width multiplier `G_ch` (authors' default and CIFAR script: 64).
    ch: int = attrs.field(default=64, validator=positive)
    # Latent size `dim_z` (authors: 128; with hierarchical z rounded down to a multiple of the
    # number of chunks, n_blocks + 1).
    dim_z: int = attrs.field(default=128, validator=positive)
    # Resolutions after whose up-block a self-attention block follows (8, 16, ... resolution);
    # [] = none (the CIFAR script: G_attn 0).
    attention: tuple[int, ...] = attrs.field(default=(), validator=_attention_resolutions)
    # Hierarchical latents: z is split into n_blocks + 1 chunks, the first feeds the linear
    # layer, chunk i+1 is concatenated with the class embedding for block i's BN.
    hier: bool = False
    # One class embedding shared by all BN layers (BigGAN), mapped per layer by SN linears;
    # false = separate class embeddings per BN layer (the authors' CIFAR script).  Default: the
    # code's Generator default (true).
    shared: bool = True
    # Size of the shared embedding; 0 = dim_z (the code's rule).  BigGAN ImageNet: 128.
    shared_dim: int = attrs.field(default=0, validator=non_negative)
    # Number of classes; 0 = unconditional (plain BN with a learned affine).
    n_classes: int = attrs.field(default=0, validator=non_negative)
    # Weight init of every conv/linear/embedding: "ortho" (paper), "N02" (CIFAR script), "xavier".
    init: Init = attrs.field(default="ortho", validator=attrs.validators.in_(("ortho", "N02", "xavier")))
    # Spectral norm on every conv and linear of G (not on the class embeddings).
    spectral_norm: bool = True
    # Spectral norm: power iterations per training forward (`num_G_SV_itrs`, code default 1).
    sn_iterations: int = attrs.field(default=1, validator=positive)
    # Spectral norm: epsilon of the u, v normalisation (`SN_eps`, the training script's 1e-8).
    sn_eps: float = attrs.field(default=1e-8, validator=positive)
    # Batch-norm epsilon (`BN_eps`, code default 1e-5).
    bn_eps: float = attrs.field(default=1e-5, validator=positive)
    # Batch-norm running-statistics momentum (PyTorch's and the code's 0.1).
    bn_momentum: float = attrs.field(default=0.1, validator=positive)
    # Observation noise of the Generator protocol (no GAN loss uses it).
    sigma: float = attrs.field(default=0.3, validator=positive)

    def __attrs_post_init__(self) -> None:
        sides = [_BOTTOM * 2 ** (i + 1) for i in range(len(_G_ARCH[self.resolution][0]))]
        bad = [r for r in self.attention if r not in sides]
        if bad:
            raise ValueError(f"'attention' resolutions {bad} are not block outputs of the {self.resolution}-px "
                             f"generator; valid: {sides}")
        if self.hier and self.n_classes > 0 and not self.shared:
            raise ValueError("'hier' with n_classes > 0 needs 'shared' = true (the z chunks join the shared "
                             "class embedding)")
        slots = len(_G_ARCH[self.resolution][0]) + 1
        if self.hier and self.dim_z < slots:
            raise ValueError(f"'dim_z' must be at least {slots} (one entry per chunk) with 'hier'")


class _GBlock(nn.Module):
    """Up-block: BN -> ReLU -> x2 -> conv -> BN -> ReLU -> conv, plus the upsampled 1x1-conv
    shortcut (learnable because the block upsamples)."""

    def __init__(self, c_in: int, c_out: int, bn: Callable[[int], ConditionalBatchNorm]) -> None:
        super().__init__()
        self.bn1 = bn(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2 = bn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_sc = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor, cond: Optional[Tensor]) -> Tensor:
        h = F.relu(self.bn1(x, cond))
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.conv_sc(x)


class BigGANGenerator(GeneratorBase):
    """BigGAN generator; `forward(z, y=None)` with y int64 class indices when n_classes > 0."""

    def __init__(self, options: BigGANGeneratorOptions = BigGANGeneratorOptions()) -> None:
        o = options
        ins, outs = (tuple(o.ch * m for m in ms) for ms in _G_ARCH[o.resolution])
        n_blocks = len(ins)
        # Hierarchical z: one chunk for the linear layer and one per block, dim_z rounded down to
        # a multiple of the number of chunks (the code's rule).
        num_slots = n_blocks + 1 if o.hier else 1
        z_chunk = o.dim_z // num_slots if o.hier else 0
        dim_z = z_chunk * num_slots if o.hier else o.dim_z
        super().__init__((dim_z,), (o.img_channels, o.resolution, o.resolution), o.sigma)
        self.num_slots, self.z_chunk = num_slots, z_chunk
        self.options = o
        self.n_classes = int(o.n_classes)
        self.shared_dim = o.shared_dim if o.shared_dim > 0 else o.dim_z
        mode: BNMode
        if o.n_classes > 0 and o.shared:
            mode, cond_dim = "linear", self.shared_dim + self.z_chunk
        elif o.n_classes > 0:
            mode, cond_dim = "embedding", 0
        elif o.hier:
            mode, cond_dim = "linear", self.z_chunk  # unconditional: BN conditioned on the z chunk alone
        else:
            mode, cond_dim = "plain", 0
        self.bn_mode: BNMode = mode

        def bn(c: int) -> ConditionalBatchNorm:
            return ConditionalBatchNorm(c, self.bn_mode, cond_dim, o.n_classes, o.bn_eps, o.bn_momentum)

        # G's class embedding is never spectrally normalised (the authors: SN there cripples G).
        self.shared: Optional[nn.Embedding] = (nn.Embedding(o.n_classes, self.shared_dim)
                                               if o.n_classes > 0 and o.shared else None)
        self.linear = nn.Linear(dim_z // self.num_slots, ins[0] * _BOTTOM**2)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        side = _BOTTOM
        for i, (a, b) in enumerate(zip(ins, outs)):
            self.blocks.append(_GBlock(a, b, bn))
            side *= 2
            if side in o.attention:
                self.attn[str(i)] = SelfAttention(b)
        self.out_bn = nn.BatchNorm2d(outs[-1], eps=o.bn_eps, momentum=o.bn_momentum)
        self.out_conv = nn.Conv2d(outs[-1], o.img_channels, 3, padding=1)
        _init_weights(self, o.init)
        if o.spectral_norm:
            skip: list[nn.Module] = [m for m in self.modules() if isinstance(m, nn.Embedding)]
            _apply_sn(self, o.sn_iterations, o.sn_eps, tuple(skip))

    def forward(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        y = require_labels(self, y, z.shape[0])
        z = z.reshape(z.shape[0], -1)
        conds: list[Optional[Tensor]]
        if self.bn_mode == "linear":
            base = [self.shared(y)] if self.shared is not None and y is not None else []
            if self.options.hier:
                chunks = torch.split(z, self.z_chunk, dim=1)
                z = chunks[0]
                conds = [torch.cat(base + [c], dim=1) for c in chunks[1:]]
            else:
                conds = [base[0]] * len(self.blocks)
        elif self.bn_mode == "embedding":
            conds = [y] * len(self.blocks)
        else:
            conds = [None] * len(self.blocks)
        h = self.linear(z).view(z.shape[0], -1, _BOTTOM, _BOTTOM)
        for i, block in enumerate(self.blocks):
            h = block(h, conds[i])
            if str(i) in self.attn:
                h = self.attn[str(i)](h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


# --- discriminator ----------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class BigGANDiscriminatorOptions:
    """BigGAN discriminator (BigGAN-PyTorch `Discriminator`, resolutions 32 and 64)."""

    # Input side in pixels: 32 or 64.
    resolution: int = attrs.field(default=32, validator=_resolution)
    # Input channels.
    img_channels: int = attrs.field(default=3, validator=positive)
    # Width multiplier `D_ch` (authors' default and CIFAR script: 64).
    ch: int = attrs.field(default=64, validator=positive)
    # Resolutions after whose block self-attention follows (the block outputs: 16, 8 at 32 px;
    # 32, 16, 8, 4 at 64 px); [] = none (the CIFAR script: D_attn 0).
    attention: tuple[int, ...] = attrs.field(default=(), validator=_attention_resolutions)
    # Number of classes; 0 = unconditional (no projection term).
    n_classes: int = attrs.field(default=0, validator=non_negative)
    # Wide blocks (hidden width = output width, BigGAN / SAGAN) or skinny (= input width, SNGAN).
    wide: bool = True
    # Weight init of every conv/linear/embedding: "ortho" (paper), "N02" (CIFAR script), "xavier".
    init: Init = attrs.field(default="ortho", validator=attrs.validators.in_(("ortho", "N02", "xavier")))
    # Spectral norm on every conv, linear and the class embedding (the code has no option to
    # turn it off in D; false is for experiments only).
    spectral_norm: bool = True
    # Spectral norm: power iterations per training forward (`num_D_SV_itrs`, code default 1).
    sn_iterations: int = attrs.field(default=1, validator=positive)
    # Spectral norm: epsilon of the u, v normalisation (`SN_eps`, the training script's 1e-8).
    sn_eps: float = attrs.field(default=1e-8, validator=positive)

    def __attrs_post_init__(self) -> None:
        sides = sorted(set(_d_sides(self.resolution)))
        bad = [r for r in self.attention if r not in sides]
        if bad:
            raise ValueError(f"'attention' resolutions {bad} are not block outputs of the {self.resolution}-px "
                             f"discriminator; valid: {sides}")


def _d_sides(resolution: int) -> list[int]:
    side, sides = resolution, []
    for down in _D_ARCH[resolution][2]:
        side = side // 2 if down else side
        sides.append(side)
    return sides


class _DBlock(nn.Module):
    """Down-block: [ReLU] -> conv -> ReLU -> conv -> [avgpool], plus the shortcut (1x1 conv when
    the width changes or the block downsamples; pooled before the conv in the first block,
    after it in the others, as in the authors' code)."""

    def __init__(self, c_in: int, c_out: int, wide: bool, preactivation: bool, downsample: bool) -> None:
        super().__init__()
        hidden = c_out if wide else c_in
        self.preactivation, self.downsample = preactivation, downsample
        self.conv1 = nn.Conv2d(c_in, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, c_out, 3, padding=1)
        self.conv_sc: Optional[nn.Conv2d] = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or downsample) else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.preactivation:
            if self.conv_sc is not None:
                x = self.conv_sc(x)
            return F.avg_pool2d(x, 2) if self.downsample else x
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return self.conv_sc(x) if self.conv_sc is not None else x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


class BigGANDiscriminator(EnergyModelBase):
    """BigGAN discriminator as CoopInit's descriptor: score(x, y) = D(x, y), one logit per
    example, flat reference (p(x) = exp(D(x)) / Z, CoopInit eq. 1)."""

    def __init__(self, options: BigGANDiscriminatorOptions = BigGANDiscriminatorOptions()) -> None:
        o = options
        super().__init__((o.img_channels, o.resolution, o.resolution), None)
        self.options = o
        self.n_classes = int(o.n_classes)
        in_m, out_m, downs = _D_ARCH[o.resolution]
        ins = (o.img_channels,) + tuple(o.ch * m for m in in_m)
        outs = tuple(o.ch * m for m in out_m)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        placed: set[int] = set()
        for i, (a, b, side) in enumerate(zip(ins, outs, _d_sides(o.resolution))):
            self.blocks.append(_DBlock(a, b, o.wide, preactivation=i > 0, downsample=downs[i]))
            if side in o.attention and side not in placed:
                self.attn[str(i)] = SelfAttention(b)
                placed.add(side)
        self.linear = nn.Linear(outs[-1], 1)
        self.embed: Optional[nn.Embedding] = nn.Embedding(o.n_classes, outs[-1]) if o.n_classes > 0 else None
        _init_weights(self, o.init)
        if o.spectral_norm:
            _apply_sn(self, o.sn_iterations, o.sn_eps)

    def features(self, x: Tensor) -> Tensor:
        """h: the blocks' output after ReLU, summed over space ([B, 16ch] / [B, 4ch])."""
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if str(i) in self.attn:
                h = self.attn[str(i)](h)
        return F.relu(h).sum(dim=(2, 3))

    def score(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        y = require_labels(self, y, x.shape[0])
        h = self.features(x)
        out = self.linear(h).squeeze(1)
        if self.embed is not None and y is not None:
            out = out + (self.embed(y) * h).sum(dim=1)  # projection discriminator
        return out

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self.score(x, y)

    def energy(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return -self.score(x, y)  # flat reference: E = -D


def parameter_count(module: nn.Module) -> int:
    """Number of trainable scalars (spectral norm's u, v are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


# --- registration (called from plugin.py's hooks) -------------------------------------------
BIGGAN32_G = ("BigGAN generator 32x32 (BigGAN-PyTorch CIFAR script): z128 -> 4x4x256 -> 3 residual up-blocks "
              "of 256 with class-conditional BN (per-layer class embeddings), no attention, SN, N(0, 0.02) init")
BIGGAN32_D = ("BigGAN discriminator 32x32 (BigGAN-PyTorch CIFAR script): 4 residual blocks of 256 (2 down), "
              "ReLU + sum pooling, SN linear + projection, no attention, N(0, 0.02) init")
BIGGAN64_G = ("BigGAN generator 64x64: hierarchical z120 (5 chunks of 24), shared class embedding 128, "
              "4x4x1024 -> 1024-512-256-128 residual up-blocks, attention at 32x32, SN, orthogonal init")
BIGGAN64_D = ("BigGAN discriminator 64x64: residual blocks 64-128-256-512 (down) -1024, attention at 32x32, "
              "ReLU + sum pooling, SN linear + projection, orthogonal init")
# The presets carry the architectures of the tables; `n_classes` stays 0 by default (it is a
# property of the data set: the recipes set 10 for CIFAR-10 and 1000 for ImageNet).
_G32 = dict(resolution=32, ch=64, dim_z=128, attention=(), hier=False, shared=False, init="N02")
_D32 = dict(resolution=32, ch=64, attention=(), init="N02")
_G64 = dict(resolution=64, ch=64, dim_z=120, attention=(32,), hier=True, shared=True, shared_dim=128, init="ortho")
_D64 = dict(resolution=64, ch=64, attention=(32,), init="ortho")


def register_biggan_discriminators(registry) -> None:  # type: ignore[no-untyped-def]
    """The BigGAN discriminators: configurable, and the 32x32 / 64x64 presets."""
    registry.add("coopinit.discriminator.biggan", BigGANDiscriminator, BigGANDiscriminatorOptions,
                 "configurable BigGAN discriminator (32 | 64 px, width ch, attention, projection for n_classes > 0)")
    registry.add("coopinit.discriminator.biggan32", BigGANDiscriminator,
                 preset_options(BigGANDiscriminatorOptions, "BigGAN32DiscriminatorOptions", BIGGAN32_D, **_D32),
                 BIGGAN32_D)
    registry.add("coopinit.discriminator.biggan64", BigGANDiscriminator,
                 preset_options(BigGANDiscriminatorOptions, "BigGAN64DiscriminatorOptions", BIGGAN64_D, **_D64),
                 BIGGAN64_D)


def register_biggan_generators(registry) -> None:  # type: ignore[no-untyped-def]
    """The BigGAN generators: configurable, and the 32x32 / 64x64 presets."""
    registry.add("coopinit.generator.biggan", BigGANGenerator, BigGANGeneratorOptions,
                 "configurable BigGAN generator (32 | 64 px, width ch, attention, hierarchical z, shared embedding)")
    registry.add("coopinit.generator.biggan32", BigGANGenerator,
                 preset_options(BigGANGeneratorOptions, "BigGAN32GeneratorOptions", BIGGAN32_G, **_G32), BIGGAN32_G)
    registry.add("coopinit.generator.biggan64", BigGANGenerator,
                 preset_options(BigGANGeneratorOptions, "BigGAN64GeneratorOptions", BIGGAN64_G, **_G64), BIGGAN64_G)


__all__ = [
    "BigGANDiscriminator", "BigGANDiscriminatorOptions", "BigGANGenerator", "BigGANGeneratorOptions",
    "ConditionalBatchNorm", "SelfAttention", "SpectralNorm", "parameter_count", "register_biggan_discriminators",
    "register_biggan_generators",
]

