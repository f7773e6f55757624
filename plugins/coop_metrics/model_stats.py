"""Metrics that look inside the trained models or compare samples with each other.

- ``reconstruction_mse`` (triangle Table 2): per-pixel test MSE of G(mu_I(x)) against x.
- ``energy_statistics`` (multigrid Table 1): mean and standard deviation of the descriptor's
  score f(Y) on the training, test, synthesised and negative sets, each down-scaled by block
  means to the descriptor's grid.
- ``inception_class_scores`` (TPAMI Fig. 7): average softmax probability of a target class and
  top-5 error of samples under the TF-Inception-2015-12-05 logits (the ``inception_score`` path).
- ``pairwise_ssim`` (TPAMI Fig. 7): average SSIM between random pairs of samples (diversity).
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import EvalContext, MetricResult, UsageError, draw_samples, non_negative, positive

from . import fid as _fid
from .parzen import DatasetRef
from .probe import block_mean_to


# ---------------------------------------------------------------------------------------
# helpers
def _model(ctx: EvalContext, role: str, metric: str, needs: str) -> torch.nn.Module:
    model = ctx.models.get(role) if ctx.models else None
    if model is None:
        have = ", ".join(sorted(ctx.models)) if ctx.models else "none"
        raise UsageError(f"{metric}: needs a model in the role '{role}' ({needs}); this run has: {have}")
    return model


def _dataset(ctx: EvalContext, ref: Optional[DatasetRef], metric: str, what: str, allow_train: bool = False) -> Any:
    if ref is None:
        if allow_train:
            ds = ctx.train_dataset
            if ds is None or not hasattr(ds, "get_batch"):
                raise UsageError(f"{metric}: no {what} set: the run's training set is not available here; "
                                 f"pass --set {what}={{name='...', options={{...}}}}")
            return ds
        raise UsageError(f"{metric}: no {what} set given: pass --set {what}={{name='...', options={{...}}}}")
    return ctx.build_dataset(ref.name, ref.options, f"{metric}.{what}")


def _count(ds: Any, limit: int, metric: str, what: str) -> int:
    n = len(ds) if not limit else min(limit, len(ds))
    if n < 1:
        raise UsageError(f"{metric}: the {what} set is empty")
    return n


def _batches(ds: Any, count: int, batch: int):
    for i in range(0, count, batch):
        yield ds.get_batch(torch.arange(i, min(i + batch, count)))


# ---------------------------------------------------------------------------------------
# reconstruction MSE
@attrs.frozen(kw_only=True)
class ReconstructionMseOptions:
    """Per-pixel MSE of G(mu_I(x)) against x over a test set."""

    test: DatasetRef = DatasetRef(name="cifar10", options={"split": "test"})
    # Use the first N test images only (0 = all).
    limit: int = attrs.field(default=0, validator=non_negative)
    batch_size: int = attrs.field(default=100, validator=positive)
    # "unit": map x and G(mu(x)) from [-1, 1] to [0, 1] first (MSE / 4); "model": as they are.
    pixel_scale: Literal["unit", "model"] = "unit"
    encoder: str = "encoder"
    generator: str = "generator"


class ReconstructionMse:
    """Per-pixel test MSE of the reconstruction G(mu_I(x)) (triangle Table 2).

    The encoder gives (mu, logvar); the reconstruction uses the posterior mean mu (no sampling).
    The MSE is the mean of (G(mu(x)) - x)^2 over all pixels and channels of all test images;
    `std_error` is the standard error of the per-image MSEs.  The paper does not say on which
    pixel scale its numbers (CIFAR 0.028, CelebA 0.030) are: the default ``pixel_scale="unit"``
    maps both images from the model range [-1, 1] to [0, 1] (which makes the MSE 1/4 of the
    ``"model"`` value); this is a choice, not a documented fact.  G's output is not clipped.
    """

    name = "reconstruction_mse"

    def __init__(self, options: ReconstructionMseOptions = ReconstructionMseOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        enc = _model(context, o.encoder, self.name, "an inference model forward(x) -> (mu, logvar)")
        gen = _model(context, o.generator, self.name, "a generator forward(z) -> x")
        ds = _dataset(context, o.test, self.name, "test")
        count = _count(ds, o.limit, self.name, "test")
        factor = 0.25 if o.pixel_scale == "unit" else 1.0
        per_image = []
        with torch.no_grad():
            for x in _batches(ds, count, o.batch_size):
                x = x.to(context.device)
                out = enc(x)
                if not isinstance(out, (tuple, list)) or len(out) != 2:
                    raise UsageError(f"{self.name}: the '{o.encoder}' model must return (mu, logvar)")
                rec = gen(out[0])
                if rec.shape != x.shape:
                    raise UsageError(f"{self.name}: G(mu(x)) has shape {tuple(rec.shape)}, the test images "
                                     f"{tuple(x.shape)}")
                per_image.append(((rec.double() - x.double()) ** 2).flatten(1).mean(1).cpu() * factor)
        mse = torch.cat(per_image)
        n = int(mse.numel())
        return MetricResult(
            name=f"reconstruction_mse[{o.pixel_scale}]", value=float(mse.mean()),
            std_error=float(mse.std() / math.sqrt(n)) if n > 1 else None, n_samples=n, higher_is_better=False,
            backend=f"G(mu_I(x)) per-pixel MSE, {'[0,1]' if o.pixel_scale == 'unit' else 'model range'} (float64)",
            details={"test": {"name": o.test.name, "options": dict(o.test.options)}, "pixel_scale": o.pixel_scale,
                     "note": "the papers do not state the pixel scale of their MSE"},
        )


# ---------------------------------------------------------------------------------------
# energy statistics
@attrs.frozen(kw_only=True)
class EnergyStatisticsOptions:
    """Mean and sd of the descriptor's score f(Y) on train / test / synthesised / negative sets."""

    # Training set; "none" = the run's training set.
    train: Optional[DatasetRef] = None
    include_train: bool = True
    # Held-out test set and negatives (e.g. random Places205 images); "none" = not computed.
    test: Optional[DatasetRef] = None
    negatives: Optional[DatasetRef] = None
    # Synthesised samples: the objective's sample kind and count.
    samples: str = "revised"
    n_samples: int = attrs.field(default=10000, validator=positive)
    # Use the first N images of each dataset only (0 = all).
    limit: int = attrs.field(default=0, validator=non_negative)
    batch_size: int = attrs.field(default=100, validator=positive)
    # Divide all reported scores by this (multigrid Table 1 shows x1e4, x1e5, x1e6; a repro table
    # keeps 1 and displays with the cell's `exponent`).
    scale: float = attrs.field(default=1.0, validator=positive)
    descriptor: str = "descriptor"
    # "block_mean": images larger than the descriptor's input (one integer factor) are down-scaled
    # to it by block means, multigrid Section 6 (grid1's statistics on the sets' 4x4 versions);
    # "none": every set must already have the descriptor's input size.
    downscale: Literal["block_mean", "none"] = "block_mean"


