"""The `gan` objective: adversarial training of a generator against the descriptor used as a
discriminator, D(x) = descriptor.score(x) (a logit per example).

One iteration = `d_steps` discriminator updates, then one generator update:

- D: minimise d_loss(D(x_real), D(G(z))) [+ WGAN-GP penalty] [+ lazy R1 on x_real];
- G: minimise g_loss(D(G(z))) with fresh latents;
- then the generator's moving average (StyleGAN2's EMA) is updated.

This is also the adversarial stage of CoopInit (Algorithm 2; `coopinit` objective): the same
`Adversarial` engine runs there on the descriptor/generator pair the cooperative stage trained.
Losses are those of CoopInit appendix C (NS, hinge, WAS, WAS-GP with lambda = 10) plus R1.

Choices where the papers are silent or where we depart from StyleGAN2-ADA's code:

- Lazy R1 (every k-th D update, scaled by k) is added to that update's loss; StyleGAN2-ADA
  takes a separate optimiser step for it (Dreg), so it makes k + 1 Adam steps where we make k.
  Same expected gradient per iteration.
- StyleGAN2-ADA's optimiser settings.  StyleGAN2-ADA builds each network's Adam with
  lr * k/(k+1) and betas ** (k/(k+1)), k = that network's lazy-regularisation interval (G 4,
  D 16; its `cifar` config keeps both), and applies this whenever the interval is set, whether
  or not the regulariser is on: with path-length regularisation off (`cifar`) the generator
  still trains at 0.8 x the nominal lr with beta2 = 0.99 ** 0.8 ~ 0.992, and with gamma = 0 the
  discriminator at 16/17 x lr (its regularisation phases then compute no gradient and leave
  Adam untouched).  So the rescaling is part of the base model's effective settings, not a
  correction for the extra step: `lazy_adam_intervals = [4, 16]` reproduces it on the
  optimisers the recipe builds; the default [0, 0] leaves them as written.
- The real images of the d_steps > 1 D updates of an iteration: by default the same batch for
  every update; `d_batches = "split"` gives each update its own part of the batch (BigGAN).
- WGAN with weight clipping (Arjovsky et al. 2017, Algorithm 1): `weight_clip = c` clamps every
  discriminator parameter to [-c, c] right after each discriminator step (the paper: c = 0.01,
  RMSprop lr 5e-5, n_critic = `d_steps` = 5).  It clamps *every* parameter, biases and any
  normalisation weights included, as the authors' code does; None (the default) = no clipping.
- EMA on by default with StyleGAN2-ADA's `cifar` settings (half-life 500k images, ramp-up
  0.05), since CoopInit's base config uses it; `g_ema_kimg = 0` turns it off.  `samples()`
  draws "generator" from the average (and "generator_raw" from the trained network).
- ADA (`ada` options table, off by default; ada.py): every D evaluation (reals, fakes, the G
  loss, the penalties) sees augmented images, p adapting to sign(D(x_real)); ada.py lists where
  it differs from StyleGAN2-ADA's pipeline.
- zCR (`zcr` options table, off by default; CoopInit Table 6, Zhao et al. 2021): each D update
  adds lambda_dis * mean (D(G(z)) - D(G(z + dz)))^2, reusing that update's fakes G(z) and D(G(z)),
  and the G update adds -lambda_gen * mean ||G(z) - G(z + dz)||^2 on its own fresh latents;
  dz ~ N(0, noise_std^2 I) perturbs the whole latent vector the generator takes (for the
  StyleGAN2 generator with noise_mode "latent" that includes its noise maps).  With ADA on,
  D(G(z + dz)) is augmented independently, as every D evaluation is.  Off: no extra random
  numbers, scalars or state.
- Class conditioning (a descriptor and/or generator with `n_classes` > 0; coopcore.conditioning):
  reals are scored as D(x, batch.y); every generated batch gets labels from `fake_labels`
  ("uniform": uniform over the classes from the step's generator, drawn right after the latents;
  "real": the real batch's labels, the training set's label frequencies that StyleGAN2-ADA's
  draw from the dataset's label list has) and D sees (G(z, y_fake), y_fake).  The G update draws
  fresh labels as it draws fresh latents.  R1 uses the real labels; WGAN-GP scores its
  interpolates eps x_real + (1 - eps) x_fake with the real batch's labels (the papers do not
  say; an interpolate has no label of its own, and the real one keeps the penalty on the data
  side); zCR scores G(z + dz, y_fake) with the fakes' labels.  ADA augments images only.
  `samples(n, generator, labels=None)`: classes i % n_classes unless `labels` are given; the
  EMA generator takes the same labels.  Unconditional runs draw no labels (same numbers).
"""
from __future__ import annotations

