"""CUT (Park, Efros, Zhang, Zhu, ECCV 2020: contrastive unpaired translation) with the PatchNCE
loss, and CoopInit's cooperative initialisation on it (Zhao, Xie, Li, AAAI 2023, Table 4).

Registered:

- ``cut.generator.resnet``: CUT's ResNet generator (also the home of the PatchNCE projection
  head, see `CutGenerator`);
- ``cut.discriminator.patchgan``: the 70x70 PatchGAN discriminator;
- objectives ``cut`` (CUT / FastCUT) and ``coopinit.cut`` (a cooperative stage on the first
  ``n_coop`` source images, then CUT).

Both objectives need an unpaired dataset (`unpaired_folders`, `unpaired_digits`): the trainer's
batches are source-domain images, the dataset's ``target`` set supplies the target domain
(plugins/coop_datasets/unpaired.py).  docs/cut.md lists the options and every choice made where
the papers are silent; the main ones are repeated at the code they concern.

Networks (CUT's defaults, networks.py of the authors' code as facts):

- generator: reflection pad 3, conv 7x7 -> ngf, instance norm, ReLU; two downsamplings (conv
  3x3 to 2x channels, IN, ReLU, then a [1, 2, 1] blur with stride 2 (``antialias = true``, CUT's
  default) or a stride-2 conv 3x3 (``antialias = false``)); ``n_blocks`` residual blocks
  (reflection pad, conv 3x3, IN, ReLU, reflection pad, conv 3x3, IN; 9 at 256 px); two
  upsamplings (a [1, 3, 3, 1] transposed blur then a conv 3x3 (``antialias_up = true``, CUT's
  default) or a transposed conv 3x3 stride 2); reflection pad 3, conv 7x7 to the output
  channels, tanh.  Convs have biases (CUT: instance norm without affine parameters).  Weights
  Xavier-normal with gain 0.02, biases 0 (CUT: ``init_type = xavier``, ``init_gain = 0.02``).
- PatchNCE layers: the outputs of the generator's sequential layers ``nce_layers`` (CUT:
  0, 4, 8, 12, 16 = the padded input, the first and second downsampling convs, the first and the
  fifth residual block); the projection head is, per layer, Linear(C, 256), ReLU,
  Linear(256, 256) on ``num_patches`` = 256 locations drawn without replacement (the same
  locations for every image of the batch and for the source and its translation), then L2
  normalised (x / (||x|| + 1e-7)).
- discriminator: conv 4x4 -> ndf, LeakyReLU 0.2 (no norm), then ``n_layers - 1`` convs 4x4 to
  min(2^n, 8) ndf with IN + LeakyReLU, each followed by the stride-2 blur (``antialias``) or
  itself stride 2; conv 4x4 stride 1 to 8 ndf (IN, LeakyReLU); conv 4x4 stride 1 to one logit
  per patch (30 x 30 patches of 70 x 70 pixels at 256 px).

The descriptor's score, one number per image (CoopInit's Langevin dynamics and its descriptor
update need f(x) per example): the mean of the patch logits.  The sum would only rescale the
Langevin step size by the number of patches (900 at 256 px); the mean keeps eta's meaning
independent of the image size.  The LSGAN losses of the CUT stage use the patch map itself, as
CUT does.

PatchNCE (CUT eq. 2-5): for each layer, the projected features of the translation at the sampled
locations are queries q, those of the source at the same locations keys k (detached, as in
CUT's code); for each query the logits are [q . k_same, q . k_other (the other locations of the
same image, with the location itself masked to -10)] / tau, and the loss is the cross-entropy
with the positive at position 0, averaged over locations, then over layers.  CUT's G loss:
lambda_GAN * LSGAN(D(G(x)), 1) + lambda_NCE * (NCE(x, G(x)) + NCE(y, G(y))) / 2 with the
identity term on target images y (CUT), or lambda_NCE * NCE(x, G(x)) without it (FastCUT).
"""
from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Optional, Sequence

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coopcore import (
    Batch,
    EnergyModelBase,
    GeneratorBase,
    Parts,
    StepResult,
    UsageError,
    all_positive,
    contrastive_update,
    non_negative,
    positive,
)

from .coopinit import langevin_revision
from .objective import frozen_parameters

# ---------------------------------------------------------------------------------------
# building blocks


def _xavier_init(module: nn.Module, gain: float) -> None:
    """CUT's ``init_weights(init_type='xavier', init_gain)``: Xavier-normal conv/linear weights
    with `gain`, zero biases (instance norm here has no parameters)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _binomial(taps: Sequence[float]) -> Tensor:
    a = torch.tensor(taps, dtype=torch.float32)
    f = a[:, None] * a[None, :]
    return f / f.sum()


class BlurDownsample(nn.Module):
    """Anti-aliased downsampling by 2: reflection pad 1, depthwise [1, 2, 1] x [1, 2, 1] / 16
    blur with stride 2 (Zhang 2019, CUT's ``Downsample``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", _binomial((1.0, 2.0, 1.0))[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=2, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """Anti-aliased upsampling by 2: replication pad 1, depthwise transposed convolution with the
    [1, 3, 3, 1] x [1, 3, 3, 1] / 64 blur times 4, stride 2, cropped to exactly twice the size
    (CUT's ``Upsample``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("kernel", (_binomial((1.0, 3.0, 3.0, 1.0)) * 4.0)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernel, stride=2, padding=2,
                               groups=x.shape[1])
        return y[:, :, 1:-1, 1:-1]


def _norm(kind: str, channels: int) -> nn.Module:
    # CUT's instance norm: no affine parameters, no running statistics.
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False) if kind == "instance" else nn.Identity()


