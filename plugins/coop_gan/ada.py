"""Adaptive discriminator augmentation (ADA; Karras et al., *Training Generative Adversarial
Networks with Limited Data*, NeurIPS 2020, the StyleGAN2-ADA release).

Two parts:

- `augment_images`: the `bgc` pipeline, every image of the batch augmented independently.  Each
  transform fires with probability p x (its multiplier, 1 in `bgc`), in ADA's order:

  - blit: x-flip, rotation by a multiple of 90 degrees, integer translation (uniform, at most
    0.125 of the image size, rounded to whole pixels);
  - geometric: isotropic scale 2^N(0, 0.2^2); rotation uniform in (-pi, pi] applied before and
    after the anisotropic scale, each with probability 1 - sqrt(1 - p) so that "either" has
    probability p; anisotropic scale 2^N(0, 0.2^2) on x and its inverse on y; fractional
    translation N(0, 0.125^2) of the image size;
  - colour (on the [-1, 1] values, about mid-grey 0): brightness + N(0, 0.2^2); contrast
    x 2^N(0, 0.5^2); luma flip (the Householder reflection across the plane normal to the grey
    axis v = (1, 1, 1)/sqrt(3)); hue rotation about v, uniform in (-pi, pi]; saturation
    x 2^N(0, 1) of the component orthogonal to v.  Hue and saturation need 3 channels; a
    1-channel image goes through the colour matrix as (g, g, g), averaged back, as in
    StyleGAN2-ADA.

- `AdaController`: the adaptive p.  After every discriminator update it adds sign(D(x_real)) of
  the (augmented) reals to an accumulator; every `ada_interval` updates it forms
  r_t = E[sign(D(x_real))] over them and moves p by sign(r_t - target) x (images in the
  interval) / (ada_kimg x 1000), i.e. by batch x interval / 500,000 with the defaults, clamped
  below at 0 (and above at `ada_p_max` when set).

How this differs from StyleGAN2-ADA's `training/augment.py`:

- Resampling.  StyleGAN2-ADA composes all eight geometric transforms into one matrix, pads the
  image by reflection, upsamples it 2x with a sym6 wavelet low-pass filter, samples bilinearly
  and filters back down (anti-aliasing).  Here the same composed matrix (same transforms, order,
  distributions and probabilities) is applied in one `kornia.geometry.transform.warp_affine`
  call at the image's own resolution: bilinear, `reflection` padding (mirror about the border
  pixel centres, as `F.pad(mode="reflect")`), no 2x filtering.  Rotations and down-scalings
  therefore alias slightly more and sub-pixel shifts blur slightly more than in the original.
- Range.  Bilinear weights are convex and the reflected coordinates stay inside the image, so
  every geometric output lies within [min, max] of its input: the geometric part keeps [-1, 1]
  exactly (StyleGAN2-ADA's wavelet filter can overshoot a little).  The colour transforms are
  affine maps of the values, as in StyleGAN2-ADA, and leave [-1, 1] (brightness shifts, contrast
  scales about 0, saturation scales chroma); StyleGAN2-ADA does not clamp and neither do we by
  default, since clamping is not invertible and would make the augmentation leak into the
  generator's images.  `clamp = True` clamps the output to [-1, 1] (gradient 0 where clamped).
- Exact identity.  A sample that no transform selected is passed through untouched (not
  resampled through an identity matrix), and p = 0 returns the input tensor itself: the
  pipeline is then the identity bit for bit.  StyleGAN2-ADA resamples the whole batch.
- Random numbers come from the training step's `torch.Generator` (reproducible, checkpointed
  with the run); kornia's own random augmentation classes would draw from torch's global
  generator, so only kornia's deterministic functional transforms are used
  (`warp_affine`, `axis_angle_to_rotation_matrix`).
- Only the 12 transforms of `bgc` (no image-space filtering, noise or cutout).
- The controller counts discriminator updates (StyleGAN2-ADA counts training iterations, one D
  step each; the same with `d_steps = 1`), and only the main real-batch evaluation of each D
  update feeds r_t (StyleGAN2-ADA's separate lazy-R1 phase reports its real logits too).
- StyleGAN2-ADA clamps p only from below; `ada_p_max = 1` adds an upper bound.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import in_range, non_negative, optional_positive, positive

AUGMENTS = ("none", "bgc")


@attrs.frozen(kw_only=True)
class AugmentSpec:
    """Probability multipliers and strengths of the pipeline's transforms (StyleGAN2-ADA's
    defaults for the strengths; `BGC` switches on the 12 transforms of its `bgc` pipeline)."""

    xflip: float = 0.0
    rotate90: float = 0.0
    xint: float = 0.0
    xint_max: float = 0.125  # fraction of the image size
    scale: float = 0.0
    rotate: float = 0.0
    aniso: float = 0.0
    xfrac: float = 0.0
    scale_std: float = 0.2  # log2
    rotate_max: float = 1.0  # 1 = full circle (uniform in (-pi, pi])
    aniso_std: float = 0.2  # log2
    xfrac_std: float = 0.125  # fraction of the image size
    brightness: float = 0.0
    contrast: float = 0.0
    lumaflip: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness_std: float = 0.2
    contrast_std: float = 0.5  # log2
    hue_max: float = 1.0  # 1 = full circle
    saturation_std: float = 1.0  # log2


BGC_TRANSFORMS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
                  "brightness", "contrast", "lumaflip", "hue", "saturation")
BGC = AugmentSpec(**{name: 1.0 for name in BGC_TRANSFORMS})
PIPELINES: dict[str, AugmentSpec] = {"bgc": BGC}


@attrs.frozen(kw_only=True)
class AdaOptions:
    """Adaptive discriminator augmentation (StyleGAN2-ADA): what the discriminator sees of real
    and generated images, and how the augmentation probability p adapts."""

    # Augmentation pipeline in front of every discriminator evaluation (reals and fakes, the
    # generator's loss and the penalties included): "none" (off) or "bgc" (StyleGAN2-ADA's
    # default: blit + geometric + colour).
    augment: Literal["none", "bgc"] = attrs.field(default="none", validator=attrs.validators.in_(AUGMENTS))
    # Initial augmentation probability p (StyleGAN2-ADA `augment_p`, 0); with `augment_fixed`
    # the p of the whole run.
    augment_p: float = attrs.field(default=0.0, validator=non_negative)
    # Keep p at `augment_p` (StyleGAN2-ADA's `--aug fixed`); false = adapt it (ADA).
    augment_fixed: bool = False
    # Target of the overfitting heuristic r_t = E[sign(D(x_real))] (StyleGAN2-ADA: 0.6).
    ada_target: float = attrs.field(default=0.6, validator=in_range(-1.0, 1.0))
    # Discriminator updates between adjustments of p (StyleGAN2-ADA: 4).
    ada_interval: int = attrs.field(default=4, validator=positive)
    # Thousands of images for p to move by 1 (StyleGAN2-ADA: 500).
    ada_kimg: float = attrs.field(default=500.0, validator=positive)
    # Upper bound on p; "none" = no bound (StyleGAN2-ADA clamps from below only).
    ada_p_max: Optional[float] = attrs.field(default=None, validator=optional_positive)
    # Clamp the augmented images to [-1, 1] (StyleGAN2-ADA does not: its colour transforms
    # leave the range, and clamping is not invertible).
    clamp: bool = False


# --- geometry: 3x3 homogeneous matrices on centred pixel coordinates ----------------------
def _eye(n: int, like: Tensor) -> Tensor:
    return torch.eye(3, dtype=like.dtype, device=like.device).expand(n, 3, 3).clone()


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    m = _eye(sx.shape[0], sx)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def _rotate2d(theta: Tensor) -> Tensor:
    m = _eye(theta.shape[0], theta)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    m = _eye(tx.shape[0], tx)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


class _Draw:
    """Per-image random draws from one generator, in a fixed order (so the stream of random
    numbers does not depend on p or on which transforms fire)."""

    def __init__(self, n: int, p: float, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> None:
        self.n, self.p, self.gen, self.device, self.dtype = n, p, generator, device, dtype

    def uniform(self, *shape: int) -> Tensor:
        return torch.rand((self.n, *shape), generator=self.gen, device=self.device, dtype=self.dtype)

    def normal(self, *shape: int) -> Tensor:
        return torch.randn((self.n, *shape), generator=self.gen, device=self.device, dtype=self.dtype)

    def fires(self, probability: float) -> Tensor:
        """Which images a transform of this probability selects (bool, one per image)."""
        return self.uniform() < probability


def _geometry(spec: AugmentSpec, d: _Draw, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The composed forward transform of each image (B, 3, 3), in pixel units about the image
    centre, and which images any geometric transform selected."""
    n, p = d.n, d.p
    m = torch.eye(3, device=d.device, dtype=d.dtype).expand(n, 3, 3)
    moved = torch.zeros(n, dtype=torch.bool, device=d.device)
    one, zero = torch.ones(n, device=d.device, dtype=d.dtype), torch.zeros(n, device=d.device, dtype=d.dtype)

    def then(t: Tensor, sel: Tensor) -> None:
        # Applied after everything composed so far (forward order = StyleGAN2-ADA's order).
        nonlocal m, moved
        m = t @ m
        moved = moved | sel

    if spec.xflip > 0:
        flip = torch.floor(d.uniform() * 2)
        sel = d.fires(spec.xflip * p) & (flip > 0)
        then(_scale2d(torch.where(sel, -one, one), one), sel)
    if spec.rotate90 > 0:
        quarter = torch.floor(d.uniform() * 4)
        sel = d.fires(spec.rotate90 * p) & (quarter > 0)
        then(_rotate2d(torch.where(sel, quarter, zero) * (math.pi / 2)), sel)
    if spec.xint > 0:
        t = (d.uniform(2) * 2 - 1) * spec.xint_max
        sel = d.fires(spec.xint * p)
        tx, ty = torch.round(t[:, 0] * width), torch.round(t[:, 1] * height)
        tx, ty = torch.where(sel, tx, zero), torch.where(sel, ty, zero)
        then(_translate2d(tx, ty), sel & ((tx != 0) | (ty != 0)))
    if spec.scale > 0:
        s = torch.exp2(d.normal() * spec.scale_std)
        sel = d.fires(spec.scale * p)
        s = torch.where(sel, s, one)
        then(_scale2d(s, s), sel)
    # Rotation before and after the anisotropic scaling, each with probability p_rot so that
    # P(either) = rotate * p (StyleGAN2-ADA's construction).
    p_rot = 1.0 - math.sqrt(min(max(1.0 - spec.rotate * p, 0.0), 1.0))
    if spec.rotate > 0:
        theta = (d.uniform() * 2 - 1) * math.pi * spec.rotate_max
        sel = d.fires(p_rot)
        then(_rotate2d(torch.where(sel, theta, zero)), sel)
    if spec.aniso > 0:
        s = torch.exp2(d.normal() * spec.aniso_std)
        sel = d.fires(spec.aniso * p)
        s = torch.where(sel, s, one)
        then(_scale2d(s, 1 / s), sel)
    if spec.rotate > 0:
        theta = (d.uniform() * 2 - 1) * math.pi * spec.rotate_max
        sel = d.fires(p_rot)
        then(_rotate2d(torch.where(sel, theta, zero)), sel)
    if spec.xfrac > 0:
        t = d.normal(2) * spec.xfrac_std
        sel = d.fires(spec.xfrac * p)
        then(_translate2d(torch.where(sel, t[:, 0] * width, zero), torch.where(sel, t[:, 1] * height, zero)), sel)
    return m, moved