def _scores(model: torch.nn.Module, batches, device: torch.device, downscale: str = "none",
            what: str = "images") -> np.ndarray:
    """f(Y) of every image of `batches`, float64; with `downscale = "block_mean"` each batch is
    first block-averaged to the model's input size (`model.input_shape`, when it has one)."""
    target = tuple(getattr(model, "input_shape", ()) or ())
    out = []
    with torch.no_grad():
        for x in batches:
            x = x.float()
            if len(target) == 3 and tuple(x.shape[1:]) != target:
                if downscale != "block_mean" or x.dim() != 4 or x.shape[1] != target[0]:
                    hint = "" if downscale == "block_mean" else ' (downscale = "block_mean" would average them down)'
                    raise UsageError(f"energy_statistics: the {what} are {list(x.shape[1:])} but the descriptor "
                                     f"takes {list(target)}{hint}")
                x = block_mean_to(x, target[1:])
            out.append(model.score(x.to(device)).double().cpu())
    return torch.cat(out).numpy()


class EnergyStatistics:
    """Descriptor score f(Y) statistics per set (multigrid Table 1).

    `value` = mean score of the synthesised samples / `scale`; `details.sets` holds, per set
    computed, mean, sd (population sd, ddof 0) and count, raw and divided by `scale`.  Sets whose
    dataset is not given (test, negatives) are listed in `details.omitted`.  Every set is scored at
    the descriptor's own input size: larger images are block-averaged down to it (`downscale`), so
    one run's grid1, grid2 and grid3 descriptors are each scored on their grid's versions of the
    same images, as multigrid Table 1 reports them.  The descriptor is used
    in whatever mode (train/eval) the caller left it; a batch-norm descriptor in train mode scores
    with batch statistics, as the multigrid code does.
    """

    name = "energy_statistics"

    def __init__(self, options: EnergyStatisticsOptions = EnergyStatisticsOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        model = _model(context, o.descriptor, self.name, "a descriptor with score(x)")
        if not hasattr(model, "score"):
            raise UsageError(f"{self.name}: the '{o.descriptor}' model has no score(x)")
        raw: dict[str, np.ndarray] = {}
        omitted = []
        sources: dict[str, Any] = {}
        if o.include_train:
            ds = _dataset(context, o.train, self.name, "train", allow_train=True)
            raw["train"] = _scores(model, _batches(ds, _count(ds, o.limit, self.name, "train"), o.batch_size),
                                   context.device, o.downscale, "train images")
            sources["train"] = getattr(ds, "name", "train")
        for what, ref in (("test", o.test), ("negatives", o.negatives)):
            if ref is None:
                omitted.append(what)
                continue
            ds = _dataset(context, ref, self.name, what)
            raw[what] = _scores(model, _batches(ds, _count(ds, o.limit, self.name, what), o.batch_size),
                                context.device, o.downscale, f"{what} images")
            sources[what] = {"name": ref.name, "options": dict(ref.options)}
        context.progress(f"{self.name}: drawing {o.n_samples} '{o.samples}' samples")

        def synth():
            remaining = o.n_samples
            while remaining > 0:
                k = min(o.batch_size, remaining)
                yield draw_samples(context.objective, o.samples, k, context.generator, batch=k)
                remaining -= k

        raw["synthesised"] = _scores(model, synth(), context.device, o.downscale, f"'{o.samples}' samples")
        sources["synthesised"] = o.samples
        sets = {}
        for what, s in raw.items():
            mean, sd = float(s.mean()), float(s.std())
            sets[what] = {"mean": mean / o.scale, "sd": sd / o.scale, "count": int(s.size),
                          "mean_raw": mean, "sd_raw": sd}
        syn = sets["synthesised"]
        return MetricResult(
            name=f"energy_statistics[{o.samples}]", value=syn["mean"],
            std_error=syn["sd"] / math.sqrt(syn["count"]), n_samples=syn["count"],
            backend=(f"descriptor score f(Y) ('{o.descriptor}'), "
                     + ("sets block-averaged to its input size, " if o.downscale == "block_mean" else "")
                     + f"float64 statistics, divided by {o.scale:g}"),
            details={"sets": sets, "omitted": omitted, "sources": sources, "scale": o.scale, "downscale": o.downscale,
                     "display": {k: f"{v['mean']:.4g} ± {v['sd']:.4g}" for k, v in sets.items()}},
        )


# ---------------------------------------------------------------------------------------
# Inception class scores (TPAMI Fig. 7)
def class_scores(logits: np.ndarray, target: int, top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample softmax probability of class `target` and whether `target` is missing from the
    top-k classes (1.0 = top-k error), from logits [N, K] (float64)."""
    lg = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    if lg.dim() != 2 or lg.shape[0] < 1:
        raise UsageError(f"class scores need logits [N, K]; got shape {tuple(lg.shape)}")
    k = lg.shape[1]
    if not 0 <= target < k:
        raise UsageError(f"target_class {target} is outside the network's {k} classes")
    if not 1 <= top_k <= k:
        raise UsageError(f"top_k {top_k} must be in 1..{k}")
    prob = torch.softmax(lg, dim=1)[:, target]
    top = lg.topk(top_k, dim=1).indices
    miss = (top != target).all(dim=1).double()
    return prob.numpy(), miss.numpy()


@attrs.frozen(kw_only=True)
class InceptionClassScoresOptions(_fid.InceptionMetricOptions):
    """Average softmax probability of a target class and top-k error of samples (TPAMI Fig. 7)."""

    backend: Literal["fid-helper", "torch-fidelity"] = "torch-fidelity"
    n_samples: int = attrs.field(default=1000, validator=positive)
    # Index into the network's own 1008 outputs (TF-Inception-2015-12-05 label map); required.
    target_class: Optional[int] = None
    top_k: int = attrs.field(default=5, validator=positive)


class InceptionClassScores:
    """Mean softmax probability of `target_class` (`value`) and top-k error (`details.top5_error`
    for k = 5) of the run's samples under the Inception logits used by ``inception_score``.

    `target_class` indexes the 1008 outputs of the TF-Inception-2015-12-05 graph (torch-fidelity's
    "logits_unbiased", no bias), whose label map is the graph's own, not torchvision's 0..999.
    """

    name = "inception_class_scores"

    def __init__(self, options: InceptionClassScoresOptions = InceptionClassScoresOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        if o.target_class is None:
            raise UsageError(f"{self.name}: set target_class (an index into the Inception network's 1008 classes), "
                             "e.g. --set target_class=...")
        if o.backend == "fid-helper":
            raise UsageError(f"{self.name} needs the Inception logits; the fid-helper backend's network stops at "
                             "pool3. Use --set backend='torch-fidelity' (with its weights cached or --set weights=PATH).")
        backend = _fid.load_backend(o.backend, o.weights, context.device, context.progress)
        _, logits = _fid.sample_features(context, o, backend, self.name, want_logits=True)
        prob, miss = class_scores(logits, o.target_class, o.top_k)
        n = int(prob.size)
        return MetricResult(
            name=f"inception_class_scores[{o.samples}, class {o.target_class}]", value=float(prob.mean()),
            std_error=float(prob.std(ddof=1) / math.sqrt(n)) if n > 1 else None, n_samples=n,
            higher_is_better=True,
            backend=f"{backend.name} {_fid.NETWORK_LOGITS} ({backend.weights.name} sha256:{backend.sha256[:12]})",
            details={**_fid._common_details(o, backend), "target_class": o.target_class, "top_k": o.top_k,
                     f"top{o.top_k}_error": float(miss.mean()), "mean_class_probability": float(prob.mean())},
        )


# ---------------------------------------------------------------------------------------
# pairwise SSIM (TPAMI Fig. 7)
@attrs.frozen(kw_only=True)
class PairwiseSsimOptions:
    """Average SSIM between random pairs of the run's samples (lower = more diverse)."""

    samples: str = "revised"
    n_samples: int = attrs.field(default=1000, validator=positive)
    n_pairs: int = attrs.field(default=1000, validator=positive)
    # Samples are clipped to [-1, 1]; SSIM's data_range is then 2.
    data_range: float = attrs.field(default=2.0, validator=positive)
    clip: bool = True
    # scikit-image's window: 7 x 7 uniform by default; gaussian_weights uses sigma 1.5.
    win_size: int = attrs.field(default=7, validator=positive)
    gaussian_weights: bool = False


def pair_indices(n: int, n_pairs: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n_pairs` random pairs (i, j) of distinct indices in 0..n-1 (with replacement across pairs)."""
    if n < 2:
        raise UsageError(f"pairwise SSIM needs at least 2 samples; got {n}")
    i = torch.randint(0, n, (n_pairs,), generator=generator)
    j = (i + torch.randint(1, n, (n_pairs,), generator=generator)) % n
    return i.numpy(), j.numpy()


def ssim_pair(a: np.ndarray, b: np.ndarray, data_range: float, win_size: int = 7,
              gaussian_weights: bool = False) -> float:
    """SSIM of two images [C, H, W] with scikit-image (channels averaged for C > 1)."""
    from skimage.metrics import structural_similarity

    if min(a.shape[-2:]) < win_size:
        raise UsageError(f"SSIM window {win_size} is larger than the images {a.shape[-2:]}; set a smaller odd win_size")
    kw = dict(data_range=data_range, win_size=win_size, gaussian_weights=gaussian_weights)
    if a.shape[0] == 1:
        return float(structural_similarity(a[0], b[0], **kw))
    return float(structural_similarity(a, b, channel_axis=0, **kw))


class PairwiseSsim:
    """Mean scikit-image SSIM over `n_pairs` random pairs of distinct samples (TPAMI Fig. 7)."""

    name = "pairwise_ssim"

    def __init__(self, options: PairwiseSsimOptions = PairwiseSsimOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        samples = draw_samples(context.objective, o.samples, o.n_samples, context.generator)
        if samples.dim() != 4:
            raise UsageError(f"{self.name}: needs image samples [N, C, H, W]; got shape {tuple(samples.shape)}")
        x = samples.double()
        if o.clip:
            x = x.clamp(-o.data_range / 2, o.data_range / 2)
        x = x.numpy()
        ii, jj = pair_indices(x.shape[0], o.n_pairs, context.generator)
        values = np.array([ssim_pair(x[i], x[j], o.data_range, o.win_size, o.gaussian_weights)
                           for i, j in zip(ii, jj)])
        return MetricResult(
            name=f"pairwise_ssim[{o.samples}]", value=float(values.mean()),
            std_error=float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else None,
            n_samples=int(x.shape[0]), higher_is_better=False,
            backend=f"skimage.metrics.structural_similarity (data_range={o.data_range:g}, win_size={o.win_size}, "
                    f"gaussian_weights={o.gaussian_weights})",
            details={"n_pairs": o.n_pairs, "clip": o.clip,
                     "note": "lower = more diverse samples; pairs of distinct samples drawn with replacement"},
        )
