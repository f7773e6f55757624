"""Inpainting: recovery error and PSNR on the missing pixels, and the completion routes.

Protocol (TPAMI Section 4.6 / Table 5, AAAI Table 1, triangle Table 3): every test image gets
one occlusion mask (`masks.py`); a method completes it; the error is measured on the missing
pixels only.  One normalisation is used for both numbers, relative to the pixel range R of the
data scale (R = 2 for images in [-1, 1]):

    error = mean over missing entries of |Y - Y^| / R
    PSNR  = 10 log10(R^2 / mean over missing entries of (Y - Y^)^2)

both computed per image (over its missing pixels and all channels) and averaged over images,
as the papers average over test images.  (multigrid Table 3's error and PSNR cannot both be on
this scale; TPAMI Table 5's are consistent with it.)

Completion routes:

- generator (TPAMI 4.6): X starts from N(0, I) and follows N Langevin steps on
  log q(X, Y) = -||M (Y - g(X))||^2 / (2 sigma^2) - ||X||^2 / 2, the squared error over the
  OBSERVED pixels M only (Step G1 of Algorithm G, eq. 15); completion = observed pixels of Y
  and g(X) in the hole.
- descriptor: single-grid Langevin revision of a trained descriptor, -E(Y) as log-density,
  with only the missing pixels free to move (a generic completion by any descriptor; multigrid
  Section 7.4's own completion runs the multi-grid chain, which is the `model` route below); the hole starts at 0 (mid-grey in [-1, 1], the
  triangle's zero fill), at the per-image per-channel mean of the observed pixels, or at
  uniform noise over the pixel range (option `init`).
- any name of `classical_inpainting.CLASSICAL_METHODS` (MRF-l1/l2, inpaint_nans 0-5).
- model: the trained objective's own ``inpaint(images, observed, generator)`` (e.g. the
  multi-grid chain of multigrid Table 3, or its CD1/PCD/single-grid baselines with their own
  samplers); `steps`, `step_size`, `noise` and `init` do not apply, the objective's settings do.

The masks are drawn first, for all images, from the evaluation generator, so every route
sees the same masks under the same seed.  A table compares routes that run in different
runs (a trained model at its last iteration, classical methods in an evaluation-only run),
whose evaluation generators differ: `mask_seed` draws the masks from their own generator
seeded with it instead, so every row of the table is scored on the same holes.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Literal, Optional

import attrs
import numpy as np
import torch
from torch import Tensor

from coopcore import EvalContext, MetricResult, UsageError, generator_log_joint, non_negative, positive

from .classical_inpainting import CLASSICAL_METHODS, inpaint_classical
from coopcore.masks import parse_mask_name
from .parzen import DatasetRef

LEARNED_ROUTES = ("generator", "descriptor")
#: The route that calls the objective's own `inpaint(images, observed, generator)`.
MODEL_ROUTE = "model"
#: Step sizes when `step_size` is "none": the Langevin inference default of the CoopNets plugin
#: (TPAMI eq. 15, delta = 0.1) and the paper's revision step (delta = 0.002).
DEFAULT_STEP = {"generator": 0.1, "descriptor": 0.002}


# ---------------------------------------------------------------------------------------
# The numbers.
def _missing(mask: Tensor, like: Tensor) -> Tensor:
    """1 where an entry of `like` [N, C, H, W] is missing (mask [N, 1, H, W], 1 = observed)."""
    return (1.0 - mask.to(like.dtype)).expand_as(like)


def inpainting_error(truth: Tensor, completed: Tensor, mask: Tensor, pixel_range: float = 2.0) -> Tensor:
    """Per-image mean |Y - Y^| over the missing entries, divided by the pixel range -> [N].

    An image without missing pixels gets NaN (there is nothing to measure)."""
    miss = _missing(mask, truth)
    diff = (truth.double() - completed.double()).abs() * miss
    return diff.flatten(1).sum(1) / miss.flatten(1).sum(1).double() / pixel_range


def inpainting_mse(truth: Tensor, completed: Tensor, mask: Tensor) -> Tensor:
    """Per-image mean squared difference over the missing entries -> [N]."""
    miss = _missing(mask, truth)
    sq = (truth.double() - completed.double()).pow(2) * miss
    return sq.flatten(1).sum(1) / miss.flatten(1).sum(1).double()


def inpainting_psnr(truth: Tensor, completed: Tensor, mask: Tensor, pixel_range: float = 2.0) -> Tensor:
    """Per-image PSNR on the missing entries with MAX = the pixel range -> [N] (dB).

    10 log10(R^2 / MSE_missing); +inf for a perfect completion."""
    return 10.0 * torch.log10(pixel_range**2 / inpainting_mse(truth, completed, mask))


# ---------------------------------------------------------------------------------------
# Completion routes.
def complete_with_generator(
    generator_net: torch.nn.Module, y: Tensor, mask: Tensor, sampler: Any, generator: torch.Generator,
    sigma: Optional[float] = None,
) -> Tensor:
    """Langevin inference of X on the observed pixels, then observed pixels + g(X) in the hole."""
    sigma = float(generator_net.sigma if sigma is None else sigma)
    z0 = generator_net.sample_latent(y.shape[0], generator)
    log_q = generator_log_joint(generator_net, y, sigma, observed=mask)
    z = sampler.run(log_q, z0, generator).samples
    with torch.no_grad():
        proposal = generator_net(z)
    return mask * y + (1.0 - mask) * proposal


def initial_fill(y: Tensor, mask: Tensor, how: str, generator: torch.Generator, pixel_range: tuple[float, float]) -> Tensor:
    """Values for the missing pixels before the descriptor's revision starts."""
    if how == "zero":
        return torch.zeros_like(y)
    if how == "mean":
        m = mask.expand_as(y)
        total = (y * m).flatten(2).sum(2)
        count = m.flatten(2).sum(2).clamp_min(1.0)
        return (total / count)[..., None, None].expand_as(y)
    if how == "noise":
        lo, hi = pixel_range
        u = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return lo + (hi - lo) * u
    raise ValueError(f"unknown init '{how}'; expected zero, mean or noise")