from typing import Any, Callable, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor, nn

from coopcore import Batch, Parts, StepResult, UsageError, non_negative, positive
from coopcore.conditioning import FAKE_LABEL_MODES, draw_labels, is_conditional, n_classes, run_classes, sample_labels

from .ada import Ada, AdaOptions
from .ema import GeneratorEMA, ema_beta
from .losses import (
    d_loss,
    g_loss,
    gradient_penalty,
    lazy_r1_penalty,
    perturb_latent,
    zcr_discriminator_term,
    zcr_generator_term,
)

LOSSES = ("ns", "hinge", "wgan", "wgan_gp")


def _optional_positive(instance: Any, attribute: attrs.Attribute, value: Optional[float]) -> None:
    """Validator: > 0 or none."""
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0 or \"none\" (no clipping), got {value!r}")


def _two_non_negative(instance: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    """Validator: exactly two integers >= 0."""
    if len(value) != 2 or any(int(v) != v or v < 0 for v in value):
        raise ValueError(f"'{attribute.name}' must be two integers >= 0 ([generator, discriminator]), "
                         f"got {list(value)!r}")


def _optional_non_negative(instance: Any, attribute: attrs.Attribute, value: Optional[float]) -> None:
    """Validator: >= 0 or none."""
    if value is not None and not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0 or \"none\", got {value!r}")


def fake_labels_field() -> Any:
    """The `fake_labels` option of every objective that trains a conditional generator."""
    return attrs.field(default="uniform", validator=attrs.validators.in_(FAKE_LABEL_MODES))


@attrs.frozen(kw_only=True)
class EmaOptions:
    """The generator's exponential moving average (StyleGAN2-ADA `ema_kimg` / `ema_rampup`)."""

    # Half-life of the average in thousands of images; 0 = no average.  Default: StyleGAN2-ADA's
    # `cifar` config (CoopInit's base model), 500.
    g_ema_kimg: float = attrs.field(default=500.0, validator=non_negative)
    # Half-life = min(g_ema_kimg * 1000, g_ema_rampup * images seen); "none" = no ramp-up.
    # StyleGAN2-ADA `cifar`: 0.05.
    g_ema_rampup: Optional[float] = attrs.field(default=0.05, validator=_optional_non_negative)
    # Until this many thousand images have been seen the average copies the generator, then it
    # averages (BigGAN's `ema_start`, counted there in iterations).  0 = average from the start.
    g_ema_start_kimg: float = attrs.field(default=0.0, validator=non_negative)


@attrs.frozen(kw_only=True)
class ZcrOptions:
    """Latent consistency regularisation (zCR; Zhao et al. 2021, "Improved consistency
    regularization for GANs"), CoopInit Table 6's "+ R1 + zCR".  Off while both weights are 0."""

    # lambda_dis: weight of (D(G(z)) - D(G(z + dz)))^2 in D's loss; 0 = no D term.
    # Zhao et al. 2021: 5 as we read them (docs/coopinit.md, "Table 6 regularisers").
    weight_dis: float = attrs.field(default=0.0, validator=non_negative)
    # lambda_gen: weight of -||G(z) - G(z + dz)||^2 in G's loss; 0 = no G term.  Zhao et al.: 0.5.
    weight_gen: float = attrs.field(default=0.0, validator=non_negative)
    # sigma_noise: standard deviation of dz ~ N(0, sigma^2 I) (Zhao et al.: 0.03).
    noise_std: float = attrs.field(default=0.03, validator=positive)
    # ||G(z) - G(z + dz)||^2 per example: "mean" over its elements (MSE scale) or "sum" (the
    # squared L2 norm; 3072 times larger on 32x32 RGB).  The paper writes a norm without its
    # reduction; "mean" keeps lambda_gen independent of the image size.
    gen_reduction: Literal["mean", "sum"] = attrs.field(default="mean", validator=attrs.validators.in_(("mean", "sum")))


