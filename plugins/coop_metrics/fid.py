"""FID, KID and Inception Score on the TF-Inception-2015-12-05 features (see docs/fid.md).

- FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to pool3 features of
  model samples and of a reference set,
  ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})``.  Biased upward at small N.
- KID (Binkowski et al. 2018): the unbiased estimate of MMD^2 with the kernel
  k(x, y) = (x.y / d + 1)^3 on pool3 features, averaged over random subsets (default 100
  subsets of 1000, torch-fidelity's defaults); reported as mean and std over subsets.
- Inception Score (Salimans et al. 2016, OpenAI improved-GAN code): exp(E_x KL(p(y|x) || p(y)))
  on softmax(logits), computed on `splits` consecutive parts; mean and std over the parts.

Reference statistics (mean, covariance and the features, for KID) are cached per reference
dataset, its options and content, and the exact feature network (its sha256) as an .npz with a
JSON sidecar in ``cache_dir`` (default ``$COOP_CACHE/fid`` or ``~/.cache/coopnets/fid``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import EvalContext, MetricResult, UsageError, draw_samples, non_negative, positive

from .inception import PREPROCESSING, InceptionBackend, extract_features, load_backend
from .parzen import DatasetRef

CACHE_FORMAT = 1
NETWORK_LOGITS = "TF-Inception-2015-12-05 logits (pool3 x softmax weights, no bias, 1008 classes)"
DRAW_CHUNK = 500


# ---------------------------------------------------------------------------------------
# maths
def feature_statistics(features: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (divisor N - 1) of features [N, D], in float64, two-pass."""
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] < 2:
        raise UsageError(f"feature statistics need at least 2 feature vectors [N, D]; got shape {f.shape}")
    n, d = f.shape
    mu = np.zeros(d)
    for i in range(0, n, chunk):
        mu += f[i : i + chunk].astype(np.float64).sum(0)
    mu /= n
    sigma = np.zeros((d, d))
    for i in range(0, n, chunk):
        xc = f[i : i + chunk].astype(np.float64) - mu
        sigma += xc.T @ xc
    sigma /= n - 1
    return mu, (sigma + sigma.T) / 2.0


def _psd_factor(sigma: np.ndarray) -> np.ndarray:
    """L with L L^T = sigma: Cholesky when sigma is positive definite, otherwise from the
    eigen-decomposition with eigenvalues below the numerical-rank tolerance (round-off, including
    slightly negative ones) set to zero."""
    try:
        return np.linalg.cholesky(sigma)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(sigma)
        # eigenvalues below the numerical-rank tolerance are round-off: treat them as 0
        tol = max(float(w.max()), 0.0) * sigma.shape[0] * np.finfo(np.float64).eps
        return v * np.sqrt(np.where(w > tol, w, 0.0))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr((S1 S2)^{1/2}) for symmetric positive semi-definite S1, S2.

    With S1 = L1 L1^T and S2 = L2 L2^T, S1 S2 has the eigenvalues of (L2^T L1)^T (L2^T L1), so
    the trace of its principal square root is the sum of the singular values of L2^T L1.  This
    is real by construction (no complex sqrtm output to clean up) and never squares the
    condition number, so it stays accurate for singular covariances (fewer samples than
    dimensions).
    """
    l1 = _psd_factor(np.asarray(sigma1, dtype=np.float64))
    l2 = _psd_factor(np.asarray(sigma2, dtype=np.float64))
    return float(np.linalg.svd(l2.T @ l1, compute_uv=False).sum())


def frechet_distance_few_samples(features: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance between the Gaussian fitted to `features` [N, D] and (mu2, sigma2),
    exact and cheap when N < D (few samples, e.g. a smoke-scale evaluation).

    With A the centred features divided by sqrt(N - 1), S1 = A^T A; the non-zero eigenvalues of
    S1 S2 are those of the N x N matrix A S2 A^T (positive semi-definite), so
    tr((S1 S2)^{1/2}) is the sum of the square roots of its eigenvalues: O(N D^2) instead of
    factorising D x D matrices (seconds for D = 2048 on a CPU).  Same value as
    `frechet_distance(*feature_statistics(features), mu2, sigma2)` to round-off."""
    a = np.asarray(features, dtype=np.float64)
    mu2, sigma2 = np.asarray(mu2, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2 or sigma2.shape != (a.shape[1], a.shape[1]):
        raise UsageError(f"Frechet distance: need features [N >= 2, D] and a D x D covariance; "
                         f"got {a.shape} and {sigma2.shape}")
    mu1 = a.mean(0)
    a = (a - mu1) / math.sqrt(a.shape[0] - 1)
    eig = np.linalg.eigvalsh(a @ sigma2 @ a.T)
    cross = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() + np.trace(sigma2) - 2.0 * cross)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}), in float64."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise UsageError(
            f"Frechet distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(a)):
            raise UsageError(f"Frechet distance: {name} has non-finite values")
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2.0, (sigma2 + sigma2.T) / 2.0
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased MMD^2 of samples x [m, d] and y [n, d] (independent sets):
    mean of k(x_i, x_j) over i != j + the same for y - 2 mean of k(x_i, y_j)."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