def _warp(x: Tensor, m: Tensor) -> Tensor:
    """Resample `x` through forward transforms `m` (centred pixel coordinates) with kornia:
    bilinear, reflection padding, pixel centres at integers (align_corners)."""
    from kornia.geometry.transform import warp_affine

    h, w = x.shape[-2:]
    centre = torch.eye(3, device=x.device, dtype=x.dtype)
    centre[0, 2], centre[1, 2] = (w - 1) / 2, (h - 1) / 2
    uncentre = torch.eye(3, device=x.device, dtype=x.dtype)
    uncentre[0, 2], uncentre[1, 2] = -(w - 1) / 2, -(h - 1) / 2
    m_pix = centre @ m @ uncentre
    return warp_affine(x, m_pix[:, :2, :], (h, w), mode="bilinear", padding_mode="reflection", align_corners=True)


# --- colour: 4x4 homogeneous matrices on RGB values -----------------------------------
def _colour(spec: AugmentSpec, d: _Draw, channels: int) -> tuple[Tensor, Tensor]:
    """The composed colour transform of each image (B, 4, 4) and which images it changes."""
    from kornia.geometry.conversions import axis_angle_to_rotation_matrix

    n, p = d.n, d.p
    eye4 = torch.eye(4, device=d.device, dtype=d.dtype)
    c = eye4.expand(n, 4, 4)
    changed = torch.zeros(n, dtype=torch.bool, device=d.device)
    one, zero = torch.ones(n, device=d.device, dtype=d.dtype), torch.zeros(n, device=d.device, dtype=d.dtype)
    v = torch.tensor([1.0, 1.0, 1.0, 0.0], device=d.device, dtype=d.dtype) / math.sqrt(3)  # grey axis
    vv = torch.outer(v, v)

    if spec.brightness > 0:
        b = d.normal() * spec.brightness_std
        sel = d.fires(spec.brightness * p)
        t = eye4.expand(n, 4, 4).clone()
        t[:, :3, 3] = torch.where(sel, b, zero)[:, None]
        c, changed = t @ c, changed | sel
    if spec.contrast > 0:
        k = torch.exp2(d.normal() * spec.contrast_std)
        sel = d.fires(spec.contrast * p)
        k = torch.where(sel, k, one)
        t = torch.diag_embed(torch.stack([k, k, k, one], dim=1))
        c, changed = t @ c, changed | sel
    if spec.lumaflip > 0:
        flip = torch.floor(d.uniform() * 2)
        sel = d.fires(spec.lumaflip * p) & (flip > 0)
        t = eye4 - 2 * vv * torch.where(sel, one, zero)[:, None, None]
        c, changed = t @ c, changed | sel
    if spec.hue > 0 and channels > 1:
        theta = (d.uniform() * 2 - 1) * math.pi * spec.hue_max
        sel = d.fires(spec.hue * p)
        theta = torch.where(sel, theta, zero)
        t = eye4.expand(n, 4, 4).clone()
        t[:, :3, :3] = axis_angle_to_rotation_matrix(v[:3] * theta[:, None])
        c, changed = t @ c, changed | sel
    if spec.saturation > 0 and channels > 1:
        s = torch.exp2(d.normal() * spec.saturation_std)
        sel = d.fires(spec.saturation * p)
        s = torch.where(sel, s, one)
        t = vv + (eye4 - vv) * s[:, None, None]
        c, changed = t @ c, changed | sel
    return c, changed