@attrs.frozen(kw_only=True)
class GanOptions(EmaOptions):
    """GAN training with the descriptor as discriminator (NS / hinge / WGAN / WGAN-GP, R1, EMA)."""

    # Adversarial loss: "ns" non-saturating, "hinge", "wgan" (Wasserstein, no penalty) or
    # "wgan_gp" (Wasserstein + gradient penalty with gp_lambda, 10 by default).
    loss: Literal["ns", "hinge", "wgan", "wgan_gp"] = attrs.field(default="ns", validator=attrs.validators.in_(LOSSES))
    # Gradient-penalty coefficient lambda on random interpolates.  "none" = 10 with "wgan_gp"
    # (Gulrajani et al.; CoopInit appendix C) and 0 (off) with the other losses; a number adds
    # the penalty to any loss.
    gp_lambda: Optional[float] = attrs.field(default=None, validator=_optional_non_negative)
    # R1 coefficient gamma on real data; 0 = off.  (StyleGAN2-ADA cifar: 0.01; CoopInit: 0.)
    r1_gamma: float = attrs.field(default=0.0, validator=non_negative)
    # Lazy regularisation: R1 every r1_interval-th discriminator update, scaled by r1_interval
    # (StyleGAN2 uses 16); 1 = every update (CoopInit's model-analysis tables).
    r1_interval: int = attrs.field(default=1, validator=positive)
    # Discriminator updates per generator update (WGAN papers use 5; StyleGAN2 1).
    d_steps: int = attrs.field(default=1, validator=positive)
    # The real images of the d_steps D updates: "same" = the iteration's whole batch for every
    # update; "split" = the batch cut into d_steps equal parts, one per update, and the G update
    # generates a part's worth (BigGAN's code: batch_size x num_D_steps real images per G step).
    # With "split" the batch size must be a multiple of d_steps.
    d_batches: Literal["same", "split"] = attrs.field(default="same", validator=attrs.validators.in_(("same", "split")))
    # WGAN weight clipping: after every discriminator step each of its parameters is clamped to
    # [-weight_clip, weight_clip] (Arjovsky et al.: 0.01); "none" = off.
    weight_clip: Optional[float] = attrs.field(default=None, validator=_optional_positive)
    # [k_G, k_D]: StyleGAN2-ADA's lazy-regularisation intervals, which set its effective Adam
    # settings: each optimiser runs at lr * k/(k+1) with betas ** (k/(k+1)) (StyleGAN2-ADA: [4, 16]
    # in every config, `cifar` included, regulariser on or off).  0 = that optimiser as the recipe
    # builds it (the default, [0, 0]).  Applied once, when the objective is built.
    lazy_adam_intervals: tuple[int, int] = attrs.field(default=(0, 0), validator=_two_non_negative)
    # Adaptive discriminator augmentation (StyleGAN2-ADA; plugins/coop_gan/ada.py): an `[ada]`
    # table (augment = "none" | "bgc", augment_p, augment_fixed, ada_target, ada_interval,
    # ada_kimg, ada_p_max, clamp).  Default: off.  In `coopinit` it acts in the adversarial stage.
    ada: AdaOptions = attrs.field(factory=AdaOptions)
    # Latent consistency regularisation (zCR): a `[zcr]` table (weight_dis, weight_gen,
    # noise_std, gen_reduction).  Default: off.  In `coopinit` it acts in the adversarial stage.
    zcr: ZcrOptions = attrs.field(factory=ZcrOptions)
    # Conditional models only: labels of generated examples, "uniform" over the classes or
    # "real" (the real batch's labels: the training set's class frequencies).
    fake_labels: Literal["uniform", "real"] = fake_labels_field()

    def __attrs_post_init__(self) -> None:
        if self.loss == "wgan_gp" and self.gp_lambda == 0:
            raise ValueError("'gp_lambda' must be > 0 with loss 'wgan_gp' (use loss 'wgan' for no penalty)")

    @property
    def gp_weight(self) -> float:
        """The gradient-penalty coefficient in force (see `gp_lambda`)."""
        if self.gp_lambda is not None:
            return self.gp_lambda
        return 10.0 if self.loss == "wgan_gp" else 0.0

    @property
    def base_loss(self) -> str:
        """The loss function without the penalty ("wgan_gp" is "wgan" + gradient penalty)."""
        return "wgan" if self.loss == "wgan_gp" else self.loss