class ResnetBlock(nn.Module):
    """x + [reflect pad 1, conv 3x3, norm, ReLU, reflect pad 1, conv 3x3, norm](x)."""

    def __init__(self, dim: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(norm, dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(norm, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def l2_normalise(x: Tensor) -> Tensor:
    """x / (||x||_2 + 1e-7) along dim 1 (CUT's ``Normalize``)."""
    return x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-7)


class PatchProjector(nn.Module):
    """CUT's ``PatchSampleF`` with the MLP (``netF = mlp_sample``): per feature layer, features
    at sampled locations -> Linear(C, dim), ReLU, Linear(dim, dim) -> L2 normalised."""

    def __init__(self, in_channels: Sequence[int], dim: int, use_mlp: bool = True) -> None:
        super().__init__()
        self.use_mlp = use_mlp
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)) if use_mlp else nn.Identity()
            for c in in_channels)

    @staticmethod
    def draw_ids(feats: Sequence[Tensor], num_patches: int, generator: torch.Generator) -> list[Tensor]:
        """For each layer, min(num_patches, H * W) distinct flat locations (a random permutation's
        head), from `generator`; the same for every image of the batch."""
        ids = []
        for f in feats:
            hw = f.shape[2] * f.shape[3]
            perm = torch.randperm(hw, generator=generator, device=generator.device).to(f.device)
            ids.append(perm[: min(num_patches, hw)])
        return ids

    def forward(self, feats: Sequence[Tensor], patch_ids: Sequence[Tensor]) -> list[Tensor]:
        """[B * P, dim] per layer: image-major (rows b * P .. b * P + P - 1 are image b)."""
        out = []
        for f, ids, head in zip(feats, patch_ids, self.heads):
            flat = f.permute(0, 2, 3, 1).flatten(1, 2)  # [B, H * W, C]
            picked = flat[:, ids, :].flatten(0, 1)  # [B * P, C]
            out.append(l2_normalise(head(picked)))
        return out


def patch_nce_loss(feat_q: Tensor, feat_k: Tensor, batch_size: int, temperature: float = 0.07,
                   all_negatives_from_minibatch: bool = False) -> Tensor:
    """PatchNCE per query location, [B * P].

    `feat_q`, `feat_k`: [B * P, D] (image-major), normalised projections of the translation
    (queries) and the source (keys, detached here).  For query i of image b the logits are
    ``q_i . k_i`` (positive) and ``q_i . k_j`` for the other locations j of image b (negatives;
    j = i is masked to -10), all divided by `temperature`; the loss is the cross-entropy with the
    positive as the class.  `all_negatives_from_minibatch` treats the whole batch as one image
    (CUT's single-image setting).
    """
    n, dim = feat_q.shape
    feat_k = feat_k.detach()
    l_pos = (feat_q * feat_k).sum(1, keepdim=True)  # [N, 1]
    groups = 1 if all_negatives_from_minibatch else batch_size
    q = feat_q.reshape(groups, -1, dim)
    k = feat_k.reshape(groups, -1, dim)
    p = q.shape[1]
    l_neg = torch.bmm(q, k.transpose(1, 2))  # [G, P, P]
    eye = torch.eye(p, device=feat_q.device, dtype=torch.bool)[None]
    l_neg = l_neg.masked_fill(eye, -10.0).reshape(-1, p)
    logits = torch.cat((l_pos, l_neg), dim=1) / temperature
    target = torch.zeros(n, dtype=torch.long, device=feat_q.device)
    return F.cross_entropy(logits, target, reduction="none")


# ---------------------------------------------------------------------------------------
# the generator


_NORMS = attrs.validators.in_(("instance", "none"))


def _square_image(shape: tuple[int, ...], field: str) -> None:
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"'{field}' must be [C, S, S] (square images), got {list(shape)}")


