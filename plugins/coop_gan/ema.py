"""Exponential moving average of the generator's weights (StyleGAN2 / StyleGAN2-ADA).

After every generator update, G_ema <- beta G_ema + (1 - beta) G with a half-life given in
images (StyleGAN2-ADA's `ema_kimg`): beta = 0.5 ** (batch / ema_nimg).  With a ramp-up r the
half-life is min(ema_kimg * 1000, r * images_seen), so early in training the average follows
the generator closely (StyleGAN2-ADA's `ema_rampup`; its `cifar` config: ema_kimg 500, r 0.05).
With a start s (BigGAN's `ema_start`, in iterations there) the average is a copy of the
generator until s thousand images have been seen, and averages from then on.
Buffers (e.g. BatchNorm statistics) are copied, not averaged, as in StyleGAN2-ADA.

The average lives in a deep copy of the generator, so `samples()` can draw from it with the
generator's own `sample_latent`/`forward`; its weights are part of the objective's state.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional

import torch
from torch import nn


def ema_beta(batch: int, images_seen: int, ema_kimg: float, rampup: Optional[float],
             start_kimg: float = 0.0) -> float:
    """The EMA decay for one update of `batch` images after `images_seen` images (this update's
    included); 0 (the average copies the generator) while fewer than `start_kimg` thousand images
    have been seen (BigGAN's `ema_start`)."""
    if images_seen < start_kimg * 1000.0:
        return 0.0
    nimg = ema_kimg * 1000.0
    if rampup is not None:
        nimg = min(nimg, images_seen * rampup)
    return 0.5 ** (batch / max(nimg, 1e-8))


class GeneratorEMA:
    """A running average of a generator's parameters (a separate, frozen module)."""

    def __init__(self, generator: nn.Module) -> None:
        self.module = copy.deepcopy(generator)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, beta: float) -> None:
        """G_ema <- beta G_ema + (1 - beta) G; buffers copied."""
        for p_ema, p in zip(self.module.parameters(), generator.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.module.buffers(), generator.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state)