def lazy_ratio(interval: int) -> float:
    """StyleGAN2-ADA's minibatch ratio k/(k+1) for a lazy-regularisation interval k (1 for k = 0:
    no lazy regularisation, settings as given)."""
    return interval / (interval + 1) if interval > 0 else 1.0


def apply_lazy_adam_ratio(optimizer: torch.optim.Optimizer, interval: int) -> None:
    """Give `optimizer` StyleGAN2-ADA's effective settings for lazy interval k: lr * k/(k+1) and,
    where the algorithm has them, betas ** (k/(k+1)).

    Idempotent: each parameter group records the ratio it carries ("lazy_ratio"; saved with the
    optimiser's state), so building the objective again on a resumed optimiser, or loading a
    checkpoint into a freshly rescaled one, never rescales twice.
    """
    ratio = lazy_ratio(interval)
    for group in optimizer.param_groups:
        done = group.get("lazy_ratio", 1.0)
        if done == ratio:
            continue
        # Undo a different earlier ratio first, so the result depends only on `interval`.
        scale = ratio / done
        group["lr"] = group["lr"] * scale
        if "betas" in group:
            group["betas"] = tuple(b ** scale for b in group["betas"])
        group["lazy_ratio"] = ratio


def clip_parameters(module: nn.Module, c: float) -> None:
    """Clamp every parameter of `module` to [-c, c] in place (WGAN's Lipschitz constraint by
    weight clipping, Arjovsky et al. 2017, Algorithm 1 line 8)."""
    with torch.no_grad():
        for p in module.parameters():
            p.clamp_(-c, c)


class frozen_parameters:
    """Context manager: no parameter of `module` requires grad inside (a backward pass through it
    then reaches only its input), the previous flags are restored on exit."""

    def __init__(self, module: nn.Module) -> None:
        self.params = list(module.parameters())
        self.flags: list[bool] = []

    def __enter__(self) -> None:
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: object) -> None:
        for p, flag in zip(self.params, self.flags):
            p.requires_grad_(flag)


class Labels:
    """Who takes labels in a descriptor/generator pair, and the labels generated examples get."""

    def __init__(self, descriptor: nn.Module, generator: nn.Module, mode: str = "uniform") -> None:
        self.classes = run_classes([descriptor, generator])
        self.d, self.g = is_conditional(descriptor), is_conditional(generator)
        self.mode = mode

    def check_batch(self, y: Optional[Tensor]) -> None:
        if self.classes and y is None:
            raise ValueError("the descriptor/generator pair is conditional but the batch has no labels (batch.y); "
                             "the trainer fills it from the dataset's get_labels")

    def fake(self, n: int, generator: torch.Generator, device: torch.device,
             real: Optional[Tensor] = None) -> Optional[Tensor]:
        """Labels of `n` generated examples (None in an unconditional pair: nothing is drawn)."""
        if not self.classes:
            return None
        return draw_labels(n, self.classes, generator, device, self.mode, real)  # type: ignore[arg-type]

    def for_samples(self, n: int, device: torch.device, labels: Optional[Tensor] = None) -> Optional[Tensor]:
        """Labels of `n` samples: `labels` (int64 [n]) when given, else classes i % n_classes;
        None for an unconditional pair, which refuses labels."""
        return sample_labels(n, self.classes, device, labels, who="neither model")

    def generate(self, net: nn.Module, z: Tensor, y: Optional[Tensor]) -> Tensor:
        """G(z) or G(z, y) for a conditional generator."""
        return net(z, y) if self.g else net(z)

    def score(self, descriptor: nn.Module, x: Tensor, y: Optional[Tensor]) -> Tensor:
        """D(x) or D(x, y) for a conditional descriptor."""
        return descriptor.score(x, y) if self.d else descriptor.score(x)