def _apply_colour(x: Tensor, c: Tensor) -> Tensor:
    n, ch, h, w = x.shape
    flat = x.reshape(n, ch, h * w)
    if ch == 3:
        out = c[:, :3, :3] @ flat + c[:, :3, 3:]
    elif ch == 1:
        # A grey image as (g, g, g): each output channel is g * (row sum) + offset; averaged back.
        rows = c[:, :3, :]
        out = flat * rows[:, :, :3].sum(dim=2).mean(dim=1)[:, None, None] + rows[:, :, 3].mean(dim=1)[:, None, None]
    else:
        raise ValueError(f"colour augmentation needs 1 or 3 channels, got {ch}")
    return out.reshape(n, ch, h, w)


def augment_images(x: Tensor, p: float, generator: torch.Generator, spec: AugmentSpec = BGC,
                   clamp: bool = False) -> Tensor:
    """Augment each image of `x` (N, C, H, W; values in [-1, 1]) with probability p per
    transform (times its multiplier in `spec`); differentiable with respect to `x`.

    p = 0 returns `x` itself; images no transform selected are returned unchanged.
    """
    if p <= 0:
        return x
    n, ch, h, w = x.shape
    d = _Draw(n, float(p), generator, x.device, x.dtype if x.is_floating_point() else torch.float32)
    has_geometry = any(getattr(spec, k) > 0 for k in BGC_TRANSFORMS[:7])
    has_colour = any(getattr(spec, k) > 0 for k in BGC_TRANSFORMS[7:])
    out = x
    if has_geometry:
        m, moved = _geometry(spec, d, h, w)
        if bool(moved.any()):
            out = torch.where(moved[:, None, None, None], _warp(out, m), out)
    if has_colour:
        c, changed = _colour(spec, d, ch)
        if bool(changed.any()):
            out = torch.where(changed[:, None, None, None], _apply_colour(out, c), out)
    if clamp:
        out = out.clamp(-1.0, 1.0)
    return out


