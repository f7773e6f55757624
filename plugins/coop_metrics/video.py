"""PSNR and SSIM between a generated and an observed video (TPAMI Table 6, dynamic textures).

Layout: a video is [C, T, H, W] (channels first, as torch's Conv3d and the spatial-temporal
networks produce it); `layout="THWC"` accepts [T, H, W, C] instead.  The comparison is frame
aligned, frame t of the generated video against frame t of the observed one, and both numbers
are averaged over the T frames:

    PSNR_t = 10 log10(R^2 / mean over C, H, W of (gen_t - obs_t)^2),   R = the data range
    SSIM_t = skimage.metrics.structural_similarity(obs_t, gen_t, data_range=R, channel_axis=-1)

SSIM is scikit-image's (mean SSIM over the frame and, for colour, over channels), by default
with its 7 x 7 uniform window and sample covariance; `gaussian_weights=True` gives the
Wang et al. (2004) settings (Gaussian window sigma 1.5, population covariance).  The paper
does not say which implementation it used or how frames were paired (recipes.md, known gaps).
"""
from __future__ import annotations

import math
from typing import Literal, Optional

import attrs
import numpy as np
import torch
from torch import Tensor

from coopcore import EvalContext, MetricResult, UsageError, non_negative

from .parzen import DatasetRef

Layout = Literal["CTHW", "THWC"]


def to_frames(video: Tensor | np.ndarray, layout: Layout = "CTHW") -> np.ndarray:
    """A video as float64 frames [T, H, W, C]."""
    v = video.detach().cpu().double().numpy() if isinstance(video, Tensor) else np.asarray(video, dtype=np.float64)
    if v.ndim != 4:
        raise ValueError(f"a video must have 4 dimensions ({layout}), got shape {tuple(v.shape)}")
    return np.moveaxis(v, 0, -1) if layout == "CTHW" else v