@attrs.frozen(kw_only=True)
class CutGeneratorOptions:
    """CUT's ResNet generator (``resnet_9blocks``) with the PatchNCE projection head."""

    # Image shape [C, S, S] in and out (S divisible by 2^n_downsampling).  CUT: [3, 256, 256].
    input_shape: tuple[int, int, int] = attrs.field(default=(3, 256, 256), validator=all_positive)
    # Channels after the first conv (ngf); doubled at each downsampling.  CUT: 64.
    ngf: int = attrs.field(default=64, validator=positive)
    # Residual blocks at the bottleneck.  CUT: 9 (resnet_9blocks) at 256 px.
    n_blocks: int = attrs.field(default=9, validator=non_negative)
    # Downsamplings (and as many upsamplings).  CUT: 2.
    n_downsampling: int = attrs.field(default=2, validator=positive)
    # "instance" (CUT's normG) or "none".
    norm: Literal["instance", "none"] = attrs.field(default="instance", validator=_NORMS)
    # Blurred downsampling (CUT's default; no_antialias false) instead of stride-2 convs.
    antialias: bool = True
    # Blurred upsampling + conv (CUT's default; no_antialias_up false) instead of transposed convs.
    antialias_up: bool = True
    # Sequential-layer indices whose outputs PatchNCE compares (CUT: 0, 4, 8, 12, 16).
    nce_layers: tuple[int, ...] = attrs.field(default=(0, 4, 8, 12, 16), converter=tuple)
    # Width of the projection MLP (CUT's netF_nc: 256).
    mlp_dim: int = attrs.field(default=256, validator=positive)
    # The MLP head (CUT's netF = mlp_sample); false = raw sampled features (netF = sample).
    mlp: bool = True
    # Xavier-normal gain (CUT: 0.02).
    init_gain: float = attrs.field(default=0.02, validator=positive)
    # The Generator protocol's observation noise; CUT and CoopInit's losses do not use it.
    sigma: float = attrs.field(default=1.0, validator=positive)

    def __attrs_post_init__(self) -> None:
        _square_image(self.input_shape, "input_shape")
        if self.input_shape[1] % (2 ** self.n_downsampling):
            raise ValueError(f"'input_shape' side {self.input_shape[1]} must be divisible by "
                             f"2^n_downsampling = {2 ** self.n_downsampling}")
        if not self.nce_layers or len(set(self.nce_layers)) != len(self.nce_layers) or \
                list(self.nce_layers) != sorted(self.nce_layers) or self.nce_layers[0] < 0:
            raise ValueError("'nce_layers' must be distinct increasing layer indices >= 0, "
                             f"got {list(self.nce_layers)}")


