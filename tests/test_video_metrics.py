"""Video PSNR / SSIM against scikit-image's reference functions, frame by frame."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from coop_metrics.video import frame_psnr, frame_ssim, video_psnr, video_ssim
from coopcore import EvalContext, NoOptions, TensorImageDataset, UsageError


def _videos(c: int, t: int = 5, h: int = 16, w: int = 18, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An observed video in [-1, 1] [C, T, H, W] and a noisy, clipped copy."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (c, t, h, w))
    gen = np.clip(obs + rng.normal(0, 0.3, obs.shape), -1, 1)
    return gen, obs


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_scikit_image_frame_by_frame(channels):
    gen, obs = _videos(channels)
    psnr_ref = [peak_signal_noise_ratio(obs[:, t], gen[:, t], data_range=2.0) for t in range(obs.shape[1])]
    if channels == 1:
        ssim_ref = [structural_similarity(obs[0, t], gen[0, t], data_range=2.0) for t in range(obs.shape[1])]
    else:
        ssim_ref = [structural_similarity(np.moveaxis(obs[:, t], 0, -1), np.moveaxis(gen[:, t], 0, -1),
                                          data_range=2.0, channel_axis=-1) for t in range(obs.shape[1])]
    np.testing.assert_allclose(frame_psnr(gen, obs, 2.0), psnr_ref, atol=1e-6)
    np.testing.assert_allclose(frame_ssim(torch.from_numpy(gen), torch.from_numpy(obs), 2.0), ssim_ref, atol=1e-6)
    assert video_psnr(gen, obs, 2.0) == pytest.approx(np.mean(psnr_ref), abs=1e-6)
    assert video_ssim(gen, obs, 2.0) == pytest.approx(np.mean(ssim_ref), abs=1e-6)
    # [T, H, W, C] gives the same numbers.
    thwc = (np.moveaxis(gen, 0, -1), np.moveaxis(obs, 0, -1))
    assert video_psnr(*thwc, 2.0, layout="THWC") == pytest.approx(video_psnr(gen, obs, 2.0), abs=1e-12)
    assert video_ssim(*thwc, 2.0, layout="THWC") == pytest.approx(video_ssim(gen, obs, 2.0), abs=1e-12)


def test_gaussian_window_option_matches_wang_settings():
    gen, obs = _videos(1, h=24, w=24, seed=1)
    ref = [structural_similarity(obs[0, t], gen[0, t], data_range=2.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False) for t in range(obs.shape[1])]
    np.testing.assert_allclose(frame_ssim(gen, obs, 2.0, gaussian_weights=True), ref, atol=1e-6)


def test_frames_are_aligned_and_identical_videos_score_perfectly():
    gen, obs = _videos(1, t=4)
    assert np.all(np.isinf(frame_psnr(obs, obs, 2.0))) and video_ssim(obs, obs, 2.0) == pytest.approx(1.0)
    # A time-reversed copy is a different video frame by frame.
    assert video_ssim(obs[:, ::-1], obs, 2.0) < 0.5
    # The data range enters PSNR as 20 log10(R): halving it costs 6.02 dB exactly.
    assert video_psnr(gen, obs, 1.0) == pytest.approx(video_psnr(gen, obs, 2.0) - 20 * math.log10(2), abs=1e-9)
    with pytest.raises(ValueError):
        video_psnr(gen[:, :3], obs, 2.0)


# ---------------------------------------------------------------------------------------
class _VideoObjective:
    def __init__(self, videos: torch.Tensor) -> None:
        self.videos = videos

    def samples(self, n, generator):
        return {"generator": self.videos[:n] * 2.0, "revised": self.videos[:n]}


def _context(registries, videos, train=None) -> EvalContext:
    return EvalContext(objective=_VideoObjective(videos), models={}, registries=registries, data_root=None,
                       device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), train_dataset=train)


def test_metric_against_a_reference_dataset(registries):
    from coopcore.build import build_metric

    gen_a, obs = _videos(3, t=4, h=12, w=12, seed=2)
    gen_b, _ = _videos(3, t=4, h=12, w=12, seed=3)
    reference = torch.from_numpy(obs)[None].float()
    registries.dataset.add("test.one_video", lambda options, root=None: TensorImageDataset(reference, "one-video"),
                           NoOptions, owner="tests")
    generated = torch.from_numpy(np.stack([gen_a, gen_b])).float()
    metric = build_metric(registries, "video_psnr_ssim",
                          {"samples": "revised", "reference": {"name": "test.one_video"}, "n_samples": 2})
    res = metric.compute(_context(registries, generated))
    # Both generated videos are compared with the single observed one (i mod 1).
    obs32 = reference[0].double().numpy()
    psnr = [video_psnr(v.double().numpy(), obs32, 2.0) for v in generated]
    ssim = [video_ssim(v.double().numpy(), obs32, 2.0) for v in generated]
    assert res.value == pytest.approx(np.mean(psnr), abs=1e-9)
    assert res.details["ssim"] == pytest.approx(np.mean(ssim), abs=1e-9)
    assert res.n_samples == 2 and res.details["n_frames"] == 4 and "scikit-image" in res.backend
    # Default reference = the run's training video; default samples = the first key
    # ("generator", here twice the revised ones, so clipping to [-1, 1] matters).
    res2 = build_metric(registries, "video_psnr_ssim", {}).compute(
        _context(registries, generated, train=TensorImageDataset(reference, "train")))
    clipped = (generated[0] * 2).clamp(-1, 1).double().numpy()
    assert res2.n_samples == 1 and res2.details["samples"] == "generator"
    assert res2.value == pytest.approx(video_psnr(clipped, obs32, 2.0), abs=1e-9)


def test_metric_refuses_mismatched_shapes(registries):
    from coopcore.build import build_metric

    _, obs = _videos(1, t=4, h=12, w=12)
    frames = torch.zeros(1, 1, 12, 12)  # images, not videos
    with pytest.raises(UsageError, match="reference videos"):
        build_metric(registries, "video_psnr_ssim", {}).compute(
            _context(registries, frames, train=TensorImageDataset(torch.from_numpy(obs)[None].float(), "train")))