def complete_with_descriptor(
    descriptor: torch.nn.Module, y: Tensor, mask: Tensor, sampler: Any, generator: torch.Generator,
    init: str = "zero", pixel_range: tuple[float, float] = (-1.0, 1.0),
) -> Tensor:
    """Masked Langevin revision of -E(Y): only the missing pixels move (sampler mask = 1 - M)."""
    start = mask * y + (1.0 - mask) * initial_fill(y, mask, init, generator, pixel_range)
    out = sampler.run(lambda v: -descriptor.energy(v), start, generator, mask=1.0 - mask).samples
    # Re-impose the observed pixels: a sampler's clipping may touch every entry.
    return mask * y + (1.0 - mask) * out.detach()


def complete_classical(method: str, y: Tensor, mask: Tensor) -> Tensor:
    """A classical method of `classical_inpainting`, per image and channel, in float64 numpy."""
    known = mask[:, 0].detach().cpu().numpy() > 0.5
    filled = inpaint_classical(method, y.detach().cpu().double().numpy(), known)
    return torch.from_numpy(filled).to(device=y.device, dtype=y.dtype)


# ---------------------------------------------------------------------------------------
# The registered metric.
def _check_route(instance: Any, attribute: Any, value: str) -> None:
    if value not in LEARNED_ROUTES and value not in CLASSICAL_METHODS and value != MODEL_ROUTE:
        raise ValueError(
            f"'route' must be generator, descriptor, model or a classical method ({', '.join(CLASSICAL_METHODS)}); got {value!r}"
        )


def _check_mask(instance: Any, attribute: Any, value: str) -> None:
    try:
        parse_mask_name(value)
    except ValueError as exc:
        raise ValueError(f"'mask': {exc}") from None


