"""Multi-grid minimal contrastive divergence (Gao et al., Algorithm 1) as an `Objective`.

Each iteration, for the batch of observed images Y_i (in the data's range):

1. start: Y~_i^(0) = Y_i^(0), each image's own 1 x 1 version (`start = "own"`, Algorithm 1 step 3),
   or a draw from p^(0), the 1 x 1 versions of the training images seen so far (`start =
   "histogram"` / `"channel_histogram"`, Section 6; see `start.py`);
2. for each grid k = 1..S (coarse to fine): up-scale grid k-1's samples and run l Langevin
   steps under descriptor k (the sampler in role `revision`, normally `multigrid_langevin`);
3. for each grid k: minimise mean f_k(Y~^(k)) - mean f_k(Y^(k)) with grid k's own optimiser,
   Y^(k) the observed batch down-scaled to grid k (eq. 9).

Models and optimisers are named by role `grid1`, `grid2`, ... (`n_grids` of them).  Sampling
at grid k+1 depends only on descriptor k+1 and on grid k's samples, so updating each grid right
after its own sampling (the code) or all grids after all sampling (Algorithm 1) give the same
result; this implementation samples all grids, then updates.

The paper's learning rate is "decayed logarithmically every 10 iterations" (the code: none).
We read it as MatConvNet's log-spaced schedule (`logspace`), i.e. lr_t = lr_0 * r^floor(t / T):
geometric steps, evenly spaced on a log scale.  The core expresses exactly that per optimiser
(`[optimizers.gridK] lr_decay = r, lr_decay_every = T`), so it is not duplicated here; the
recipes leave it off (the code) and say how to switch it on.

Masked training (Section 7.4): with `train_mask` (e.g. "M32") one mask per image is drawn each
iteration; only the masked (missing) pixels move during sampling, the rest stay as observed, at
every grid (coarse blocks: `masking.py`).  A mask carried by the batch is honoured as well.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import (
    Batch, ConfigError, LogDensity, Parts, SamplerOutput, StepResult, all_positive, contrastive_update, grad_norm,
    in_range, non_negative,
)
from coopcore.masks import mask_name_validator as mask_name

from .grids import check_sizes, downscale_to, grid_sizes, observed_block_means
from .masking import check_train_mask, fraction_in_unit_interval, grid_masks, observation_mask
from .sampler import multigrid_chain
from .start import StartMode, StartPool


def _optional_positive(instance: Any, attribute: Any, value: Optional[tuple[int, ...]]) -> None:
    if value is not None:
        all_positive(instance, attribute, value)


@attrs.frozen(kw_only=True)
class MultigridOptions:
    """Multi-grid minimal CD (Gao et al., Algorithm 1)."""

    # S, the number of learned grids (paper 3: 4x4, 16x16, 64x64); roles grid1..gridS.
    n_grids: int = attrs.field(default=3, validator=in_range(1, 8))
    # d, the block size between grids (paper 4).
    factor: int = attrs.field(default=4, validator=in_range(2, 64))
    # Explicit [start, grid1, ..., gridS] sizes (n_grids + 1 entries, each a multiple of the
    # previous, the last = the image size), e.g. [1, 4, 16, 32] for 32x32 images; replaces
    # `factor`.  none = grids of `factor` ending at the image size.
    sizes: Optional[tuple[int, ...]] = attrs.field(default=None, validator=_optional_positive)
    # "own": each image's own 1x1 version (Algorithm 1); "histogram": drawn from the 1x1 versions
    # of the training images (p^(0) of Section 6); "channel_histogram": each channel drawn
    # from its own one-dimensional histogram.
    start: StartMode = "own"
    # Number of chains with a histogram start; 0 = the batch size.
    n_chains: int = attrs.field(default=0, validator=non_negative)
    # Section 7.4: a mask name of coopcore.masks drawn per image per iteration (paper "M32",
    # a 32x32 square at a random position); none = no masked training.
    train_mask: Optional[str] = attrs.field(default=None, validator=mask_name)
    # A coarse pixel is kept fixed when at least this fraction of its block is observed
    # (1 = only fully observed blocks; partly observed blocks are sampled).  See masking.py.
    coarse_keep_fraction: float = attrs.field(default=1.0, validator=fraction_in_unit_interval)
    # The pixel value the descriptors see as 0: every grid's f is evaluated on Y - origin (the
    # observed and the synthesised images alike; the chains, clipping and samples stay in the
    # data's range).  0 = the data as given.  With batch-statistics normalisation after a
    # bias-free first convolution, f(a Y) = f(Y) for a whole batch, so Langevin steps on f move
    # the batch perpendicular to Y - origin and keep its norm (up to the noise): the samples keep
    # the norm of their 1x1 start about the origin.  The paper's code feeds raw [0, 255] pixels,
    # origin black; data in [-1, 1] put it at mid-grey, where a norm kept from a grey start means
    # grey, low-contrast samples.  -1 puts the origin back at black for [-1, 1] data.
    origin: float = 0.0

    def __attrs_post_init__(self) -> None:
        if self.sizes is not None and len(self.sizes) != self.n_grids + 1:
            raise ValueError(f"'sizes' must list n_grids + 1 = {self.n_grids + 1} sizes (the start grid and "
                             f"every learned grid), got {list(self.sizes)}")
        if self.train_mask is not None and self.start != "own" and self.n_chains:
            raise ValueError("'n_chains' must be 0 (one chain per image) with a 'train_mask'")


class Multigrid:
    """Descriptors at grids 1..S learned by multi-grid minimal CD."""

    # grid1 is always needed; the roles of further grids depend on n_grids and are checked when
    # the objective is built (a missing one is a ConfigError naming it).
    required_models = ("grid1",)
    required_samplers = ("revision",)
    contract_example = {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 16, 16], "n": 8}},
        "models": {
            "grid1": {"name": "multigrid.descriptor", "options": {
                "grid": 1, "input_shape": [1, 4, 4], "channels": [4, 8], "kernels": [3, 3], "strides": [2, 1]}},
            "grid2": {"name": "multigrid.descriptor", "options": {
                "grid": 2, "input_shape": [1, 16, 16], "channels": [4, 8], "kernels": [3, 3], "strides": [2, 2]}},
        },
        "samplers": {"revision": {"name": "multigrid_langevin", "options": {"n_steps": 2, "step_size": 0.1}}},
        "optimizers": {"grid1": {"name": "adam", "lr": 1e-3}, "grid2": {"name": "adam", "lr": 1e-3}},
        "options": {"n_grids": 2, "factor": 4},
    }

    @staticmethod
    def model_shapes(options: MultigridOptions, data_shape: tuple[int, ...]) -> dict[str, Optional[tuple[int, ...]]]:
        """Grid k's descriptor takes the images down-scaled to that grid's size (the core checks
        this before training; sizes it cannot compute are reported when the objective is built)."""
        roles = [f"grid{k}" for k in range(1, options.n_grids + 1)]
        try:
            sizes = (check_sizes(options.sizes, data_shape[1]) if options.sizes is not None
                     else grid_sizes(data_shape[1], options.factor, options.n_grids))
        except (ValueError, IndexError):
            return dict.fromkeys(roles)
        if len(data_shape) != 3:
            return dict.fromkeys(roles)
        return {role: (data_shape[0], size, size) for role, size in zip(roles, sizes[1:])}

    def __init__(self, options: MultigridOptions, parts: Parts) -> None:
        self.options = options
        self.roles = [f"grid{k}" for k in range(1, options.n_grids + 1)]
        for role in self.roles:
            if role not in parts.models:
                raise ConfigError(f"models.{role}", f"the multigrid objective with n_grids = {options.n_grids} "
                                  f"needs a model in role '{role}'")
            if role not in parts.optimizers:
                raise ConfigError(f"optimizers.{role}", f"the multigrid objective needs an optimizer for role '{role}'")
        self.models = [parts.models[r] for r in self.roles]
        self.optimizers = [parts.optimizers[r] for r in self.roles]
        self.sampler = parts.samplers["revision"]
        shape = tuple(parts.data_shape)
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError("data", f"multigrid needs square [C, H, W] images, got shape {list(shape)}")
        try:
            if options.sizes is not None:
                self.sizes = check_sizes(options.sizes, shape[1])
            else:
                self.sizes = grid_sizes(shape[1], options.factor, options.n_grids)
        except ValueError as err:
            key = "sizes" if options.sizes is not None else "factor"
            raise ConfigError(f"objective.options.{key}", str(err)) from None
        self.factors = [b // a for a, b in zip(self.sizes, self.sizes[1:])]
        check_train_mask(options.train_mask, shape, "objective.options.train_mask")
        self.channels = shape[0]
        self.starts = StartPool(parts.n_train, shape[0], self.sizes[0], parts.device)

    def _log_ps(self) -> list[LogDensity]:
        origin = self.options.origin
        if origin:
            return [lambda y, m=m: -m.energy(y - origin) for m in self.models]
        return [lambda y, m=m: -m.energy(y) for m in self.models]

    def _chain(self, start: Tensor, generator: torch.Generator, x: Optional[Tensor] = None,
               observed: Optional[Tensor] = None) -> list[SamplerOutput]:
        masks = values = None
        if observed is not None:
            masks, values = grid_masks(x, observed, self.sizes[1:], self.options.coarse_keep_fraction)
        return multigrid_chain(self.sampler, self._log_ps(), start, self.factors, generator, masks, values)

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        o = self.options
        x = batch.x
        observed = observation_mask(batch, o.train_mask, generator)
        n = o.n_chains or x.shape[0]
        if observed is not None and o.start != "own" and n != x.shape[0]:
            raise ConfigError("objective.options.n_chains", "masked training needs one chain per observed image")
        start = self.starts.start(x, batch.index, n, generator, o.start)
        outs = self._chain(start, generator, x, observed)
        scalars: dict[str, Tensor] = {}
        histograms: dict[str, Tensor] = {}
        total = torch.zeros((), device=x.device)
        for role, model, opt, size, out in zip(self.roles, self.models, self.optimizers, self.sizes[1:], outs):
            observed_k, synthesised = downscale_to(x, size), out.samples
            if o.origin:
                observed_k, synthesised = observed_k - o.origin, synthesised - o.origin
            loss, f_obs, f_syn = contrastive_update(model, opt, observed_k, synthesised)
            total = total + loss
            scalars[f"loss_{role}"] = loss
            scalars[f"score_obs_{role}"] = f_obs.mean()
            scalars[f"score_syn_{role}"] = f_syn.mean()
            scalars[f"grad_norm_{role}"] = grad_norm(model)
            if out.grad_norms.numel():
                scalars[f"langevin_grad_norm_{role}"] = out.grad_norms[-1]
            histograms[f"score_obs_{role}"] = f_obs
            histograms[f"score_syn_{role}"] = f_syn
        scalars["loss_descriptor"] = total
        if observed is not None:
            scalars["missing_fraction"] = 1.0 - observed.mean()
        return StepResult(scalars=scalars, histograms=histograms)

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Finest-grid samples (`revised`) and each grid's (`grid1`, ...), from start images drawn
        from p^(0), the 1 x 1 versions of the training images seen so far."""
        mode = "channel_histogram" if self.options.start == "channel_histogram" else "histogram"
        outs = self._chain(self.starts.draw(n, generator, mode), generator)
        named = {role: out.samples.detach() for role, out in zip(self.roles, outs)}
        named["revised"] = outs[-1].samples.detach()
        return named

    def inpaint(self, y: Tensor, observed: Tensor, generator: torch.Generator) -> Tensor:
        """Complete images `y` [B, C, H, W] whose pixels with `observed` == 0 are unknown.

        The chain starts at the 1 x 1 mean of each image's OBSERVED pixels (the hole is not
        known at test time) and runs the masked multi-grid sampling of training; observed
        pixels come back exactly as given."""
        observed = observed.to(y.device, y.dtype)
        start, _ = observed_block_means(y, observed, self.sizes[0])
        return self._chain(start, generator, y, observed)[-1].samples.detach()

    def per_example_state(self) -> dict[str, Tensor]:
        """The 1 x 1 start images and which examples were seen, indexed by training example (the
        histogram p^(0) draws from): a run on several processes keeps them identical on every rank."""
        return {"pool": self.starts.pool, "seen": self.starts.seen}

    def state_dict(self) -> dict[str, Any]:
        return self.starts.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "pool" in state:
            self.starts.load_state_dict(state)
