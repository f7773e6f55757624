"""Drawing n samples from a set of persistent chains without repeating any.

Persistent contrastive divergence keeps a fixed number of chains (TPAMI Algorithm D, the
multigrid paper's PCD baseline).  An evaluation often asks for more samples than there are
chains (10,000 for an FID against 100 chains); tiling the chains would score a few hundred
images many times over.  The samples here are the chains as they stand, then, while more are
needed, the same chains advanced by further rounds of the method's own sampler, each round
the training number of steps: every returned image is a distinct state of a chain of the model.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["draw_from_chains"]


def draw_from_chains(chains: Tensor, n: int, advance: Callable[[Tensor], Tensor]) -> Tensor:
    """`n` samples from `chains` ``[k, ...]``: the k current states, then ``advance(chains)``,
    ``advance(advance(chains))``, ... until n are collected (the last block truncated).

    `advance` runs one round of the training sampler on all k chains and returns their new
    states; the caller's chains are not modified (the training chains stay where they are).
    """
    if chains.shape[0] == 0:
        raise ValueError("there are no chains to draw samples from")
    blocks, current, total = [], chains.detach(), 0
    while True:
        blocks.append(current)
        total += current.shape[0]
        if total >= n:
            break
        current = advance(current).detach()
    return torch.cat(blocks)[:n].clone()
