"""Entry point of the built-in metric plugin."""
from __future__ import annotations

from coopcore import hookimpl

from .inpainting import Inpainting, InpaintingOptions
from .fid import (FidOptions, FrechetInceptionDistance, InceptionScore, InceptionScoreOptions,
                  KernelInceptionDistance, KidOptions)
from .parzen import Parzen, ParzenOptions
from .video import VideoPsnrSsim, VideoPsnrSsimOptions


@hookimpl
def coop_register_metrics(registry) -> None:
    registry.add("parzen", Parzen, ParzenOptions, "Parzen-window log-likelihood (TPAMI Table 2 protocol)")
    registry.add("fid", FrechetInceptionDistance, FidOptions, "Frechet Inception Distance (TF-Inception-2015-12-05 pool3)")
    registry.add("kid", KernelInceptionDistance, KidOptions, "Kernel Inception Distance (TF-Inception-2015-12-05 pool3)")
    registry.add("inception_score", InceptionScore, InceptionScoreOptions, "Inception Score (TF-Inception-2015-12-05 logits)")
    registry.add("inpainting", Inpainting, InpaintingOptions,
                 "Inpainting error and PSNR on the missing pixels (TPAMI Table 5, AAAI Table 1, multigrid/triangle Table 3)")
    registry.add("video_psnr_ssim", VideoPsnrSsim, VideoPsnrSsimOptions,
                 "Frame-aligned PSNR and SSIM of generated vs observed videos (TPAMI Table 6)")
