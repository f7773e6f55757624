"""Parzen-window log-likelihood against a direct numpy/scipy computation."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import logsumexp

from coop_metrics.parzen import parzen_log_likelihood, prepare_samples, select_sigma


def direct(x: np.ndarray, mu: np.ndarray, sigma: float) -> np.ndarray:
    out = []
    for row in x:
        a = -((row[None, :] - mu) ** 2).sum(1) / (2 * sigma**2)
        out.append(logsumexp(a) - math.log(len(mu)) - x.shape[1] * math.log(sigma * math.sqrt(2 * math.pi)))
    return np.array(out)


def test_matches_direct_computation():
    rng = np.random.default_rng(0)
    x, mu = rng.random((37, 12)), rng.random((53, 12))
    for sigma in (0.05, 0.2, 1.0):
        ours = parzen_log_likelihood(torch.from_numpy(x), torch.from_numpy(mu), sigma, chunk=10).numpy()
        np.testing.assert_allclose(ours, direct(x, mu, sigma), rtol=1e-10, atol=1e-9)


def test_sigma_selection_picks_best_validation_score():
    rng = np.random.default_rng(1)
    mu = torch.from_numpy(rng.normal(0.5, 0.1, (200, 4)))
    valid = torch.from_numpy(rng.normal(0.5, 0.1, (50, 4)))
    sigmas = np.logspace(-2, 0, 7)
    best, scores = select_sigma(valid, mu, sigmas, chunk=64)
    direct_scores = [direct(valid.numpy(), mu.numpy(), s).mean() for s in sigmas]
    np.testing.assert_allclose(scores, direct_scores, rtol=1e-10)
    assert best == sigmas[int(np.argmax(direct_scores))]


def test_sample_preparation_clips_and_scales_globally():
    s = torch.tensor([[[-3.0, 0.0]], [[0.5, 2.0]]])
    out = prepare_samples(s)
    assert out.shape == (2, 2)
    # clip to [-1, 1] then global min-max: -1 -> 0, 1 -> 1
    np.testing.assert_allclose(out.numpy(), [[0.0, 0.5], [0.75, 1.0]])
