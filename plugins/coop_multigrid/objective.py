"""Multi-grid minimal contrastive divergence (Gao et al., Algorithm 1) as an `Objective`.

Each iteration, for the batch of observed images Y_i (in the data's range):

1. start: Y~_i^(0) = Y_i^(0), each image's own 1 x 1 version (`start = "own"`, Algorithm 1 step 3),
   or a draw from the 1 x 1 versions of the training images seen so far (`start = "histogram"`,
   p^(0) = the empirical distribution of the 1 x 1 images, Section 6);
2. for each grid k = 1..S (coarse to fine): up-scale grid k-1's samples and run l Langevin
   steps under descriptor k (the sampler in role `revision`, normally `multigrid_langevin`);
3. for each grid k: minimise mean f_k(Y~^(k)) - mean f_k(Y^(k)) with grid k's own optimiser,
   Y^(k) the observed batch down-scaled to grid k.

Models and optimisers are named by role `grid1`, `grid2`, ... (`n_grids` of them).  Sampling
at grid k+1 depends only on descriptor k+1 and on grid k's samples, so updating each grid right
after its own sampling (the code) or all grids after all sampling (Algorithm 1) give the same
result; this implementation samples all grids, then updates.

With a batch mask (1 = observed pixel; Section 7.4 inpainting) the pixels of each grid whose
d x d block is fully observed are kept at the observed values during sampling.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import Batch, ConfigError, Parts, StepResult, in_range, non_negative

from .grids import downscale_to, draw_start, grid_sizes, start_images
from .sampler import multigrid_chain


@attrs.frozen(kw_only=True)
class MultigridOptions:
    """Multi-grid minimal CD (Gao et al., Algorithm 1)."""

    # S, the number of learned grids (paper 3: 4x4, 16x16, 64x64); roles grid1..gridS.
    n_grids: int = attrs.field(default=3, validator=in_range(1, 8))
    # d, the block size between grids (paper 4).
    factor: int = attrs.field(default=4, validator=in_range(2, 64))
    # "own": each image's own 1x1 version (Algorithm 1); "histogram": drawn from the 1x1 versions
    # of the training images (p^(0) of Section 6).
    start: Literal["own", "histogram"] = "own"
    # Number of chains with start = "histogram"; 0 = the batch size.
    n_chains: int = attrs.field(default=0, validator=non_negative)


def _grad_norm(module: torch.nn.Module) -> Tensor:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.cat(grads).norm()


class Multigrid:
    """Descriptors at grids 1..S learned by multi-grid minimal CD."""

    # grid1 is always needed; the roles of further grids depend on n_grids and are checked when
    # the objective is built (a missing one is a ConfigError naming it).
    required_models = ("grid1",)
    required_samplers = ("revision",)

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
            self.sizes = grid_sizes(shape[1], options.factor, options.n_grids)
        except ValueError as err:
            raise ConfigError("objective.options", str(err)) from None
        for role, model, size in zip(self.roles, self.models, self.sizes[1:]):
            want = (shape[0], size, size)
            if tuple(model.input_shape) != want:
                raise ConfigError(f"models.{role}", f"grid '{role}' works on {list(want)} images, "
                                  f"the model takes {list(model.input_shape)}")
        self.channels = shape[0]
        self.pool = torch.zeros(parts.n_train, shape[0], self.sizes[0], self.sizes[0], device=parts.device)
        self.seen = torch.zeros(parts.n_train, device=parts.device)

    def _log_ps(self):
        return [lambda y, m=m: -m.energy(y) for m in self.models]

    def _remember(self, start: Tensor, index: Tensor) -> None:
        idx = index.to(self.pool.device).long()
        self.pool[idx] = start.detach().to(self.pool.dtype)
        self.seen[idx] = 1.0

    def _masks(self, batch: Batch) -> tuple[Optional[list], Optional[list]]:
        if batch.mask is None:
            return None, None
        obs_mask = batch.mask.to(batch.x.dtype).expand_as(batch.x)
        masks, observed = [], []
        for size in self.sizes[1:]:
            full = downscale_to(obs_mask, size) >= 1.0  # block fully observed
            masks.append((~full).to(batch.x.dtype))
            observed.append(downscale_to(batch.x, size))
        return masks, observed

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        o = self.options
        x = batch.x
        own = start_images(x, self.sizes[0])
        self._remember(own, batch.index)
        if o.start == "own":
            start = own
        else:
            start = draw_start(self.pool, o.n_chains or x.shape[0], generator, self.seen)
        masks, observed = self._masks(batch)
        if masks is not None and start.shape[0] != x.shape[0]:
            raise ConfigError("objective.options.n_chains", "masked training needs one chain per observed image")
        outs = multigrid_chain(self.sampler, self._log_ps(), start, o.factor, generator, masks, observed)
        scalars: dict[str, Tensor] = {}
        histograms: dict[str, Tensor] = {}
        total = torch.zeros((), device=x.device)
        for role, model, opt, size, out in zip(self.roles, self.models, self.optimizers, self.sizes[1:], outs):
            y_obs = downscale_to(x, size)
            y_syn = out.samples
            f_obs = model.score(y_obs)
            f_syn = model.score(y_syn)
            loss = f_syn.mean() - f_obs.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total = total + loss.detach()
            scalars[f"loss_{role}"] = loss.detach()
            scalars[f"score_obs_{role}"] = f_obs.detach().mean()
            scalars[f"score_syn_{role}"] = f_syn.detach().mean()
            scalars[f"grad_norm_{role}"] = _grad_norm(model)
            if out.grad_norms.numel():
                scalars[f"langevin_grad_norm_{role}"] = out.grad_norms[-1]
            histograms[f"score_obs_{role}"] = f_obs.detach()
            histograms[f"score_syn_{role}"] = f_syn.detach()
        scalars["loss_descriptor"] = total
        return StepResult(scalars=scalars, histograms=histograms)

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Finest-grid samples (`revised`) and each grid's (`grid1`, ...), from start images drawn
        from the 1 x 1 versions of the training images seen so far."""
        if not bool(self.seen.any()):
            raise RuntimeError("multigrid has no 1x1 training images before its first iteration")
        start = draw_start(self.pool, n, generator, self.seen)
        outs = multigrid_chain(self.sampler, self._log_ps(), start, self.options.factor, generator)
        named = {role: out.samples.detach() for role, out in zip(self.roles, outs)}
        named["revised"] = outs[-1].samples.detach()
        return named

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.detach().cpu(), "seen": self.seen.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "pool" in state:
            self.pool = state["pool"].to(self.pool.device)
            self.seen = state["seen"].to(self.seen.device)