def _pair(generated: Tensor | np.ndarray, observed: Tensor | np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    gen, obs = to_frames(generated, layout), to_frames(observed, layout)
    if gen.shape != obs.shape:
        raise ValueError(f"generated video {gen.shape} and observed video {obs.shape} differ in shape (T, H, W, C)")
    return gen, obs


def frame_psnr(
    generated: Tensor | np.ndarray, observed: Tensor | np.ndarray, data_range: float, layout: Layout = "CTHW"
) -> np.ndarray:
    """PSNR of every frame [T] (dB; +inf where a frame is reproduced exactly)."""
    gen, obs = _pair(generated, observed, layout)
    mse = ((gen - obs) ** 2).reshape(gen.shape[0], -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def _window(h: int, w: int, win_size: Optional[int], gaussian: bool) -> Optional[int]:
    """skimage's default window unless the frames are smaller: then the largest odd size that fits."""
    if win_size is not None:
        return win_size
    default = 11 if gaussian else 7
    side = min(h, w)
    return None if side >= default else max(3, side if side % 2 else side - 1)


def frame_ssim(
    generated: Tensor | np.ndarray, observed: Tensor | np.ndarray, data_range: float, layout: Layout = "CTHW",
    win_size: Optional[int] = None, gaussian_weights: bool = False,
) -> np.ndarray:
    """scikit-image SSIM of every frame [T], with the data range given explicitly."""
    from skimage.metrics import structural_similarity

    gen, obs = _pair(generated, observed, layout)
    _, h, w, c = gen.shape
    kwargs = dict(data_range=data_range, win_size=_window(h, w, win_size, gaussian_weights))
    if gaussian_weights:
        kwargs.update(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    out = []
    for g_t, o_t in zip(gen, obs):
        if c == 1:
            out.append(structural_similarity(o_t[..., 0], g_t[..., 0], **kwargs))
        else:
            out.append(structural_similarity(o_t, g_t, channel_axis=-1, **kwargs))
    return np.asarray(out, dtype=np.float64)


def video_psnr(generated: Tensor | np.ndarray, observed: Tensor | np.ndarray, data_range: float, layout: Layout = "CTHW") -> float:
    """Frame-aligned PSNR averaged over frames."""
    return float(frame_psnr(generated, observed, data_range, layout).mean())


def video_ssim(
    generated: Tensor | np.ndarray, observed: Tensor | np.ndarray, data_range: float, layout: Layout = "CTHW",
    win_size: Optional[int] = None, gaussian_weights: bool = False,
) -> float:
    """Frame-aligned SSIM averaged over frames."""
    return float(frame_ssim(generated, observed, data_range, layout, win_size, gaussian_weights).mean())


# ---------------------------------------------------------------------------------------
@attrs.frozen(kw_only=True)
class VideoPsnrSsimOptions:
    """PSNR / SSIM of generated videos against observed ones (TPAMI Table 6)."""

    # Which of the objective's named samples; "none" = the first it returns.
    samples: Optional[str] = None
    # Observed videos; "none" = the run's training data (Table 6 compares with the training video).
    reference: Optional[DatasetRef] = None
    # Generated videos to compare; 0 = one per reference video.  Video i is compared with
    # reference video i mod (number of reference videos).
    n_samples: int = attrs.field(default=0, validator=non_negative)
    layout: Layout = "CTHW"
    pixel_range: tuple[float, float] = (-1.0, 1.0)
    # Clip generated videos to pixel_range first (as writing them to 8-bit video would).
    clip: bool = True
    gaussian_weights: bool = False
    win_size: Optional[int] = None

    def __attrs_post_init__(self) -> None:
        if not self.pixel_range[0] < self.pixel_range[1]:
            raise ValueError(f"'pixel_range' must be [low, high] with low < high, got {list(self.pixel_range)}")
        if self.win_size is not None and (self.win_size < 3 or self.win_size % 2 == 0):
            raise ValueError(f"'win_size' must be an odd integer >= 3, got {self.win_size}")


class VideoPsnrSsim:
    """Frame-aligned PSNR (value) and SSIM (details) of generated vs observed videos."""

    name = "video_psnr_ssim"

    def __init__(self, options: VideoPsnrSsimOptions = VideoPsnrSsimOptions()) -> None:
        self.options = options

    def _reference(self, ctx: EvalContext) -> Tensor:
        ref = self.options.reference
        if ref is None:
            ds = ctx.train_dataset
            if ds is None:
                raise UsageError("video_psnr_ssim: no reference set and the run's training data is not available")
        else:
            ds = ctx.build_dataset(ref.name, ref.options, "reference")
        return ds.get_batch(torch.arange(len(ds))).double()

    def _generated(self, ctx: EvalContext, n: int) -> tuple[Tensor, str]:
        named = ctx.objective.samples(n, ctx.generator)
        key = self.options.samples or next(iter(named))
        if key not in named:
            raise UsageError(f"samples '{key}' are not produced by this objective; it offers: {', '.join(named)}")
        return named[key].detach().cpu().double()[:n], key

    def compute(self, context: EvalContext) -> MetricResult:
        import skimage

        o = self.options
        reference = self._reference(context)
        n = o.n_samples or reference.shape[0]
        generated, key = self._generated(context, n)
        if tuple(generated.shape[1:]) != tuple(reference.shape[1:]):
            raise UsageError(
                f"generated '{key}' samples are {list(generated.shape[1:])} per example but the reference videos are "
                f"{list(reference.shape[1:])}"
            )
        lo, hi = o.pixel_range
        if o.clip:
            generated = generated.clamp(lo, hi)
        r = hi - lo
        psnr = [video_psnr(g, reference[i % reference.shape[0]], r, o.layout) for i, g in enumerate(generated)]
        ssim = [
            video_ssim(g, reference[i % reference.shape[0]], r, o.layout, o.win_size, o.gaussian_weights)
            for i, g in enumerate(generated)
        ]
        n_frames = to_frames(reference[0], o.layout).shape[0]
        window = "gaussian sigma 1.5" if o.gaussian_weights else "uniform"
        return MetricResult(
            name=f"video_psnr[{key}]",
            value=float(np.mean(psnr)),
            std_error=float(np.std(psnr, ddof=1) / math.sqrt(len(psnr))) if len(psnr) > 1 else None,
            n_samples=len(psnr),
            backend=f"numpy PSNR + scikit-image {skimage.__version__} structural_similarity ({window} window), frame-aligned",
            details={
                "ssim": float(np.mean(ssim)),
                "psnr_per_video": [float(v) for v in psnr],
                "ssim_per_video": [float(v) for v in ssim],
                "n_reference": int(reference.shape[0]),
                "n_frames": int(n_frames),
                "layout": o.layout,
                "data_range": r,
                "samples": key,
            },
        )