@dataclass
class KidResult:
    mean: float
    std: float
    subsets: int
    subset_size: int
    values: list[float] = field(default_factory=list)


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              generator: Optional[torch.Generator] = None,
                              device: torch.device | str = "cpu") -> KidResult:
    """KID as torch-fidelity computes it: `subsets` times, draw `subset_size` rows of each set
    without replacement and take the unbiased MMD^2; mean and std (ddof 0) over the subsets.
    The subset size is capped at the smaller set (the result states the size used)."""
    n1, n2 = len(f1), len(f2)
    size = min(subset_size, n1, n2)
    if size < 2:
        raise UsageError(f"KID needs at least 2 feature vectors in each set; got {n1} and {n2}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    a = torch.as_tensor(np.asarray(f1), dtype=torch.float64, device=device)
    b = torch.as_tensor(np.asarray(f2), dtype=torch.float64, device=device)
    values = []
    for _ in range(subsets):
        i1 = torch.randperm(n1, generator=generator)[:size].to(a.device)
        i2 = torch.randperm(n2, generator=generator)[:size].to(b.device)
        values.append(mmd2_unbiased(a[i1], b[i2]))
    return KidResult(float(np.mean(values)), float(np.std(values)), subsets, size, values)


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float, list[float]]:
    """Inception Score from logits [N, K] (OpenAI improved-GAN protocol): p(y|x) = softmax;
    on each of `splits` consecutive parts exp(mean_x KL(p(y|x) || mean_x p(y|x)));
    returns the mean and std (ddof 0) over the parts and the per-part scores."""
    lg = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    n = lg.shape[0]
    if lg.dim() != 2 or n < splits or splits < 1:
        raise UsageError(f"Inception Score needs logits [N, K] with N >= splits ({splits}); got shape {tuple(lg.shape)}")
    log_p = torch.log_softmax(lg, dim=1)
    scores = []
    for k in range(splits):
        part = log_p[k * n // splits : (k + 1) * n // splits]
        log_marginal = torch.logsumexp(part, dim=0) - math.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(1).mean()
        scores.append(float(torch.exp(kl)))
    return float(np.mean(scores)), float(np.std(scores)), scores


# ---------------------------------------------------------------------------------------
# options
@attrs.frozen(kw_only=True)
class InceptionMetricOptions:
    """What every Inception metric needs: which samples, how many, which feature network."""

    # Sample kind from the objective: "revised" (Langevin-revised), "generator", ...
    samples: str = "revised"
    n_samples: int = attrs.field(default=50000, validator=positive)
    # Feature network: "fid-helper" (offline TF-Inception), "torch-fidelity", or "pixels" (no
    # network: the Frechet distance on raw pixels, for pipeline checks; not comparable with FID).
    backend: Literal["fid-helper", "torch-fidelity", "pixels"] = "fid-helper"
    # Path to the network file (fid-helper: default_1.pt; torch-fidelity: its .pth); "none" = find it.
    weights: Optional[str] = None
    # Images per forward pass of the feature network.
    batch_size: int = attrs.field(default=50, validator=positive)
    # How samples are brought into [-1, 1] before 8-bit quantisation.
    sample_scaling: Literal["clip", "per-image-minmax"] = "clip"


@attrs.frozen(kw_only=True)
class FidOptions(InceptionMetricOptions):
    """Frechet Inception Distance between model samples and a reference set."""

    # Reference dataset; "none" = the run's training set.
    reference: Optional[DatasetRef] = None
    # Or an .npz of reference statistics (mu, sigma[, features]), e.g. a file of the cache.
    reference_stats: Optional[str] = None
    # Use the first N reference images only (0 = all).
    reference_count: int = attrs.field(default=0, validator=non_negative)
    # Cache of reference statistics; "none" = $COOP_CACHE/fid or ~/.cache/coopnets/fid.
    cache_dir: Optional[str] = None
    use_cache: bool = True

    def __attrs_post_init__(self) -> None:
        if self.reference is not None and self.reference_stats is not None:
            raise ValueError("give either 'reference' (a dataset) or 'reference_stats' (a file), not both")


@attrs.frozen(kw_only=True)
class KidOptions(FidOptions):
    """Kernel Inception Distance between model samples and a reference set."""

    subsets: int = attrs.field(default=100, validator=positive)
    subset_size: int = attrs.field(default=1000, validator=positive)


@attrs.frozen(kw_only=True)
class InceptionScoreOptions(InceptionMetricOptions):
    """Inception Score of model samples (needs logits: the torch-fidelity backend)."""

    backend: Literal["fid-helper", "torch-fidelity"] = "torch-fidelity"
    splits: int = attrs.field(default=10, validator=positive)


# ---------------------------------------------------------------------------------------
# reference statistics and their cache
def default_cache_dir() -> Path:
    root = os.environ.get("COOP_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "coopnets") / "fid"


@dataclass
class Reference:
    mu: np.ndarray
    sigma: np.ndarray
    features: Optional[np.ndarray]
    count: Optional[int]
    label: str
    details: dict[str, Any]


def _chunks(dataset: Any, count: int, chunk: int) -> Iterator[torch.Tensor]:
    for i in range(0, count, chunk):
        yield dataset.get_batch(torch.arange(i, min(i + chunk, count)))


def _content_sha256(dataset: Any, count: int, chunk: int = 1000) -> str:
    h = hashlib.sha256(str(tuple(dataset.shape)).encode())
    for x in _chunks(dataset, count, chunk):
        h.update(np.ascontiguousarray(x.detach().cpu().to(torch.float32).numpy()).tobytes())
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, mode) as fh:
        write(fh)
    os.replace(tmp, path)


def _read_sidecar(path: Path) -> Optional[dict[str, Any]]:
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"reference statistics: cannot read {side}: {exc}") from None