class Adversarial:
    """The adversarial updates on a descriptor/generator pair (shared by `gan` and `coopinit`)."""

    def __init__(self, options: GanOptions, descriptor: nn.Module, generator: nn.Module,
                 opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer) -> None:
        self.options = options
        self.descriptor, self.generator = descriptor, generator
        self.opt_d, self.opt_g = opt_d, opt_g
        # StyleGAN2-ADA's effective Adam settings (lazy_adam_intervals); no-op for [0, 0].  These
        # are the optimisers of the whole run (CoopInit's cooperative stage uses them too).
        k_g, k_d = options.lazy_adam_intervals
        apply_lazy_adam_ratio(opt_g, k_g)
        apply_lazy_adam_ratio(opt_d, k_d)
        # Number of discriminator updates so far: decides when lazy R1 is due; checkpointed.
        self.d_updates = 0
        # ADA: augmentation before every D evaluation and its adaptive p; None = off (then no
        # random numbers are drawn and every number is as without it).
        self.ada = Ada(options.ada) if options.ada.augment != "none" else None
        # The last G update's extra terms (zCR), for the step's scalars; empty while zCR is off.
        self.last_g_terms: dict[str, Tensor] = {}
        self.labels = Labels(descriptor, generator, options.fake_labels)

    def discriminate(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        """D(x) (or D(x, y) when conditional): the descriptor's score, one logit per example."""
        return self.labels.score(self.descriptor, x, y)

    def critic(self, generator: torch.Generator, y: Optional[Tensor] = None) -> Callable[[Tensor], Tensor]:
        """D as the losses and penalties see it, for labels `y` (ignored when D is unconditional):
        D(augment(x), y) with ADA on (fresh augmentations from `generator` at each call, as
        StyleGAN2-ADA augments inside every D evaluation), else `discriminate` itself."""
        ada = self.ada
        if ada is None:
            if y is None or not self.labels.d:
                return self.discriminate
            return lambda x: self.discriminate(x, y)
        return lambda x: self.discriminate(ada.augment(x, generator), y)

    def fake(self, n: int, generator: torch.Generator, y: Optional[Tensor] = None) -> Tensor:
        return self.labels.generate(self.generator, self.generator.sample_latent(n, generator), y)

    def d_update(self, x_real: Tensor, generator: torch.Generator,
                 y_real: Optional[Tensor] = None) -> dict[str, Tensor]:
        """One discriminator step; returns its loss terms and the logits (detached)."""
        o = self.options
        self.labels.check_batch(y_real)
        with torch.no_grad():
            # = self.fake(n), with the latents kept for zCR's perturbation.
            z = self.generator.sample_latent(x_real.shape[0], generator)
            y_fake = self.labels.fake(x_real.shape[0], generator, x_real.device, y_real)
            x_fake = self.labels.generate(self.generator, z, y_fake)
        critic = self.critic(generator, y_real)
        critic_fake = self.critic(generator, y_fake)
        d_real = critic(x_real)
        d_fake = critic_fake(x_fake)
        loss = d_loss(o.base_loss, d_real, d_fake)
        zero = torch.zeros((), device=x_real.device)
        gp = r1 = zero
        extra: dict[str, Tensor] = {}
        if o.zcr.weight_dis > 0:
            # zCR, D term: the same fakes' logits against those of G at perturbed latents (G
            # is not trained here, so its outputs carry no graph).
            with torch.no_grad():
                x_pert = self.labels.generate(self.generator, perturb_latent(z, o.zcr.noise_std, generator), y_fake)
            extra["zcr_d"] = zcr_discriminator_term(d_fake, critic_fake(x_pert), o.zcr.weight_dis)
        if o.gp_weight > 0:
            gp = gradient_penalty(critic, x_real, x_fake, generator, o.gp_weight)
        if o.r1_gamma > 0:
            pen = lazy_r1_penalty(critic, x_real, self.d_updates, o.r1_gamma, o.r1_interval)
            if pen is not None:
                r1 = pen
        self.opt_d.zero_grad(set_to_none=True)
        total = loss + gp + r1
        for term in extra.values():  # added only when on, so the default sum is unchanged
            total = total + term
        total.backward()
        self.opt_d.step()
        if o.weight_clip is not None:
            clip_parameters(self.descriptor, o.weight_clip)
        self.d_updates += 1
        if self.ada is not None:
            self.ada.observe(d_real, x_real.shape[0])  # r_t: signs of D on the augmented reals
        return {"loss_d": loss.detach(), "d_real": d_real.detach(), "d_fake": d_fake.detach(),
                "gp": gp.detach(), "r1": r1.detach(), **{k: v.detach() for k, v in extra.items()}}

    def g_update(self, n: int, generator: torch.Generator, y_real: Optional[Tensor] = None) -> Tensor:
        """One generator step on fresh latents (and fresh labels when conditional; `y_real` is
        only used by fake_labels = "real"); D's parameters get no gradients."""
        o = self.options
        with frozen_parameters(self.descriptor):
            z = self.generator.sample_latent(n, generator)  # = self.fake(n), latents kept for zCR
            device = z.device
            y = self.labels.fake(n, generator, device, y_real)
            x = self.labels.generate(self.generator, z, y)
            loss_g = g_loss(o.base_loss, self.critic(generator, y)(x))
            total = loss_g
            self.last_g_terms = {}
            if o.zcr.weight_gen > 0:
                # zCR, G term: both images carry G's graph, D is not evaluated.
                x_pert = self.labels.generate(self.generator, perturb_latent(z, o.zcr.noise_std, generator), y)
                zcr_g = zcr_generator_term(x, x_pert, o.zcr.weight_gen, o.zcr.gen_reduction)
                total = loss_g + zcr_g
                self.last_g_terms["zcr_g"] = zcr_g.detach()
            self.opt_g.zero_grad(set_to_none=True)
            total.backward()
            self.opt_g.step()
        return loss_g.detach()

    def step(self, x_real: Tensor, generator: torch.Generator, y_real: Optional[Tensor] = None) -> StepResult:
        """`d_steps` D updates on the real batch (and its labels `y_real` when conditional), the
        same batch each time or one part of it each (`d_batches`), then one G update."""
        xs, ys = self.d_batches(x_real, y_real)
        for x_k, y_k in zip(xs, ys):
            d = self.d_update(x_k, generator, y_k)
        loss_g = self.g_update(xs[-1].shape[0], generator, ys[-1])
        scalars = {"loss_d": d["loss_d"], "loss_g": loss_g, "d_real": d["d_real"].mean(),
                   "d_fake": d["d_fake"].mean(), "gp": d["gp"], "r1": d["r1"]}
        if "zcr_d" in d:
            scalars["zcr_d"] = d["zcr_d"]
        scalars.update(self.last_g_terms)
        if self.ada is not None:
            scalars["augment_p"] = torch.tensor(self.ada.p, device=x_real.device)
        return StepResult(scalars=scalars, histograms={"d_real": d["d_real"], "d_fake": d["d_fake"]})

    def d_batches(self, x_real: Tensor, y_real: Optional[Tensor]) -> tuple[list[Tensor], list[Optional[Tensor]]]:
        """The real images (and labels) of each of the iteration's D updates."""
        k = self.options.d_steps
        if self.options.d_batches == "same":
            return [x_real] * k, [y_real] * k
        n = x_real.shape[0]
        if n % k:
            raise UsageError(f"objective option d_batches = \"split\" cuts each batch into d_steps = {k} equal parts, "
                             f"but the batch has {n} images: set data.batch_size to a multiple of {k}")
        xs = list(x_real.split(n // k))
        ys = [None] * k if y_real is None else list(y_real.split(n // k))
        return xs, ys

    def ada_state(self) -> dict[str, Any]:
        """ADA's part of the objective's state ({"ada": p and the r_t accumulator}); empty when
        ADA is off, so existing checkpoints and states stay as they were."""
        return {"ada": self.ada.state_dict()} if self.ada is not None else {}

    def load_ada_state(self, state: Mapping[str, Any]) -> None:
        """Restore ADA's state from an objective state (a state without it keeps the initial p)."""
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])


class EmaTracker:
    """Counts images and keeps the generator's EMA (when switched on) for an objective."""

    def __init__(self, options: EmaOptions, generator: nn.Module) -> None:
        self.options = options
        self.generator = generator
        self.images = 0  # training images consumed so far (CoopInit's N); checkpointed
        self.ema = GeneratorEMA(generator) if options.g_ema_kimg > 0 else None

    def after_step(self, batch_size: int) -> None:
        """Count the batch, then move the average towards the generator."""
        self.images += batch_size
        if self.ema is not None:
            o = self.options
            self.ema.update(self.generator, ema_beta(batch_size, self.images, o.g_ema_kimg, o.g_ema_rampup,
                                                     o.g_ema_start_kimg))

    def sample_labels(self, n: int, device: torch.device, labels: Optional[Tensor] = None) -> Optional[Tensor]:
        """The labels of `n` samples of a conditional generator: `labels` when given (int64 [n]),
        else classes i % n_classes; None for an unconditional generator, which refuses labels."""
        return sample_labels(n, n_classes(self.generator), device, labels, who="the generator")

    def generate(self, net: nn.Module, z: Tensor, y: Optional[Tensor]) -> Tensor:
        return net(z) if y is None else net(z, y)

    def samples(self, n: int, generator: torch.Generator, labels: Optional[Tensor] = None) -> dict[str, Tensor]:
        """"generator": from the average when there is one (else the network); "generator_raw"
        as well when there is an average.  Both use the same latents (and labels: `labels`, or
        classes i % n_classes for a conditional generator)."""
        with torch.no_grad():
            z = self.generator.sample_latent(n, generator)
            y = self.sample_labels(n, z.device, labels)
            raw = self.generate(self.generator, z, y)
            if self.ema is None:
                return {"generator": raw}
            return {"generator": self.generate(self.ema.module, z, y), "generator_raw": raw}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"images": self.images}
        if self.ema is not None:
            state["g_ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.images = int(state.get("images", 0))
        if self.ema is not None and "g_ema" in state:
            self.ema.load_state_dict(state["g_ema"])


TINY_IMAGE_EXAMPLE: dict[str, Any] = {
    "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [3, 8, 8], "n": 8}},
    "models": {
        "descriptor": {"name": "gan.discriminator.dcgan", "options": {"input_shape": [3, 8, 8], "channels": [4, 8]}},
        "generator": {"name": "gan.generator.dcgan", "options": {"latent_dim": 4, "output_shape": [3, 8, 8],
                                                                 "channels": [8, 4]}},
    },
    "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3, "betas": [0.0, 0.99]},
                   "generator": {"name": "adam", "lr": 1e-3, "betas": [0.0, 0.99]}},
}


# A tiny class-conditional StyleGAN2 pair on 8x8 digits (labels 0-9), for the contract's label path.
_TINY_SG2 = {"resolution": 8, "img_channels": 1, "channel_base": 32, "channel_max": 8, "n_classes": 10}
TINY_CONDITIONAL_EXAMPLE: dict[str, Any] = {
    "data": {"name": "digits", "batch_size": 4, "options": {"size": 8, "limit": 12}},
    "models": {
        "descriptor": {"name": "coopinit.discriminator.stylegan2",
                       "options": {**_TINY_SG2, "mbstd_group_size": 2, "mapping_layers": 1}},
        "generator": {"name": "coopinit.generator.stylegan2",
                      "options": {**_TINY_SG2, "z_dim": 8, "w_dim": 8, "mapping_layers": 1}},
    },
    "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3, "betas": [0.0, 0.99]},
                   "generator": {"name": "adam", "lr": 1e-3, "betas": [0.0, 0.99]}},
}


class Gan:
    """GAN training; the discriminator is the descriptor network (D(x) = descriptor.score(x))."""

    required_models = ("descriptor", "generator")
    required_samplers = ()
    contract_example = {**TINY_IMAGE_EXAMPLE,
                        "options": {"loss": "ns", "r1_gamma": 0.1, "r1_interval": 2, "g_ema_kimg": 1.0}}
    # Every label path at once: R1, WGAN-GP interpolates, zCR on both sides, ADA.
    contract_conditional_example = {
        **TINY_CONDITIONAL_EXAMPLE,
        "options": {"loss": "wgan_gp", "r1_gamma": 0.1, "g_ema_kimg": 1.0,
                    "zcr": {"weight_dis": 1.0, "weight_gen": 0.1},
                    "ada": {"augment": "bgc", "augment_p": 0.5, "augment_fixed": True}},
    }

    def __init__(self, options: GanOptions, parts: Parts) -> None:
        self.options = options
        self.descriptor = parts.models["descriptor"]
        self.generator = parts.models["generator"]
        self.adversarial = Adversarial(options, self.descriptor, self.generator,
                                       parts.optimizers["descriptor"], parts.optimizers["generator"])
        self.tracker = EmaTracker(options, self.generator)

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        result = self.adversarial.step(batch.x, generator, batch.y)
        self.tracker.after_step(batch.x.shape[0])
        return result

    def samples(self, n: int, generator: torch.Generator, labels: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Generator samples (EMA and raw); conditional: classes i % n_classes, or `labels`."""
        return self.tracker.samples(n, generator, labels)

    def state_dict(self) -> dict[str, Any]:
        return {"d_updates": self.adversarial.d_updates, **self.tracker.state_dict(), **self.adversarial.ada_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.adversarial.d_updates = int(state.get("d_updates", 0))
        self.adversarial.load_ada_state(state)
        self.tracker.load_state_dict(state)
