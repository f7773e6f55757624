"""Parzen-window log-likelihood, as in TPAMI Table 2 (the protocol of Goodfellow et al.).

Samples from the model (generator samples g(X), or Langevin-revised samples) are clipped to
[-1, 1], min-max scaled to [0, 1] over the whole sample set and flattened.  Test and
validation images are mapped from [-1, 1] to [0, 1].  A Gaussian kernel of width sigma is put
on every sample; sigma is chosen from a grid (default logspace(-1, 0, 10)) by the best mean
log-likelihood of the validation images, and the reported number is the mean test
log-likelihood with its standard error std / sqrt(n_test):

    log p(x) = logmeanexp_i( -||x - mu_i||^2 / (2 sigma^2) ) - D log(sigma sqrt(2 pi))
"""
from __future__ import annotations

import math
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torch import Tensor

from coopcore import EvalContext, MetricResult, draw_samples, positive


@attrs.frozen(kw_only=True)
class DatasetRef:
    """A registered dataset by name with its options (the test or validation set)."""

    name: str = "digits"
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ParzenOptions:
    """Parzen-window log-likelihood of a test set under the model's samples."""

    samples: Literal["generator", "revised", "chains"] = "revised"
    n_samples: int = attrs.field(default=10000, validator=positive)
    test: DatasetRef = DatasetRef(name="mnist", options={"split": "test"})
    validation: DatasetRef = DatasetRef(name="mnist", options={"split": "validation1k"})
    # sigma grid: logspace(sigma_log10_low, sigma_log10_high, sigma_count)
    sigma_log10_low: float = -1.0
    sigma_log10_high: float = 0.0
    sigma_count: int = attrs.field(default=10, validator=positive)
    # Limit the test set (0 = all); for quick checks only.
    test_limit: int = 0
    chunk: int = attrs.field(default=500, validator=positive)


def parzen_log_likelihood(x: Tensor, mu: Tensor, sigma: float, chunk: int = 500) -> Tensor:
    """Per-row log-likelihood of x [N, D] under the Parzen window on mu [M, D] (float64)."""
    x = x.double()
    mu = mu.double()
    d = x.shape[1]
    mu_sq = mu.pow(2).sum(1)
    out = []
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk]
        sq = xb.pow(2).sum(1, keepdim=True) + mu_sq[None, :] - 2.0 * xb @ mu.T
        a = -sq.clamp_min(0.0) / (2.0 * sigma**2)
        out.append(torch.logsumexp(a, dim=1) - math.log(mu.shape[0]))
    return torch.cat(out) - d * math.log(sigma * math.sqrt(2.0 * math.pi))


def prepare_samples(samples: Tensor) -> Tensor:
    """Clip to [-1, 1], min-max to [0, 1] over the whole set, flatten (the authors' protocol)."""
    s = samples.detach().double().clamp(-1.0, 1.0)
    lo, hi = s.min(), s.max()
    return ((s - lo) / (hi - lo).clamp_min(1e-12)).flatten(1)


def to_unit(images: Tensor) -> Tensor:
    return ((images.double() + 1.0) / 2.0).flatten(1)


def select_sigma(validation: Tensor, mu: Tensor, sigmas: np.ndarray, chunk: int) -> tuple[float, list[float]]:
    scores = [float(parzen_log_likelihood(validation, mu, float(s), chunk).mean()) for s in sigmas]
    return float(sigmas[int(np.argmax(scores))]), scores


class Parzen:
    """Parzen-window log-likelihood (TPAMI Table 2 protocol)."""

    name = "parzen"

    def __init__(self, options: ParzenOptions = ParzenOptions()) -> None:
        self.options = options

    def _dataset(self, ctx: EvalContext, ref: DatasetRef, path: str) -> Tensor:
        ds = ctx.build_dataset(ref.name, ref.options, path)
        return ds.get_batch(torch.arange(len(ds)))

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        test = self._dataset(context, o.test, "test")
        if o.test_limit:
            test = test[: o.test_limit]
        valid = self._dataset(context, o.validation, "validation")
        samples = draw_samples(context.objective, o.samples, o.n_samples, context.generator)
        mu = prepare_samples(samples)
        sigmas = np.logspace(o.sigma_log10_low, o.sigma_log10_high, o.sigma_count)
        sigma, scores = select_sigma(to_unit(valid), mu, sigmas, o.chunk)
        ll = parzen_log_likelihood(to_unit(test), mu, sigma, o.chunk)
        return MetricResult(
            name=f"parzen[{o.samples}]",
            value=float(ll.mean()),
            std_error=float(ll.std() / math.sqrt(ll.numel())),
            n_samples=int(mu.shape[0]),
            backend="parzen-window (float64, torch)",
            details={"sigma": sigma, "n_test": int(ll.numel()), "n_validation": int(valid.shape[0]),
                     "validation_ll": dict(zip([f"{s:.4g}" for s in sigmas], scores))},
        )
