"""Seeded random subsets of a dataset: the one place where datasets draw examples at random.

Every draw is the first ``size`` entries of ``numpy.random.default_rng(seed).permutation(n)``
(PCG64): the same examples on any machine and platform for the same ``n`` and seed, and nested
for one seed, since a smaller subset is a prefix of the same permutation (the 10,000 images of
``subset = 10000`` are among the 20,000 of ``subset = 20000``), as a series of runs over the
training-set size wants.  StyleGAN2-ADA's ``--subset`` (the protocol of CoopInit's Tables 10-11)
is the same kind of draw (a seeded shuffle cut to a prefix, kept in file order) but from numpy's
legacy MT19937 generator, so the images differ from its runs while the protocol does not.
"""
from __future__ import annotations

import numpy as np

from coopcore import UsageError


def seeded_draw(n: int, size: int, seed: int) -> np.ndarray:
    """int64 indices of `size` of `n` examples (0 = all n) in the order drawn by `seed`."""
    order = np.random.default_rng(seed).permutation(n)
    return order[:size] if size else order


def seeded_subset(n: int, size: int, seed: int, where: str) -> np.ndarray:
    """The indices of `seeded_draw` sorted back into file order, so that a subset keeps the
    dataset's documented order (and a later `limit` is a prefix of it).  A subset larger than the
    dataset is a `UsageError`: the table's protocol would change silently otherwise."""
    if size > n:
        raise UsageError(f"'data.options.subset' = {size} asks for more images than {where} holds ({n}): "
                         f"use a smaller subset (0 = all)")
    return np.sort(seeded_draw(n, size, seed))
