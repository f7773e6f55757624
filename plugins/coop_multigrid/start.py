"""Where the chains start: each image's own minimal (1 x 1) version, or p^(0).

Algorithm 1 (step 3) starts the chain of training image i at its own 1 x 1 version Y_i^(0)
(`start = "own"`).  Section 6 models p^(0) by "a one-dimensional histogram of Y^(0) pooled from
the 1 x 1 versions of the training images"; sampling it is what lets the learned models
generate from scratch.  `StartPool` keeps the 1 x 1 version of every training image seen so
far (indexed by dataset index, so it is complete after one epoch and needs no pass over the
data up front) and draws from it:

- ``"histogram"``: a whole 1 x 1 image (all channels together), i.e. the empirical
  distribution of the 1 x 1 images -- our reading of the "histogram" for colour images;
- ``"channel_histogram"``: every channel from its own one-dimensional histogram independently
  (the literal "one-dimensional" reading; identical for grey images).
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from .grids import draw_start, start_images

StartMode = Literal["own", "histogram", "channel_histogram"]


class StartPool:
    """The 1 x 1 (start-grid) versions of the training images, and draws from them."""

    def __init__(self, n_train: int, channels: int, size: int, device: torch.device) -> None:
        self.size = size
        self.pool = torch.zeros(n_train, channels, size, size, device=device)
        self.seen = torch.zeros(n_train, device=device)

    def remember(self, x: Tensor, index: Tensor) -> Tensor:
        """Store the start versions of batch `x` (dataset indices `index`); return them."""
        own = start_images(x, self.size)
        idx = index.to(self.pool.device).long()
        self.pool[idx] = own.detach().to(self.pool.dtype)
        self.seen[idx] = 1.0
        return own

    def draw(self, n: int, generator: torch.Generator, mode: StartMode) -> Tensor:
        """n start images from p^(0) (`mode` "histogram" or "channel_histogram")."""
        if not bool(self.seen.any()):  # outside any sampler loop: one host sync per call
            raise RuntimeError("no training images have been seen yet, so p^(0) is empty; run a step first")
        return draw_start(self.pool, n, generator, self.seen, per_channel=mode == "channel_histogram")

    def start(self, x: Tensor, index: Tensor, n: int, generator: torch.Generator, mode: StartMode) -> Tensor:
        """Remember the batch, then the chains' start: the batch's own 1 x 1 versions, or n draws."""
        own = self.remember(x, index)
        return own if mode == "own" else self.draw(n, generator, mode)

    def state_dict(self) -> dict[str, Any]:
        return {"pool": self.pool.detach().cpu(), "seen": self.seen.detach().cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.pool = state["pool"].to(self.pool.device)
        self.seen = state["seen"].to(self.seen.device)