class CutGenerator(GeneratorBase):
    """CUT's ResNet generator: an image-to-image map, plus `encode` (features at the NCE layers)
    and `projector` (the PatchNCE MLP head, trained with the generator by its optimiser: CUT's
    separate Adam for F has the same settings, and Adam is per parameter, so one optimiser over
    both is the same update).

    As a `Generator` its "latent" is a source image: `latent_shape` = `output_shape` = the image
    shape.  `sample_latent` draws N(0, I) images, used only by the framework's generic contract
    check; the translation objectives feed it source images.
    """

    def __init__(self, options: CutGeneratorOptions = CutGeneratorOptions()) -> None:
        o = options
        super().__init__(o.input_shape, o.input_shape, o.sigma)
        self.options = o
        c_in = o.input_shape[0]
        layers: list[nn.Module] = []
        channels: list[int] = []  # output channels of each sequential layer

        def add(module: nn.Module, c: int) -> None:
            layers.append(module)
            channels.append(c)

        add(nn.ReflectionPad2d(3), c_in)
        add(nn.Conv2d(c_in, o.ngf, 7), o.ngf)
        add(_norm(o.norm, o.ngf), o.ngf)
        add(nn.ReLU(True), o.ngf)
        c = o.ngf
        for _ in range(o.n_downsampling):
            if o.antialias:
                add(nn.Conv2d(c, 2 * c, 3, padding=1), 2 * c)
                add(_norm(o.norm, 2 * c), 2 * c)
                add(nn.ReLU(True), 2 * c)
                add(BlurDownsample(2 * c), 2 * c)
            else:
                add(nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), 2 * c)
                add(_norm(o.norm, 2 * c), 2 * c)
                add(nn.ReLU(True), 2 * c)
            c *= 2
        for _ in range(o.n_blocks):
            add(ResnetBlock(c, o.norm), c)
        for _ in range(o.n_downsampling):
            if o.antialias_up:
                add(BlurUpsample(c), c)
                add(nn.Conv2d(c, c // 2, 3, padding=1), c // 2)
            else:
                add(nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1), c // 2)
            add(_norm(o.norm, c // 2), c // 2)
            add(nn.ReLU(True), c // 2)
            c //= 2
        add(nn.ReflectionPad2d(3), c)
        add(nn.Conv2d(c, c_in, 7), c_in)
        add(nn.Tanh(), c_in)
        if o.nce_layers[-1] >= len(layers):
            raise ValueError(f"'nce_layers' {list(o.nce_layers)}: this generator has layers 0..{len(layers) - 1}")
        self.model = nn.Sequential(*layers)
        self.nce_layers = tuple(o.nce_layers)
        self.projector = PatchProjector([channels[i] for i in self.nce_layers], o.mlp_dim, o.mlp)
        _xavier_init(self, o.init_gain)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def encode(self, x: Tensor) -> list[Tensor]:
        """The outputs of the layers `nce_layers` (the forward pass stops after the last one)."""
        feats = []
        last = self.nce_layers[-1]
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in self.nce_layers:
                feats.append(x)
            if i == last:
                break
        return feats


# ---------------------------------------------------------------------------------------
# the discriminator


@attrs.frozen(kw_only=True)
class PatchGANOptions:
    """The PatchGAN discriminator (pix2pix / CycleGAN / CUT ``basic``: 70x70 patches at n_layers 3)."""

    # Image shape [C, S, S].  CUT: [3, 256, 256].
    input_shape: tuple[int, int, int] = attrs.field(default=(3, 256, 256), validator=all_positive)
    # Channels of the first conv (ndf).  CUT: 64.
    ndf: int = attrs.field(default=64, validator=positive)
    # Downsampling conv layers (CUT ``basic``: 3; 2 fits 16 px images).
    n_layers: int = attrs.field(default=3, validator=positive)
    # "instance" (CUT's normD) or "none".
    norm: Literal["instance", "none"] = attrs.field(default="instance", validator=_NORMS)
    # Stride-1 conv + stride-2 blur (CUT's default) instead of stride-2 convs.
    antialias: bool = True
    # Xavier-normal gain (CUT: 0.02).
    init_gain: float = attrs.field(default=0.02, validator=positive)

    def __attrs_post_init__(self) -> None:
        _square_image(self.input_shape, "input_shape")
        side = patch_map_side(self.input_shape[1], self.n_layers, self.antialias)
        if side < 1:
            raise ValueError(f"'input_shape' side {self.input_shape[1]} is too small for n_layers = {self.n_layers} "
                             "(the patch map would be empty); lower n_layers or use larger images")


def patch_map_side(side: int, n_layers: int, antialias: bool) -> int:
    """The side of the PatchGAN's logit map for an input side."""
    for _ in range(n_layers):
        if antialias:
            side = side - 1  # conv 4x4, stride 1, padding 1
            side = (side - 1) // 2 + 1  # blur 3x3 stride 2 with padding 1
        else:
            side = (side - 2) // 2 + 1  # conv 4x4, stride 2, padding 1
        if side < 1:
            return 0
    return side - 2  # two convs 4x4, stride 1, padding 1


class PatchGANDiscriminator(EnergyModelBase):
    """PatchGAN: `patch_logits(x)` [B, 1, h, w]; the descriptor's score is their mean per image."""

    def __init__(self, options: PatchGANOptions = PatchGANOptions()) -> None:
        super().__init__(options.input_shape, None)
        o = options
        self.options = o
        c_in, ndf = o.input_shape[0], o.ndf
        layers: list[nn.Module] = []
        if o.antialias:
            layers += [nn.Conv2d(c_in, ndf, 4, 1, 1), nn.LeakyReLU(0.2, True), BlurDownsample(ndf)]
        else:
            layers += [nn.Conv2d(c_in, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, o.n_layers):
            prev, mult = mult, min(2 ** n, 8)
            if o.antialias:
                layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), _norm(o.norm, ndf * mult),
                           nn.LeakyReLU(0.2, True), BlurDownsample(ndf * mult)]
            else:
                layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1), _norm(o.norm, ndf * mult),
                           nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** o.n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1), _norm(o.norm, ndf * mult), nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.model = nn.Sequential(*layers)
        _xavier_init(self, o.init_gain)

    def patch_logits(self, x: Tensor) -> Tensor:
        return self.model(x)

    def score(self, x: Tensor) -> Tensor:
        """Mean of the patch logits, one number per image."""
        return self.model(x).flatten(1).mean(1)


# ---------------------------------------------------------------------------------------
# losses on the patch map

def gan_d_loss(mode: str, real: Tensor, fake: Tensor) -> Tensor:
    """CUT's D loss: (loss(D(y), real) + loss(D(G(x)), fake)) / 2 over every patch."""
    if mode == "lsgan":
        return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())  # "vanilla": BCE with logits


def gan_g_loss(mode: str, fake: Tensor) -> Tensor:
    if mode == "lsgan":
        return (fake - 1.0).pow(2).mean()
    return F.softplus(-fake).mean()


# ---------------------------------------------------------------------------------------
# the objectives


def _optional_non_negative(instance: Any, attribute: attrs.Attribute, value: Optional[float]) -> None:
    if value is not None and not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 or \"none\" (the mode's default), got {value!r}")