@attrs.frozen(kw_only=True)
class InpaintingOptions:
    """Inpainting recovery error (TPAMI Table 5 / AAAI Table 1 / multigrid and triangle Table 3)."""

    # Test images: the first `n_images` of this dataset, in the model's range.
    data: DatasetRef = DatasetRef(name="digits", options={"split": "test"})
    mask: str = attrs.field(default="M30", validator=_check_mask)
    # Seed of a separate CPU generator for the masks (the same holes in every run and route);
    # "none" = draw them from the evaluation generator.
    mask_seed: Optional[int] = attrs.field(default=None, validator=attrs.validators.optional(non_negative))
    n_images: int = attrs.field(default=1000, validator=positive)
    # generator | descriptor | model (the objective's own inpaint) | mrf_l1 | mrf_l2 | inpaint_nans_0 .. inpaint_nans_5
    route: str = attrs.field(default="generator", validator=_check_route)
    # Langevin steps (TPAMI 4.6: 1000 for the generator's inference).
    steps: int = attrs.field(default=1000, validator=non_negative)
    # Langevin step size delta; "none" = 0.1 (generator route) or 0.002 (descriptor route).
    step_size: Optional[float] = attrs.field(default=None, validator=attrs.validators.optional(positive))
    # Observation noise sigma of the inference; "none" = the generator's own sigma.
    sigma: Optional[float] = attrs.field(default=None, validator=attrs.validators.optional(positive))
    noise: bool = True
    # Descriptor route: how the hole starts.
    init: Literal["zero", "mean", "noise"] = "zero"
    batch: int = attrs.field(default=100, validator=positive)
    # The data scale: [low, high]; the range high - low normalises error and PSNR.
    pixel_range: tuple[float, float] = (-1.0, 1.0)
    # Clamp every completed image to pixel_range before scoring, as writing it out as an image
    # would.  It matters for the methods that overshoot: TPAMI Table 5's inter-3 column (del^4
    # least squares, values far outside the range on faces) is reproduced only with clipping.
    clip: bool = False

    def __attrs_post_init__(self) -> None:
        if not self.pixel_range[0] < self.pixel_range[1]:
            raise ValueError(f"'pixel_range' must be [low, high] with low < high, got {list(self.pixel_range)}")