def load_stats_file(path: Path, backend: InceptionBackend, need_features: bool) -> Reference:
    """An .npz with mu, sigma (and features) as written by this cache or by the TTUR FID code."""
    if not path.is_file():
        raise UsageError(f"reference statistics file {path} does not exist")
    side = _read_sidecar(path)
    if side is not None and (side.get("backend") != backend.name or side.get("weights_sha256") != backend.sha256):
        raise UsageError(
            f"reference statistics {path} were computed with backend '{side.get('backend')}' (weights sha256 "
            f"{str(side.get('weights_sha256'))[:12]}), not with {backend.label}: features of different networks "
            "cannot be compared. Use the same backend or recompute the statistics."
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
            features = data["features"] if "features" in data.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"reference statistics {path}: not an .npz with arrays 'mu' and 'sigma' ({exc})") from None
    if need_features and features is None:
        raise UsageError(f"reference statistics {path} hold mu and sigma only; KID needs the reference features")
    count = side.get("count") if side else (int(features.shape[0]) if features is not None else None)
    details = {"kind": "stats-file", "path": str(path), "verified_backend": side is not None}
    return Reference(mu, sigma, features, count, f"stats file {path.name}", details)


def reference_statistics(ctx: EvalContext, o: FidOptions, backend: InceptionBackend, metric: str,
                         need_features: bool = False) -> Reference:
    """Reference mean/covariance (and features): from a stats file, the cache, or computed."""
    if o.reference_stats is not None:
        return load_stats_file(Path(o.reference_stats).expanduser(), backend, need_features)
    if o.reference is None:
        dataset = ctx.train_dataset
        if dataset is None or not hasattr(dataset, "get_batch"):
            raise UsageError(f"{metric}: no reference set: pass --set reference={{name='...', options={{...}}}} "
                             "or reference_stats=PATH (the run's training set is not available here)")
        ref_name, ref_options = str(getattr(dataset, "name", "train")), {"source": "the run's training set"}
    else:
        dataset = ctx.build_dataset(o.reference.name, o.reference.options, f"{metric}.reference")
        ref_name, ref_options = o.reference.name, dict(o.reference.options)
    count = len(dataset) if not o.reference_count else min(o.reference_count, len(dataset))
    if count < 2:
        raise UsageError(f"{metric}: the reference set {ref_name} has {count} image(s); at least 2 are needed")
    label = ref_name + (f"({', '.join(f'{k}={v}' for k, v in sorted(ref_options.items()))})" if ref_options else "")
    key_fields = {
        "format": CACHE_FORMAT, "dataset": ref_name, "options": ref_options, "count": count,
        "content_sha256": _content_sha256(dataset, count), "backend": backend.name,
        "weights_sha256": backend.sha256, "preprocessing": PREPROCESSING,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True, default=str).encode()).hexdigest()
    cache = Path(o.cache_dir).expanduser() if o.cache_dir else default_cache_dir()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{ref_name}-{backend.name}")[:60]
    npz = cache / f"{stem}-{key[:16]}.npz"
    details = {"kind": "dataset", "dataset": ref_name, "options": ref_options, "cache_file": str(npz) if o.use_cache else None}
    if o.use_cache and npz.is_file() and npz.with_suffix(".json").is_file():
        try:
            side = json.loads(npz.with_suffix(".json").read_text())
            with np.load(npz, allow_pickle=False) as data:
                mu, sigma = data["mu"], data["sigma"]
                features = data["features"] if "features" in data.files else None
            if side.get("key") == key and mu.shape == (sigma.shape[0],) and (features is not None or not need_features):
                ctx.progress(f"{metric}: reference statistics of {label} (n={count}) from the cache {npz}")
                return Reference(mu, sigma, features, count, label, {**details, "cached": True})
        except (OSError, ValueError, KeyError) as exc:
            ctx.progress(f"{metric}: ignoring unreadable cache entry {npz} ({exc}); recomputing")
    ctx.progress(f"{metric}: computing Inception features of the reference {label} (n={count})")
    features, _ = extract_features(backend, _chunks(dataset, count, DRAW_CHUNK), o.batch_size, count, "clip",
                                   f"{metric} reference {ref_name}", ctx.progress)
    mu, sigma = feature_statistics(features)
    if o.use_cache:
        cache.mkdir(parents=True, exist_ok=True)
        _atomic_write(npz, lambda fh: np.savez(fh, mu=mu, sigma=sigma, features=features))
        sidecar = {**key_fields, "key": key, "weights_file": str(backend.weights), "feature_dim": int(mu.shape[0]),
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        _atomic_write(npz.with_suffix(".json"), lambda fh: fh.write(json.dumps(sidecar, indent=2, default=str)), "w")
        ctx.progress(f"{metric}: cached the reference statistics in {npz}")
    return Reference(mu, sigma, features, count, label, {**details, "cached": False})


# ---------------------------------------------------------------------------------------
# the metrics
def sample_features(ctx: EvalContext, o: InceptionMetricOptions, backend: InceptionBackend, metric: str,
                    want_logits: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Draw o.n_samples samples in chunks and return their features (samples are not kept)."""

    def chunks() -> Iterator[torch.Tensor]:
        remaining = o.n_samples
        while remaining > 0:
            k = min(DRAW_CHUNK, remaining)
            yield draw_samples(ctx.objective, o.samples, k, ctx.generator, batch=k)
            remaining -= k

    ctx.progress(f"{metric}: drawing {o.n_samples} '{o.samples}' samples")
    return extract_features(backend, chunks(), o.batch_size, o.n_samples, o.sample_scaling,
                            f"{metric} samples", ctx.progress, want_logits)


def _seed_from(generator: torch.Generator) -> torch.Generator:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def _common_details(o: InceptionMetricOptions, backend: InceptionBackend) -> dict[str, Any]:
    return {"samples": o.samples, "weights": str(backend.weights), "weights_sha256": backend.sha256,
            "preprocessing": PREPROCESSING, "sample_scaling": o.sample_scaling, **backend.notes}


class FrechetInceptionDistance:
    """FID between the run's samples and a reference set (TF-Inception-2015-12-05 pool3)."""

    name = "fid"

    def __init__(self, options: FidOptions = FidOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        backend = load_backend(o.backend, o.weights, context.device, context.progress)
        ref = reference_statistics(context, o, backend, "fid")
        feats, _ = sample_features(context, o, backend, "fid")
        if len(feats) < feats.shape[1]:
            value = frechet_distance_few_samples(feats, ref.mu, ref.sigma)  # few samples: the N x N route
        else:
            value = frechet_distance(*feature_statistics(feats), ref.mu, ref.sigma)
        n_ref = "?" if ref.count is None else ref.count
        return MetricResult(
            name=f"fid[{o.samples}]", value=value, n_samples=int(feats.shape[0]), higher_is_better=False,
            backend=f"{backend.label}; reference {ref.label} n={n_ref}",
            details={**_common_details(o, backend), "n_reference": ref.count, "reference": ref.details,
                     "note": "FID is biased upward at small N: compare values at equal sample counts"},
        )


class KernelInceptionDistance:
    """KID between the run's samples and a reference set (TF-Inception-2015-12-05 pool3)."""

    name = "kid"

    def __init__(self, options: KidOptions = KidOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        backend = load_backend(o.backend, o.weights, context.device, context.progress)
        ref = reference_statistics(context, o, backend, "kid", need_features=True)
        feats, _ = sample_features(context, o, backend, "kid")
        res = kernel_inception_distance(feats, ref.features, o.subsets, o.subset_size, _seed_from(context.generator),
                                        context.device)
        n_ref = "?" if ref.count is None else ref.count
        return MetricResult(
            name=f"kid[{o.samples}]", value=res.mean, std_error=res.std, n_samples=int(feats.shape[0]),
            higher_is_better=False, backend=f"{backend.label}; reference {ref.label} n={n_ref}",
            details={**_common_details(o, backend), "n_reference": ref.count, "reference": ref.details,
                     "subsets": res.subsets, "subset_size": res.subset_size,
                     "spread": "std_error is the standard deviation over subsets (as torch-fidelity reports it)"},
        )


class InceptionScore:
    """Inception Score of the run's samples (TF-Inception-2015-12-05 logits, OpenAI protocol)."""

    name = "inception_score"

    def __init__(self, options: InceptionScoreOptions = InceptionScoreOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        if o.backend in ("fid-helper", "pixels"):
            raise UsageError(
                f"inception_score needs the Inception logits; the {o.backend} backend has none. "
                "Use --set backend='torch-fidelity' (with its weights cached or --set weights=PATH)."
            )
        backend = load_backend(o.backend, o.weights, context.device, context.progress)
        _, logits = sample_features(context, o, backend, "inception_score", want_logits=True)
        mean, std, scores = inception_score(logits, o.splits)
        return MetricResult(
            name=f"inception_score[{o.samples}]", value=mean, std_error=std, n_samples=int(logits.shape[0]),
            higher_is_better=True, backend=f"{backend.name} {NETWORK_LOGITS} ({backend.weights.name} "
                                           f"sha256:{backend.sha256[:12]})",
            details={**_common_details(o, backend), "splits": o.splits, "split_scores": scores,
                     "spread": "std_error is the standard deviation over splits (as the published tables report it)"},
        )