@attrs.frozen(kw_only=True)
class CutOptions:
    """CUT / FastCUT (Park et al. 2020)."""

    # "cut": nce_idt on, lambda_NCE 1, no flip equivariance.  "fastcut": nce_idt off, lambda_NCE
    # 10, flip equivariance on.  The three options below override the mode where given.
    mode: Literal["cut", "fastcut"] = attrs.field(default="cut", validator=attrs.validators.in_(("cut", "fastcut")))
    # Weight lambda_NCE of the PatchNCE loss; "none" = the mode's (CUT 1, FastCUT 10).
    lambda_nce: Optional[float] = attrs.field(default=None, validator=_optional_non_negative)
    # Identity PatchNCE on target images, NCE(y, G(y)); "none" = the mode's (CUT on, FastCUT off).
    nce_idt: Optional[bool] = None
    # Flip the generator's input with probability 1/2 and the query features back (FastCUT's
    # equivariance regulariser); "none" = the mode's (CUT off, FastCUT on).
    flip_equivariance: Optional[bool] = None
    # Weight of the generator's adversarial loss (CUT: 1).
    lambda_gan: float = attrs.field(default=1.0, validator=non_negative)
    # PatchNCE temperature tau (CUT: 0.07).
    nce_temperature: float = attrs.field(default=0.07, validator=positive)
    # Locations sampled per NCE layer (CUT: 256; all of them when a layer has fewer).
    num_patches: int = attrs.field(default=256, validator=positive)
    # Negatives from every image of the batch (CUT: false; true for single-image translation).
    nce_all_negatives: bool = False
    # GAN loss on the patch logits: "lsgan" (CUT's default) or "vanilla" (BCE with logits).
    gan_mode: Literal["lsgan", "vanilla"] = attrs.field(default="lsgan",
                                                        validator=attrs.validators.in_(("lsgan", "vanilla")))
    # Random crop of every training image (source and target) to crop_size x crop_size, drawn
    # from the run's generator (CUT: 286 -> 256); 0 = the dataset's images as they are.  Sample
    # grids and FID translate centre crops.
    crop_size: int = attrs.field(default=0, validator=non_negative)
    # Random horizontal flip of every training image (CUT: on; no_flip = false).
    flip: bool = True
    # CUT's linear learning-rate decay, applied by this objective to every optimiser (the
    # trainer's own schedule is a step decay): lr = base * (1 - clamp((N - start) / span, 0, 1)),
    # N = source images consumed.  [start, span] in images; "none" = constant (see docs/cut.md).
    lr_linear_decay: Optional[tuple[int, int]] = attrs.field(default=None)
    # Source images kept in the objective's state for sample grids when the dataset is not
    # loaded (`coop sample`): the first ones of the evaluation set, centre-cropped.
    sample_bank: int = attrs.field(default=8, validator=positive)
    # Images per generator forward pass when translating for samples/FID.
    sample_chunk: int = attrs.field(default=16, validator=positive)

    def __attrs_post_init__(self) -> None:
        d = self.lr_linear_decay
        if d is not None and (len(d) != 2 or d[0] < 0 or d[1] < 1):
            raise ValueError(f"'lr_linear_decay' must be [start_images >= 0, span_images >= 1] or \"none\", got {d!r}")

    @property
    def nce_weight(self) -> float:
        if self.lambda_nce is not None:
            return self.lambda_nce
        return 1.0 if self.mode == "cut" else 10.0

    @property
    def identity_nce(self) -> bool:
        return self.nce_idt if self.nce_idt is not None else self.mode == "cut"

    @property
    def flip_eq(self) -> bool:
        return self.flip_equivariance if self.flip_equivariance is not None else self.mode == "fastcut"


@attrs.frozen(kw_only=True)
class CoopInitCutOptions(CutOptions):
    """CoopInit on CUT: a cooperative stage for the first n_coop source images, then CUT."""

    # N_coop in source images (the paper gives none for Table 4; see docs/cut.md).
    n_coop: int = attrs.field(default=16_000, validator=non_negative)
    # Langevin step size eta of CoopInit eq. 4 on the PatchGAN's mean logit (CoopInit default 1).
    eta: float = attrs.field(default=1.0, validator=positive)
    # Langevin steps T per cooperative iteration (CoopInit default 10).
    langevin_steps: int = attrs.field(default=10, validator=non_negative)
    # Multiplies the Langevin noise std sqrt(2 eta); 0 (the default here) = noise-free revision,
    # the reading of the repository's CoopInit Table-1 recipe (docs/coopinit.md).
    noise_scale: float = attrs.field(default=0.0, validator=non_negative)
    # Keep CUT's PatchNCE terms in the generator's loss during the cooperative stage.
    coop_nce: bool = True
    # Clear both optimisers' state at the switch to CUT (paper silent).
    reset_optimizers: bool = False


def _unpaired_dataset(parts: Parts) -> Optional[Any]:
    """The run's unpaired training set (with `target`), or None when it is not loaded.

    `parts.dataset` is the training set as its factory built it (docs/cut.md, "How the
    objective reaches the target domain")."""
    obj = parts.dataset
    if getattr(obj, "unpaired", False) is True and hasattr(obj, "target"):
        return obj
    if obj is not None and hasattr(obj, "shape") and not hasattr(obj, "get_batch"):
        return None  # a stand-in without examples (a reopened run's DatasetInfo): sampling only
    raise UsageError("objectives 'cut' and 'coopinit.cut' need an unpaired dataset with a target domain: "
                     "set data.name = \"unpaired_folders\" (trainA/trainB/testA/testB folders) or "
                     "\"unpaired_digits\" (embedded)")