class AdaController:
    """The adaptive augmentation probability p (StyleGAN2-ADA's heuristic r_t).

    `observe(d_real)` after every discriminator update; every `ada_interval` updates p moves by
    sign(r_t - target) x images / (ada_kimg x 1000), r_t = mean sign of the reals' logits over
    the interval, and is clamped to [0, ada_p_max].  With `augment_fixed` p never moves.
    """

    def __init__(self, options: AdaOptions) -> None:
        self.options = options
        self.p = float(options.augment_p)
        self._reset()

    def _reset(self) -> None:
        # Sum of sign(D(x_real)) as a tensor: read back (a device sync) only once per interval.
        self.sign_sum: Tensor | float = 0.0
        self.count = 0  # logits summed
        self.images = 0  # real images seen in the interval (the step size's numerator)
        self.updates = 0  # discriminator updates in the interval

    def observe(self, d_real: Tensor, batch_size: Optional[int] = None) -> None:
        """Record one discriminator update's logits on (augmented) reals; adjust p when due."""
        if self.options.augment_fixed:
            return
        self.sign_sum = self.sign_sum + d_real.detach().sign().sum().to(torch.float64)
        self.count += d_real.numel()
        self.images += int(batch_size if batch_size is not None else d_real.shape[0])
        self.updates += 1
        if self.updates >= self.options.ada_interval:
            self.adjust()

    @property
    def rt(self) -> float:
        """r_t of the interval so far (0 before any update)."""
        return float(self.sign_sum) / self.count if self.count else 0.0

    def adjust(self) -> None:
        """Move p by the heuristic's sign, then start a new interval."""
        o = self.options
        step = math.copysign(1.0, self.rt - o.ada_target) if self.rt != o.ada_target else 0.0
        p = max(self.p + step * self.images / (o.ada_kimg * 1000.0), 0.0)
        if o.ada_p_max is not None:
            p = min(p, o.ada_p_max)
        self.p = p
        self._reset()

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sign_sum": float(self.sign_sum), "count": self.count,
                "images": self.images, "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.p = float(state.get("p", self.options.augment_p))
        self.sign_sum = float(state.get("sign_sum", 0.0))
        self.count = int(state.get("count", 0))
        self.images = int(state.get("images", 0))
        self.updates = int(state.get("updates", 0))


class Ada:
    """ADA for an adversarial engine: the pipeline (`augment`) and its controller (`observe`)."""

    def __init__(self, options: AdaOptions) -> None:
        if options.augment not in PIPELINES:
            raise ValueError(f"unknown augmentation pipeline {options.augment!r}; expected one of {sorted(PIPELINES)}")
        self.options = options
        self.spec = PIPELINES[options.augment]
        self.controller = AdaController(options)

    @property
    def p(self) -> float:
        return self.controller.p

    def augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return augment_images(x, self.controller.p, generator, self.spec, self.options.clamp)

    def observe(self, d_real: Tensor, batch_size: int) -> None:
        self.controller.observe(d_real, batch_size)

    def state_dict(self) -> dict[str, Any]:
        return self.controller.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict(state)
