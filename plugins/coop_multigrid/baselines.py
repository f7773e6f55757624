"""The baselines of Gao et al. (Section 7): CD1, persistent CD and single-grid CD.

All three learn ONE descriptor at the finest grid (the paper uses "the same network structure
of grid3") with the update of eq. 9 and "follow the same setting as multi-grid CD", so they
share the role names `descriptor` (model + optimiser) and `revision` (sampler, normally
`multigrid_langevin`), the masked training of Section 7.4 (`train_mask`) and the diagnostics.
They differ only in where the chains start:

- `multigrid.cd1` -- contrastive divergence (Hinton 2002): every chain starts at its observed
  training image.  Table 2 names it "one-step CD" and Section 7.1 exempts it from the budget
  matching that sets PCD and single-grid CD to 90 steps, so we read CD1 as ONE Langevin step
  from the data (the recipe sets `samplers.revision.options.n_steps = 1`).  The step count is
  the sampler's: CD with 30 or 90 steps is the same objective with another `n_steps`.
- `multigrid.pcd` -- persistent CD (Tieleman 2008) as Section 5.1 describes it: the chain of
  training image i starts at Y_i the first time and then at the Y~_i synthesised for it in the
  previous epoch (`chains = "per_example"`, one stored chain per training image).
  `chains = "fixed"` is Tieleman's minibatch form: `n_chains` chains started from the first
  batch and carried on whatever the next batch is.
- `multigrid.single_grid` -- single-grid CD: "starting from a 1 x 1 image, we directly
  up-scale it to 64 x 64 and sample a 64 x 64 image using a single generative ConvNet", with
  the same start as multi-grid CD (each image's own 1 x 1 version, or p^(0)).

Budget: the paper gives PCD and single-grid CD 90 steps, the multi-grid's 3 x 30; the recipes
set that through the sampler's `n_steps`.

Masked training: the observed pixels are kept exactly as observed during sampling; the chain's
masked part starts where each method starts (the data for CD1 -- Section 7.4 trains with the
full image observed --, the stored chain for PCD, the up-scaled 1 x 1 colour for single-grid CD).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping, Optional

import attrs
import torch
from torch import Tensor

from coopcore import (
    Batch, ConfigError, Parts, StepResult, contrastive_update, draw_from_chains, grad_norm, in_range, non_negative,
)
from coopcore.masks import mask_name_validator as mask_name

from .grids import observed_block_means, upscale_to
from .masking import check_train_mask, observation_mask, observed_mean_fill
from .start import StartMode, StartPool


def _example(options: dict[str, Any]) -> dict[str, Any]:
    """The tiny configuration the registry-wide contract test builds a baseline from."""
    return {
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": {"descriptor": {"name": "multigrid.descriptor", "options": {
            "grid": 3, "input_shape": [1, 8, 8], "channels": [4, 8], "kernels": [3, 3], "strides": [2, 1]}}},
        "samplers": {"revision": {"name": "multigrid_langevin", "options": {"n_steps": 2, "step_size": 0.1}}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3}},
        "options": options,
    }


class _FinestGridCD:
    """One descriptor at the image's own grid; subclasses say where the chains start."""

    required_models = ("descriptor",)
    required_samplers = ("revision",)

    def __init__(self, options: Any, parts: Parts) -> None:
        self.options = options
        self.model = parts.models["descriptor"]
        self.optimizer = parts.optimizers["descriptor"]
        self.sampler = parts.samplers["revision"]
        self.device = parts.device
        self.n_train = parts.n_train
        self.examples = parts.examples
        self.shape = tuple(parts.data_shape)
        if len(self.shape) != 3:
            raise ConfigError("data", f"this objective needs [C, H, W] images, got shape {list(self.shape)}")
        # The descriptor's input shape against the data's is checked by the core before building.
        check_train_mask(options.train_mask, self.shape, "objective.options.train_mask")

    # -- what differs between the baselines ----------------------------------------------
    def _init(self, batch: Batch, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _keep(self, batch: Batch, synthesised: Tensor) -> None:
        """Remember what the method carries to the next iteration (chains, last samples)."""

    def _inpaint_start(self, y: Tensor, observed: Tensor) -> Tensor:
        """Test-time start of the hole: the per-image mean colour of the observed pixels."""
        return observed_mean_fill(y, observed)

    # -- shared ------------------------------------------------------------------------
    def _log_p(self, y: Tensor) -> Tensor:
        return -self.model.energy(y)

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        x = batch.x
        observed = observation_mask(batch, self.options.train_mask, generator)
        init = self._init(batch, generator)
        mask = None
        if observed is not None:
            init = torch.where(observed > 0, x, init)  # observed pixels start and stay as observed
            mask = 1.0 - observed
        out = self.sampler.run(self._log_p, init, generator, mask=mask)
        synthesised = out.samples.detach()
        self._keep(batch, synthesised)
        loss, f_obs, f_syn = contrastive_update(self.model, self.optimizer, x, synthesised)
        scalars = {
            "loss_descriptor": loss,
            "score_obs": f_obs.mean(),
            "score_syn": f_syn.mean(),
            "grad_norm_descriptor": grad_norm(self.model),
        }
        if out.grad_norms.numel():
            scalars["langevin_grad_norm"] = out.grad_norms[-1]
        if observed is not None:
            scalars["missing_fraction"] = 1.0 - observed.mean()
        return StepResult(scalars=scalars, histograms={"score_obs": f_obs, "score_syn": f_syn})

    def inpaint(self, y: Tensor, observed: Tensor, generator: torch.Generator) -> Tensor:
        """Complete `y` [B, C, H, W] where `observed` == 0 by the method's sampler; observed
        pixels come back exactly as given."""
        observed = observed.to(y.device, y.dtype)
        init = torch.where(observed > 0, y, self._inpaint_start(y, observed))
        return self.sampler.run(self._log_p, init, generator, mask=1.0 - observed).samples.detach()


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class CD1Options:
    """CD1 baseline (Gao et al. Section 7): chains start at the observed images."""

    # Section 7.4 masked training: a coopcore.masks name (paper "M32"); none = off.
    train_mask: Optional[str] = attrs.field(default=None, validator=mask_name)


class CD1(_FinestGridCD):
    """Contrastive divergence: each chain starts at its observed image (restarted every iteration)."""

    contract_example = _example({})

    def _init(self, batch: Batch, generator: torch.Generator) -> Tensor:
        return batch.x.detach().clone()

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """n samples as CD defines them: chains started at n distinct training images (drawn
        without replacement; a set smaller than n is gone through in several shuffled passes),
        each run for the training number of steps."""
        if self.examples is None:
            raise RuntimeError("CD1 samples start at training images: build the experiment with its dataset")
        passes = [torch.randperm(self.n_train, generator=generator, device=generator.device)
                  for _ in range(-(-n // self.n_train))]
        idx = torch.cat(passes)[:n].cpu()
        init = self.examples(idx)
        return {"revised": self.sampler.run(self._log_p, init, generator).samples.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {}  # CD carries nothing between iterations

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass  # (checkpoints of earlier versions hold the last samples, which nothing reads now)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class PersistentCDOptions:
    """Persistent CD baseline (Gao et al. Sections 5.1 and 7)."""

    # "per_example": one chain per training image, started at it (Section 5.1's description);
    # "fixed": n_chains chains started from the first batch (Tieleman's minibatch form).
    chains: Literal["per_example", "fixed"] = "per_example"
    # Number of chains with chains = "fixed"; 0 = the batch size.
    n_chains: int = attrs.field(default=0, validator=non_negative)
    # Section 7.4 masked training: a coopcore.masks name (paper "M32"); none = off.
    train_mask: Optional[str] = attrs.field(default=None, validator=mask_name)

    def __attrs_post_init__(self) -> None:
        if self.train_mask is not None and self.chains != "per_example":
            raise ValueError("'train_mask' needs chains = \"per_example\": a fixed chain belongs to no "
                             "particular image, so there are no observed pixels to keep")


class PersistentCD(_FinestGridCD):
    """Persistent CD: chains carried across iterations, started at the data."""

    contract_example = _example({})

    def __init__(self, options: PersistentCDOptions, parts: Parts) -> None:
        super().__init__(options, parts)
        if options.chains == "per_example":
            self.buffer: Optional[Tensor] = torch.zeros(parts.n_train, *self.shape, device=parts.device)
            self.started: Optional[Tensor] = torch.zeros(parts.n_train, dtype=torch.bool, device=parts.device)
        else:
            self.buffer = self.started = None
        self.chains: Optional[Tensor] = None  # chains = "fixed"

    def _init(self, batch: Batch, generator: torch.Generator) -> Tensor:
        x = batch.x
        if self.options.chains == "fixed":
            if self.chains is None:
                n = self.options.n_chains or x.shape[0]
                reps = -(-n // x.shape[0])
                self.chains = x.detach().repeat(reps, 1, 1, 1)[:n].clone()
            return self.chains
        idx = batch.index.to(self.buffer.device).long()
        started = self.started[idx].view(-1, 1, 1, 1)
        return torch.where(started, self.buffer[idx], x.detach())

    def _keep(self, batch: Batch, synthesised: Tensor) -> None:
        if self.options.chains == "fixed":
            self.chains = synthesised
            return
        idx = batch.index.to(self.buffer.device).long()
        self.buffer[idx] = synthesised.to(self.buffer.dtype)
        self.started[idx] = True

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """n distinct samples of the persistent chains (`coopcore.draw_from_chains`): the stored
        chains (with chains = "per_example": the started ones, in a random order), then, while
        more are needed, those chains advanced by further rounds of the training sampler."""
        if self.options.chains == "fixed":
            chains = self.chains
        else:
            started = self.started.nonzero().flatten()
            order = torch.randperm(started.numel(), generator=generator, device=generator.device).to(started.device)
            chains = self.buffer[started[order]] if started.numel() else None
        if chains is None:
            raise RuntimeError("persistent CD has no chains before its first iteration")
        return {"revised": draw_from_chains(chains, n, lambda y: self.sampler.run(self._log_p, y, generator).samples)}

    def per_example_state(self) -> dict[str, Tensor]:
        """The per-example chains, indexed by training example: a run on several processes keeps
        them identical on every rank (coopcore's optional per-example-state hook)."""
        if self.options.chains == "fixed":
            return {}
        return {"buffer": self.buffer, "started": self.started}

    def state_dict(self) -> dict[str, Any]:
        if self.options.chains == "fixed":
            return {"chains": None if self.chains is None else self.chains.detach().cpu()}
        return {"buffer": self.buffer.detach().cpu(), "started": self.started.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.options.chains == "fixed":
            chains = state.get("chains")
            self.chains = None if chains is None else chains.to(self.device)
        elif "buffer" in state:
            self.buffer = state["buffer"].to(self.device)
            self.started = state["started"].to(self.device)


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class SingleGridCDOptions:
    """Single-grid CD baseline (Gao et al. Section 7): 1x1 start up-scaled straight to the image size."""

    # Side of the start image (paper 1); it must divide the image size.
    start_size: int = attrs.field(default=1, validator=in_range(1, 4096))
    # As multigrid: "own" 1x1 version of each image, or drawn from p^(0).
    start: StartMode = "own"
    # Number of chains with a histogram start; 0 = the batch size.
    n_chains: int = attrs.field(default=0, validator=non_negative)
    # Section 7.4 masked training: a coopcore.masks name (paper "M32"); none = off.
    train_mask: Optional[str] = attrs.field(default=None, validator=mask_name)

    def __attrs_post_init__(self) -> None:
        if self.train_mask is not None and self.start != "own" and self.n_chains:
            raise ValueError("'n_chains' must be 0 (one chain per image) with a 'train_mask'")


class SingleGridCD(_FinestGridCD):
    """Single-grid CD: each chain starts at a 1 x 1 image up-scaled to the finest grid."""

    contract_example = _example({})

    def __init__(self, options: SingleGridCDOptions, parts: Parts) -> None:
        super().__init__(options, parts)
        c, h, w = self.shape
        if h != w or h % options.start_size:
            raise ConfigError("objective.options.start_size", f"the start size {options.start_size} must divide "
                              f"the side of the square images, got {h}x{w}")
        self.starts = StartPool(parts.n_train, c, options.start_size, parts.device)

    def _init(self, batch: Batch, generator: torch.Generator) -> Tensor:
        o = self.options
        n = o.n_chains or batch.x.shape[0]
        start = self.starts.start(batch.x, batch.index, n, generator, o.start)
        return upscale_to(start, self.shape[-1])

    def _inpaint_start(self, y: Tensor, observed: Tensor) -> Tensor:
        start, _ = observed_block_means(y, observed, self.options.start_size)
        return upscale_to(start, self.shape[-1])

    def samples(self, n: int, generator: torch.Generator) -> dict[str, Tensor]:
        """From scratch: start images drawn from p^(0), up-scaled, then the sampler's l steps."""
        mode = "channel_histogram" if self.options.start == "channel_histogram" else "histogram"
        init = upscale_to(self.starts.draw(n, generator, mode), self.shape[-1])
        return {"revised": self.sampler.run(self._log_p, init, generator).samples.detach()}

    def per_example_state(self) -> dict[str, Tensor]:
        """The 1 x 1 start images and which examples were seen, indexed by training example (the
        histogram p^(0) draws from): a run on several processes keeps them identical on every rank."""
        return {"pool": self.starts.pool, "seen": self.starts.seen}

    def state_dict(self) -> dict[str, Any]:
        return self.starts.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "pool" in state:
            self.starts.load_state_dict(state)
