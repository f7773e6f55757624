"""Entry point of the built-in metric plugin."""
from __future__ import annotations

from coopcore import hookimpl

from .digit_score import DigitScore, DigitScoreOptions
from .inpainting import Inpainting, InpaintingOptions
from .fid import (FidOptions, FrechetInceptionDistance, InceptionScore, InceptionScoreOptions,
                  KernelInceptionDistance, KidOptions)
from .parzen import Parzen, ParzenOptions
from .video import VideoPsnrSsim, VideoPsnrSsimOptions
from .model_stats import (EnergyStatistics, EnergyStatisticsOptions, InceptionClassScores,
                          InceptionClassScoresOptions, PairwiseSsim, PairwiseSsimOptions, ReconstructionMse,
                          ReconstructionMseOptions)
from .probe import FeatureProbe, FeatureProbeOptions


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
    registry.add("reconstruction_mse", ReconstructionMse, ReconstructionMseOptions,
                 "Per-pixel test MSE of G(mu_I(x)) (triangle Table 2)")
    registry.add("energy_statistics", EnergyStatistics, EnergyStatisticsOptions,
                 "Mean and sd of the descriptor score f(Y) on train/test/synthesised/negatives (multigrid Table 1)")
    registry.add("feature_probe", FeatureProbe, FeatureProbeOptions,
                 "Test error of a classifier on frozen descriptor features (multigrid Table 2)")
    registry.add("inception_class_scores", InceptionClassScores, InceptionClassScoresOptions,
                 "Mean softmax probability of a target class and top-5 error (TPAMI Fig. 7)")
    registry.add("digit_score", DigitScore, DigitScoreOptions,
                 "readability of digit samples: a ConvNet trained on the real digits scores them")
    registry.add("pairwise_ssim", PairwiseSsim, PairwiseSsimOptions,
                 "Average SSIM between random pairs of samples (TPAMI Fig. 7)")