def _augment(x: Tensor, crop: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Per image: a random crop_size crop (uniform offsets) and a flip with probability 1/2."""
    n = x.shape[0]
    if crop and crop < x.shape[-1]:
        hi = x.shape[-1] - crop + 1
        offs = torch.randint(0, hi, (n, 2), generator=generator, device=generator.device).tolist()
        x = torch.stack([x[i, :, t:t + crop, s:s + crop] for i, (t, s) in enumerate(offs)])
    if flip:
        coin = (torch.rand(n, generator=generator, device=generator.device) < 0.5).to(x.device)
        x = torch.where(coin.view(n, 1, 1, 1), x.flip(3), x)
    return x


def _center(x: Tensor, crop: int) -> Tensor:
    if not crop or crop >= x.shape[-1]:
        return x
    top, left = (x.shape[-2] - crop) // 2, (x.shape[-1] - crop) // 2
    return x[..., top:top + crop, left:left + crop]


def _cycled(n: int, total: int) -> Tensor:
    return torch.arange(n) % total


TINY_UNPAIRED_EXAMPLE: dict[str, Any] = {
    "data": {"name": "unpaired_digits", "batch_size": 2, "options": {"size": 16, "limit": 8}},
    "models": {
        "descriptor": {"name": "cut.discriminator.patchgan",
                       "options": {"input_shape": [1, 8, 8], "ndf": 4, "n_layers": 1}},
        "generator": {"name": "cut.generator.resnet",
                      "options": {"input_shape": [1, 8, 8], "ngf": 4, "n_blocks": 2, "nce_layers": [0, 4, 8],
                                  "mlp_dim": 8}},
    },
    "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999]},
                   "generator": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999]}},
}


class Cut:
    """CUT / FastCUT: one-sided unpaired translation with PatchNCE (Park et al. 2020)."""

    required_models = ("descriptor", "generator")
    required_samplers = ()
    contract_example = {**TINY_UNPAIRED_EXAMPLE,
                        "options": {"num_patches": 6, "crop_size": 8, "lr_linear_decay": [2, 4], "sample_bank": 2}}

    @staticmethod
    def model_shapes(options: CutOptions, data_shape: tuple[int, ...]) -> dict[str, Optional[tuple[int, ...]]]:
        """With a random crop the networks see crop_size x crop_size images."""
        if options.crop_size and len(data_shape) == 3:
            shape = (data_shape[0], options.crop_size, options.crop_size)
            return {"generator": shape, "descriptor": shape}
        return {}

    def __init__(self, options: CutOptions, parts: Parts) -> None:
        self.options = options
        self.device = parts.device
        self.descriptor = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        if not isinstance(self.generator, CutGenerator):
            raise UsageError("objectives 'cut' and 'coopinit.cut' need the generator 'cut.generator.resnet' "
                             "(its encoder features and projection head carry the PatchNCE loss)")
        if not hasattr(self.descriptor, "patch_logits"):
            raise UsageError("objectives 'cut' and 'coopinit.cut' need a patch discriminator with "
                             "patch_logits(x), e.g. 'cut.discriminator.patchgan'")
        self.opt_d, self.opt_g = parts.optimizers["descriptor"], parts.optimizers["generator"]
        self.data = _unpaired_dataset(parts)
        self.images = 0  # source images consumed (CoopInit's N; the lr decay's clock); checkpointed
        self.bank = self._initial_bank()
        if options.lr_linear_decay is not None:
            for opt in (self.opt_d, self.opt_g):
                for group in opt.param_groups:
                    group.setdefault("cut_base_lr", group["lr"])

    # -- data --------------------------------------------------------------------------
    @property
    def model_side(self) -> int:
        return int(self.generator.output_shape[-1])

    def _eval_sets(self) -> tuple[Any, Any]:
        d = self.data
        if d is None:
            return None, None
        src = d.eval_source if d.eval_source is not None else d
        tgt = d.eval_target if d.eval_target is not None else d.target
        return src, tgt

    def _initial_bank(self) -> Optional[Tensor]:
        src, _ = self._eval_sets()
        if src is None:
            return None
        k = min(self.options.sample_bank, len(src))
        return _center(src.get_batch(torch.arange(k)), self.model_side).to(self.device, torch.float32).contiguous()

    def draw_target(self, n: int, generator: torch.Generator) -> Tensor:
        """n target-domain images, uniform indices with replacement from `generator`."""
        if self.data is None:
            raise UsageError("training 'cut' needs its unpaired dataset (it was not loaded)")
        target = self.data.target
        idx = torch.randint(0, len(target), (n,), generator=generator, device=generator.device).cpu()
        return target.get_batch(idx).to(self.device, torch.float32)

    def training_pair(self, batch: Batch, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(source, target) batches after CUT's random crop / flip."""
        o = self.options
        y = self.draw_target(batch.x.shape[0], generator)
        x = _augment(batch.x, o.crop_size, o.flip, generator)
        y = _augment(y, o.crop_size, o.flip, generator)
        return x, y

    # -- learning-rate schedule ------------------------------------------------------------
    def lr_factor(self) -> float:
        d = self.options.lr_linear_decay
        if d is None:
            return 1.0
        start, span = d
        return 1.0 - min(max((self.images - start) / span, 0.0), 1.0)

    def _apply_lr(self) -> None:
        if self.options.lr_linear_decay is None:
            return
        f = self.lr_factor()
        for opt in (self.opt_d, self.opt_g):
            for group in opt.param_groups:
                group["lr"] = group["cut_base_lr"] * f

    # -- PatchNCE ---------------------------------------------------------------------------
    def nce_loss(self, src: Tensor, tgt: Tensor, generator: torch.Generator, flipped: bool = False) -> Tensor:
        """CUT's calculate_NCE_loss: mean over layers of lambda_NCE * mean PatchNCE(q = tgt, k = src)."""
        o = self.options
        g = self.generator
        feat_q = g.encode(tgt)
        if flipped:
            feat_q = [f.flip(3) for f in feat_q]
        feat_k = g.encode(src)
        ids = PatchProjector.draw_ids(feat_k, o.num_patches, generator)
        k_pool = g.projector(feat_k, ids)
        q_pool = g.projector(feat_q, ids)
        total = torch.zeros((), device=src.device)
        for q, k in zip(q_pool, k_pool):
            layer = patch_nce_loss(q, k, src.shape[0], o.nce_temperature, o.nce_all_negatives)
            total = total + layer.mean() * o.nce_weight
        return total / len(q_pool)

    def nce_terms(self, x: Tensor, fake: Tensor, y: Optional[Tensor], idt: Optional[Tensor],
                  generator: torch.Generator, flipped: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """(NCE(x, G(x)) [+ NCE(y, G(y))] / 2, the terms as scalars)."""
        nce = self.nce_loss(x, fake, generator, flipped)
        out = {"nce": nce.detach()}
        if idt is not None and y is not None:
            nce_y = self.nce_loss(y, idt, generator, flipped)
            out["nce_idt"] = nce_y.detach()
            return 0.5 * (nce + nce_y), out
        return nce, out

    # -- one CUT iteration --------------------------------------------------------------
    def cut_step(self, x: Tensor, y: Tensor, generator: torch.Generator) -> StepResult:
        o = self.options
        n = x.shape[0]
        use_idt = o.identity_nce and o.nce_weight > 0
        real = torch.cat((x, y)) if use_idt else x
        flipped = False
        if o.flip_eq:
            flipped = bool(torch.rand((), generator=generator, device=generator.device) < 0.5)
            if flipped:
                real = real.flip(3)
        fake_all = self.generator(real)
        fake, idt = fake_all[:n], (fake_all[n:] if use_idt else None)
        # D: LSGAN on the patch maps of G(x) (detached) and y.
        d_fake = self.descriptor.patch_logits(fake.detach())
        d_real = self.descriptor.patch_logits(y)
        loss_d = gan_d_loss(o.gan_mode, d_real, d_fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        # G (+ projection head): adversarial term on the updated D, then PatchNCE.
        with frozen_parameters(self.descriptor):
            loss_gan = gan_g_loss(o.gan_mode, self.descriptor.patch_logits(fake)) * o.lambda_gan
            if o.nce_weight > 0:
                nce, terms = self.nce_terms(x, fake, y, idt, generator, flipped)
            else:
                nce, terms = torch.zeros((), device=x.device), {}
            loss_g = loss_gan + nce
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        scalars = {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "loss_g_gan": loss_gan.detach(),
                   "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(), **terms}
        return StepResult(scalars=scalars, histograms={"d_real": d_real.detach().flatten(1).mean(1),
                                                       "d_fake": d_fake.detach().flatten(1).mean(1)})

    def finish_step(self, result: StepResult, n: int) -> StepResult:
        self.images += n
        result.scalars["lr_factor"] = torch.tensor(self.lr_factor(), device=self.device)
        return result

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        self._apply_lr()
        x, y = self.training_pair(batch, generator)
        return self.finish_step(self.cut_step(x, y, generator), batch.x.shape[0])

    # -- samples ----------------------------------------------------------------------------
    def translate(self, x: Tensor) -> Tensor:
        """G(x) in chunks of `sample_chunk`, without gradients."""
        with torch.no_grad():
            return torch.cat([self.generator(c) for c in x.split(self.options.sample_chunk)])

    def _first(self, dataset: Any, n: int) -> Tensor:
        return _center(dataset.get_batch(_cycled(n, len(dataset))), self.model_side).to(self.device, torch.float32)

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """"translated": G of the first n source images of the evaluation set (the test set of
        `unpaired_folders` by default; cycled when n exceeds it), centre-cropped; "source":
        those images; "target": the first n target images of the evaluation set (real images,
        for comparison).  Deterministic (the generator is not used).  Without the dataset
        (`coop sample`), the sources are the objective's bank of `sample_bank` images, cycled."""
        src_set, tgt_set = self._eval_sets()
        if src_set is not None:
            source = self._first(src_set, n)
        elif self.bank is not None:
            source = self.bank[_cycled(n, self.bank.shape[0]).to(self.bank.device)]
        else:
            raise UsageError("this run's state holds no source images to translate; load its dataset")
        out = {"translated": self.translate(source), "source": source}
        if tgt_set is not None:
            out["target"] = self._first(tgt_set, n)
        return out

    # -- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"images": self.images}
        if self.bank is not None:
            state["bank"] = self.bank.detach().clone()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.images = int(state.get("images", 0))
        if "bank" in state:
            self.bank = state["bank"].to(self.device, torch.float32)


class CoopInitCut(Cut):
    """CoopInit on CUT (AAAI 2023, Sec. 5.3, Table 4): while N <= n_coop source images,

    1. x^ = G(x) for the source batch x (CoopInit's G1, the translation as the initial state);
    2. x~: T Langevin steps of eq. 4 on the descriptor's score f(x) = mean patch logit from x^
       (the descriptor's parameters get no gradient);
    3. descriptor step on mean f(x~) - mean f(y) for a target batch y (maximum likelihood, the
       descriptor as an EBM on the target domain; `coopcore.contrastive_update`);
    4. generator step on (1/n) sum_i ||x~_i - G(x_i)||^2 (MCMC teaching; the same x), plus, with
       `coop_nce` (the default), CUT's PatchNCE terms on that translation;

    then CUT's iterations (LSGAN + PatchNCE) with the same networks and optimisers."""

    contract_example = {**TINY_UNPAIRED_EXAMPLE, "steps": 2,
                        "options": {"num_patches": 6, "n_coop": 2, "eta": 0.1, "langevin_steps": 2,
                                    "noise_scale": 0.5, "crop_size": 8, "sample_bank": 2}}

    def __init__(self, options: CoopInitCutOptions, parts: Parts) -> None:
        super().__init__(options, parts)
        self.options: CoopInitCutOptions = options
        self.noise_std = options.noise_scale * math.sqrt(2.0 * options.eta)
        self.switched = False

    def in_coop_stage(self) -> bool:
        """CoopInit Algorithm 2's N <= N_coop (no cooperative stage when n_coop = 0)."""
        return self.options.n_coop > 0 and self.images <= self.options.n_coop

    def revise(self, x_init: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """T Langevin steps x <- x + eta grad f(x) + noise_std N(0, I) from x_init."""
        o = self.options
        with frozen_parameters(self.descriptor):
            samples, scores, norms = langevin_revision(self.descriptor.score, x_init, o.eta, o.langevin_steps,
                                                       self.noise_std, generator)
        return samples.detach(), scores, norms

    def coop_step(self, x: Tensor, y: Tensor, generator: torch.Generator) -> StepResult:
        o = self.options
        with torch.no_grad():
            x_init = self.generator(x)
        x_rev, scores, norms = self.revise(x_init, generator)
        loss_d, d_real, d_syn = contrastive_update(self.descriptor, self.opt_d, y, x_rev)
        fake = self.generator(x)
        teach = (x_rev - fake).flatten(1).pow(2).sum(1).mean()
        loss_g = teach
        terms: dict[str, Tensor] = {}
        if o.coop_nce and o.nce_weight > 0:
            idt = self.generator(y) if o.identity_nce else None
            nce, terms = self.nce_terms(x, fake, y, idt, generator)
            loss_g = teach + nce
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        scalars = {"loss_d": loss_d, "loss_g": loss_g.detach(), "loss_teach": teach.detach(),
                   "d_real": d_real.mean(), "d_fake": d_syn.mean(),
                   "revision_sq": (x_rev - x_init).flatten(1).pow(2).sum(1).mean(), **terms}
        if scores.numel():
            scalars["d_init"] = scores[0]
            scalars["langevin_grad_norm"] = norms[-1]
        return StepResult(scalars=scalars, histograms={"d_real": d_real, "d_fake": d_syn})

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        self._apply_lr()
        x, y = self.training_pair(batch, generator)
        if self.in_coop_stage():
            result, stage = self.coop_step(x, y, generator), 0.0
        else:
            if not self.switched:
                self.switched = True
                if self.options.reset_optimizers:
                    for opt in (self.opt_d, self.opt_g):
                        opt.state.clear()
            result, stage = self.cut_step(x, y, generator), 1.0
        result.scalars["stage"] = torch.tensor(stage, device=self.device)
        return self.finish_step(result, batch.x.shape[0])

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "switched": self.switched}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.switched = bool(state.get("switched", False))


# ---------------------------------------------------------------------------------------
# registration (called from the plugin's hooks)

CUT_G = ("CUT ResNet generator (reflect-pad 7x7 conv, 2 anti-aliased downsamplings, 9 residual blocks, "
         "2 upsamplings, instance norm, tanh) + PatchNCE projection MLP")
CUT_D = "PatchGAN discriminator (70x70 patches, instance norm, LeakyReLU 0.2); score = mean patch logit"


def register_cut_energy_models(registry: Any) -> None:
    registry.add("cut.discriminator.patchgan", PatchGANDiscriminator, PatchGANOptions, CUT_D)


def register_cut_generators(registry: Any) -> None:
    registry.add("cut.generator.resnet", CutGenerator, CutGeneratorOptions, CUT_G)


def register_cut_objectives(registry: Any) -> None:
    registry.add("cut", Cut, CutOptions,
                 "CUT / FastCUT unpaired translation: LSGAN on a PatchGAN + PatchNCE (needs an unpaired dataset)")
    registry.add("coopinit.cut", CoopInitCut, CoopInitCutOptions,
                 "CoopInit on CUT: Langevin revision of translations + MCMC teaching for n_coop images, then CUT")