class Inpainting:
    """Recovery error of occluded test images (value) with PSNR in the details."""

    name = "inpainting"

    def __init__(self, options: InpaintingOptions = InpaintingOptions()) -> None:
        self.options = options

    def _images(self, ctx: EvalContext) -> Tensor:
        o = self.options
        ds = ctx.build_dataset(o.data.name, o.data.options, "data")
        n = min(o.n_images, len(ds))
        return ds.get_batch(torch.arange(n)).float()

    def _model(self, ctx: EvalContext, role: str, shape: tuple[int, ...]) -> torch.nn.Module:
        if role not in ctx.models:
            raise UsageError(
                f"inpainting route '{role}' needs a model with role '{role}'; this run has: {', '.join(ctx.models)}"
            )
        model = ctx.models[role]
        model_shape = tuple(model.output_shape if role == "generator" else model.input_shape)
        if model_shape != shape:
            raise UsageError(
                f"the {role}'s images are {list(model_shape)} but the test images are {list(shape)}: "
                "set data={name=..., options={...}} to a dataset of the model's size"
            )
        return model

    def _sampler(self, ctx: EvalContext, step: float) -> Any:
        entry = ctx.registries.sampler.get("langevin")
        options = entry.options(n_steps=self.options.steps, step_size=step, noise=self.options.noise)
        return ctx.registries.sampler.create("langevin", options)

    def _batches(self, ctx: EvalContext, images: Tensor, masks: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        o = self.options
        n = images.shape[0]
        for start in range(0, n, o.batch):
            ctx.progress(f"inpainting {o.route}: images {start}-{min(start + o.batch, n)} of {n}")
            yield images[start : start + o.batch], masks[start : start + o.batch]

    def _complete_classical(self, ctx: EvalContext, images: Tensor, masks: Tensor) -> tuple[Tensor, str]:
        route = self.options.route
        done = [complete_classical(route, y, m) for y, m in self._batches(ctx, images, masks)]
        return torch.cat(done), f"classical {route} (numpy/scipy, float64, per channel)"

    def _complete_model(self, ctx: EvalContext, images: Tensor, masks: Tensor) -> tuple[Tensor, str]:
        """The objective's own completion (`inpaint(images, observed, generator)`, 1 = observed)."""
        objective = ctx.objective
        if not callable(getattr(objective, "inpaint", None)):
            raise UsageError(f"inpainting route 'model' needs an objective with inpaint(images, observed, generator); "
                             f"{type(objective).__name__} has none (use route = generator or descriptor)")
        done = []
        for y, m in self._batches(ctx, images, masks):
            y, m = y.to(ctx.device), m.to(ctx.device)
            out = objective.inpaint(y, m, ctx.generator)
            done.append((m * y + (1.0 - m) * out.detach()).cpu())  # observed pixels exactly as given
        return torch.cat(done), f"model: {type(objective).__name__}.inpaint (the objective's own sampler; torch)"

    def _complete_learned(self, ctx: EvalContext, images: Tensor, masks: Tensor) -> tuple[Tensor, str]:
        o = self.options
        model = self._model(ctx, o.route, tuple(images.shape[1:]))
        step = DEFAULT_STEP[o.route] if o.step_size is None else o.step_size
        sampler = self._sampler(ctx, step)
        done = []
        for y, m in self._batches(ctx, images, masks):
            y, m = y.to(ctx.device), m.to(ctx.device)
            if o.route == "generator":
                out = complete_with_generator(model, y, m, sampler, ctx.generator, o.sigma)
            else:
                out = complete_with_descriptor(model, y, m, sampler, ctx.generator, o.init, o.pixel_range)
            done.append(out.detach().cpu())
        noise = "with noise" if o.noise else "no noise"
        if o.route == "generator":
            sigma = float(model.sigma if o.sigma is None else o.sigma)
            backend = (f"generator: Langevin inference on observed pixels "
                       f"({o.steps} steps, delta={step:g}, sigma={sigma:g}, {noise}; torch)")
        else:
            backend = (f"descriptor: masked Langevin revision "
                       f"({o.steps} steps, delta={step:g}, {noise}, init={o.init}; torch)")
        return torch.cat(done), backend

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        images = self._images(context)
        mask_generator = context.generator if o.mask_seed is None else torch.Generator().manual_seed(o.mask_seed)
        try:
            masks = parse_mask_name(o.mask).make(images.shape[0], tuple(images.shape[1:]), mask_generator)
        except ValueError as exc:  # e.g. a square larger than the images
            raise UsageError(f"inpainting mask '{o.mask}' on {list(images.shape[1:])} images: {exc}") from None
        if o.route in CLASSICAL_METHODS:
            completed, backend = self._complete_classical(context, images, masks)
        elif o.route == MODEL_ROUTE:
            completed, backend = self._complete_model(context, images, masks)
        else:
            completed, backend = self._complete_learned(context, images, masks)
        if o.clip:
            completed = completed.clamp(o.pixel_range[0], o.pixel_range[1])
        r = o.pixel_range[1] - o.pixel_range[0]
        err = inpainting_error(images, completed, masks, r)
        psnr = inpainting_psnr(images, completed, masks, r)
        pooled_mse = float(inpainting_mse(images, completed, masks).mean())
        n = int(images.shape[0])
        return MetricResult(
            name=f"inpainting[{o.mask},{o.route}]",
            value=float(err.mean()),
            std_error=float(err.std() / math.sqrt(n)) if n > 1 else None,
            n_samples=n,
            backend=backend,
            higher_is_better=False,
            details={
                "psnr": float(psnr.mean()),
                "psnr_std_error": float(psnr.std() / math.sqrt(n)) if n > 1 else None,
                "psnr_of_mean_mse": float(10.0 * np.log10(r**2 / pooled_mse)) if pooled_mse > 0 else float("inf"),
                "mask": o.mask,
                "mask_seed": o.mask_seed,
                "missing_fraction": float((1.0 - masks).mean()),
                "n_images": n,
                "route": o.route,
                "pixel_range": r,
                "clipped": o.clip,
                "normalisation": "error = mean |Y - Y^| / range, PSNR with MAX = range; missing pixels, per image, averaged",
            },
        )
