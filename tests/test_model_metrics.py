"""reconstruction_mse, energy_statistics, feature_probe, inception_class_scores and pairwise_ssim
against independent references, with tiny in-process models and a stand-in Inception backend."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn

from coop_coopnets.networks import ConvDescriptor, ConvDescriptorOptions
from coop_metrics import inception as inc
from coop_metrics.model_stats import (EnergyStatisticsOptions, InceptionClassScoresOptions, PairwiseSsimOptions,
                                      ReconstructionMseOptions, class_scores, pair_indices)
from coop_metrics.probe import FeatureProbeOptions
from coopcore import EvalContext, TensorImageDataset, UsageError
from coopcore.build import build_metric

from conftest import FixedImagesObjective


@dataclass
class _Context(EvalContext):
    """An EvalContext whose datasets are in-process tensors, looked up by name."""

    datasets: dict[str, Any] = field(default_factory=dict)

    def build_dataset(self, name, options, path="dataset"):
        if name not in self.datasets:
            raise UsageError(f"{path}: unknown test dataset {name}")
        return self.datasets[name]




def _ctx(registries, models=None, objective=None, datasets=None, train=None, seed=0):
    return _Context(objective=objective, models=models or {}, registries=registries, data_root=None,
                    device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed), train_dataset=train,
                    datasets=datasets or {})


def _metric(registries, name, options):
    return build_metric(registries, name, options)


# ---------------------------------------------------------------------------------------
# reconstruction MSE
class _LinearEncoder(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        mu = x.flatten(1) @ self.w.T
        return mu, torch.zeros_like(mu)


class _LinearGenerator(nn.Module):
    def __init__(self, w_inv, shape, offset):
        super().__init__()
        self.w_inv, self.shape, self.offset = w_inv, shape, offset

    def forward(self, z):
        return (z @ self.w_inv.T).view(-1, *self.shape) + self.offset


def test_reconstruction_mse_exact_and_perturbed(registries):
    g = torch.Generator().manual_seed(0)
    shape = (1, 4, 4)
    w = torch.randn(16, 16, generator=g, dtype=torch.float64) + 4 * torch.eye(16, dtype=torch.float64)
    w_inv = torch.linalg.inv(w)
    x = (torch.rand(23, *shape, generator=g, dtype=torch.float64) * 2 - 1)
    data = {"toy": TensorImageDataset(x, name="toy")}
    enc = _LinearEncoder(w)
    exact = _ctx(registries, {"encoder": enc, "generator": _LinearGenerator(w_inv, shape, 0.0)}, datasets=data)
    opts = {"test": {"name": "toy"}, "batch_size": 5}
    res = _metric(registries, "reconstruction_mse", opts).compute(exact)
    assert res.value < 1e-20 and res.n_samples == 23 and not res.higher_is_better and "[0,1]" in res.backend
    # a known perturbation p per pixel: MSE = mean(p^2) on the model scale, / 4 on [0, 1]
    p = torch.linspace(-0.3, 0.5, 16, dtype=torch.float64).view(shape)
    ctx = _ctx(registries, {"encoder": enc, "generator": _LinearGenerator(w_inv, shape, p)}, datasets=data)
    unit = _metric(registries, "reconstruction_mse", opts).compute(ctx)
    model = _metric(registries, "reconstruction_mse", {**opts, "pixel_scale": "model", "limit": 10}).compute(ctx)
    expected = float((p.numpy() ** 2).mean())
    assert model.value == pytest.approx(expected, rel=1e-10) and model.n_samples == 10
    assert unit.value == pytest.approx(expected / 4, rel=1e-10)
    with pytest.raises(UsageError, match="'encoder'"):
        _metric(registries, "reconstruction_mse", opts).compute(_ctx(registries, {"generator": enc}, datasets=data))


# ---------------------------------------------------------------------------------------
# energy statistics
def _descriptor(shape=(1, 8, 8), seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ConvDescriptor(ConvDescriptorOptions(input_shape=shape, channels=(8, 16), kernels=(3, 3),
                                                    strides=(1, 2), init_std=None, fc_outputs=4))


def test_energy_statistics_match_direct_scores(registries):
    g = torch.Generator().manual_seed(1)
    train, test, neg = (torch.rand(n, 1, 8, 8, generator=g) * 2 - 1 for n in (30, 17, 9))
    syn = torch.rand(25, 1, 8, 8, generator=g) * 2 - 1
    d = _descriptor()
    ctx = _ctx(registries, {"descriptor": d}, FixedImagesObjective(syn), train=TensorImageDataset(train, "train"),
               datasets={"t": TensorImageDataset(test, "t"), "n": TensorImageDataset(neg, "n")})
    opts = {"test": {"name": "t"}, "negatives": {"name": "n"}, "n_samples": 25, "batch_size": 7, "scale": 100.0}
    res = _metric(registries, "energy_statistics", opts).compute(ctx)
    with torch.no_grad():
        direct = {k: d.score(v).double().numpy() for k, v in
                  (("train", train), ("test", test), ("negatives", neg), ("synthesised", syn))}
    for k, s in direct.items():
        got = res.details["sets"][k]
        assert got["count"] == s.size
        assert got["mean_raw"] == pytest.approx(np.mean(s), rel=1e-6, abs=1e-9)
        assert got["sd_raw"] == pytest.approx(np.std(s), rel=1e-6)
        assert got["mean"] == pytest.approx(np.mean(s) / 100, rel=1e-6, abs=1e-11)
    assert res.value == pytest.approx(np.mean(direct["synthesised"]) / 100, rel=1e-6, abs=1e-11)
    assert res.n_samples == 25 and res.details["omitted"] == []
    # without the training set available: a clear error, not a silent skip
    bare = _ctx(registries, {"descriptor": d}, FixedImagesObjective(syn))
    with pytest.raises(UsageError, match="training set is not available"):
        _metric(registries, "energy_statistics", {"n_samples": 5}).compute(bare)
    only = _metric(registries, "energy_statistics", {"n_samples": 5, "include_train": False}).compute(
        _ctx(registries, {"descriptor": d}, FixedImagesObjective(syn)))
    assert set(only.details["sets"]) == {"synthesised"} and only.details["omitted"] == ["test", "negatives"]


# ---------------------------------------------------------------------------------------
# feature probe
def _separable(n, seed):
    """Three classes: a bright 3x3 patch in one of three places, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.2 - 0.5
    for i, c in enumerate(labels.tolist()):
        r, s = [(0, 0), (0, 5), (5, 2)][c]
        x[i, 0, r : r + 3, s : s + 3] += 1.0
    return TensorImageDataset(x, "separable", labels=labels)


def test_feature_probe_learns_separable_classes_deterministically(registries):
    d = _descriptor()
    train, test = _separable(150, 0), _separable(90, 1)
    opts = {"test": {"name": "test"}, "n_labels": [30, 60], "epochs": 30, "batch_size": 10, "lr": 0.01}
    ctx = lambda: _ctx(registries, {"descriptor": d}, train=train, datasets={"test": test}, seed=3)  # noqa: E731
    res = _metric(registries, "feature_probe", opts).compute(ctx())
    assert res.value < 0.1 and res.details["test_error"]["60"] < 0.1 and res.n_samples == 90
    assert res.details["n_classes"] == 3 and not res.higher_is_better
    again = _metric(registries, "feature_probe", opts).compute(ctx())
    assert again.details == res.details and again.value == res.value
    unlabelled = TensorImageDataset(test.images, "plain")
    with pytest.raises(UsageError, match="no labels"):
        _metric(registries, "feature_probe", opts).compute(
            _ctx(registries, {"descriptor": d}, train=train, datasets={"test": unlabelled}))

    class NoFeatures(nn.Module):
        def score(self, x):
            return x.flatten(1).sum(1)

    with pytest.raises(UsageError, match="no `features` module"):
        _metric(registries, "feature_probe", opts).compute(
            _ctx(registries, {"descriptor": NoFeatures()}, train=train, datasets={"test": test}))
    with pytest.raises(UsageError, match="class 0 has"):
        _metric(registries, "feature_probe", {**opts, "n_labels": [300]}).compute(ctx())


# ---------------------------------------------------------------------------------------
# Inception class scores
def test_class_scores_on_hand_made_logits():
    probs = np.array([
        [0.40, 0.20, 0.15, 0.10, 0.08, 0.05, 0.02],  # target 0 ranked 1st: hit
        [0.01, 0.30, 0.20, 0.19, 0.15, 0.10, 0.05],  # ranked 7th: miss
        [0.10, 0.30, 0.20, 0.19, 0.15, 0.04, 0.02],  # ranked 5th: hit
        [0.05, 0.30, 0.20, 0.19, 0.15, 0.09, 0.02],  # ranked 6th: miss
    ])
    prob, miss = class_scores(np.log(probs) + 3.0, target=0, top_k=5)
    np.testing.assert_allclose(prob, [0.40, 0.01, 0.10, 0.05], rtol=1e-12)
    np.testing.assert_array_equal(miss, [0, 1, 0, 1])
    assert class_scores(np.log(probs), target=0, top_k=1)[1].tolist() == [0, 1, 1, 1]
    with pytest.raises(UsageError, match="outside"):
        class_scores(probs, target=7)


@pytest.fixture
def lookup_backend(monkeypatch):
    """A stand-in network whose logits are a fixed random row per 8-bit grey level of pixel (0, 0)."""
    table = torch.randn(256, 1008, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3

    def forward(u8):
        v = u8[:, 0, 0, 0].long()
        return torch.zeros(u8.shape[0], 64), table[v].float()

    backend = inc.InceptionBackend("stand-in", Path("stand-in.pt"), "ab" * 32, True, forward, torch.device("cpu"),
                                   feature_dim=64)
    import coop_metrics.fid as fid_module

    monkeypatch.setattr(fid_module, "load_backend", lambda *a, **k: backend)
    return table


def test_inception_class_scores_metric(registries, lookup_backend):
    levels = torch.linspace(-1, 1, 40)
    images = levels.view(-1, 1, 1, 1).expand(-1, 1, 8, 8).contiguous()
    target = 17
    res = _metric(registries, "inception_class_scores", {"n_samples": 40, "batch_size": 16,
                                                         "target_class": target}).compute(
        _ctx(registries, objective=FixedImagesObjective(images)))
    u8 = np.round((levels.numpy().astype(np.float64) + 1) * 127.5).astype(int)
    lg = lookup_backend.float().double().numpy()[u8]
    p = np.exp(lg - lg.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    top5 = np.argsort(-lg, axis=1)[:, :5]
    assert res.value == pytest.approx(p[:, target].mean(), rel=1e-5)
    assert res.details["top5_error"] == pytest.approx(np.mean([target not in row for row in top5]))
    assert res.n_samples == 40 and "stand-in" in res.backend
    with pytest.raises(UsageError, match="target_class"):
        _metric(registries, "inception_class_scores", {"n_samples": 4}).compute(_ctx(registries, objective=FixedImagesObjective(images)))
    with pytest.raises(UsageError, match="logits"):
        _metric(registries, "inception_class_scores", {"target_class": 1, "backend": "fid-helper"}).compute(
            _ctx(registries, objective=FixedImagesObjective(images)))


# ---------------------------------------------------------------------------------------
# pairwise SSIM
def test_pairwise_ssim(registries):
    g = torch.Generator().manual_seed(7)
    one = torch.rand(1, 1, 16, 16, generator=g) * 2 - 1
    same = _metric(registries, "pairwise_ssim", {"n_samples": 6, "n_pairs": 10}).compute(
        _ctx(registries, objective=FixedImagesObjective(one.expand(6, -1, -1, -1).contiguous())))
    assert same.value == pytest.approx(1.0, abs=1e-12) and same.n_samples == 6
    for channels in (1, 3):
        pair = torch.rand(2, channels, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
        res = _metric(registries, "pairwise_ssim", {"n_samples": 2, "n_pairs": 3}).compute(
            _ctx(registries, objective=FixedImagesObjective(pair)))
        a, b = pair.numpy()
        if channels == 1:
            expected = structural_similarity(a[0], b[0], data_range=2.0)
        else:
            expected = structural_similarity(np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1), data_range=2.0,
                                             channel_axis=-1)
        assert res.value == pytest.approx(expected, rel=1e-10)
    i, j = pair_indices(5, 1000, torch.Generator().manual_seed(0))
    assert (i != j).all() and set(i) == set(range(5)) and set(j) == set(range(5))
    with pytest.raises(UsageError, match="window"):
        _metric(registries, "pairwise_ssim", {"n_samples": 2, "n_pairs": 1}).compute(
            _ctx(registries, objective=FixedImagesObjective(torch.zeros(2, 1, 5, 5))))


def test_options_defaults_are_valid():
    ReconstructionMseOptions(), EnergyStatisticsOptions(), PairwiseSsimOptions(), InceptionClassScoresOptions()
    assert FeatureProbeOptions().n_labels == [1000, 2000, 4000]


# ---------------------------------------------------------------------------------------
# digit score
def _digit_score(registries, images, **options):
    ctx = EvalContext(objective=FixedImagesObjective(images), models={}, registries=registries, data_root=None,
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      train_dataset=TensorImageDataset(images, name="stand-in"))
    return _metric(registries, "digit_score", {"n_samples": len(images), "epochs": 15, **options}).compute(ctx)


def test_digit_score_of_the_real_test_digits_is_the_reference(registries):
    """Scored as if they were samples, the real test digits reproduce the reported real-data row."""
    from coopcore.build import build_dataset

    real = build_dataset(registries, "digits", {"split": "test", "size": 16}, None)
    images = real.get_batch(torch.arange(len(real)))
    res = _digit_score(registries, images)
    ref = res.details["real_test_digits"]
    assert res.value == ref["mean_confidence"] and res.details["class_histogram"] == ref["class_histogram"]
    assert res.details["classifier_test_accuracy"] > 0.85 and ref["classes_covered"] == 10
    assert abs(ref["class_entropy_bits"] - 3.32) < 0.1  # the test split is nearly class-balanced


def test_digit_score_sees_one_class_and_rescales_the_value_range(registries):
    """One repeated image: one class, zero entropy; samples in 0..255 are mapped to the classifier's range."""
    from coopcore.build import build_dataset

    one = build_dataset(registries, "digits", {"split": "test", "size": 16, "limit": 1}, None).get_batch(torch.arange(1))
    res = _digit_score(registries, one.repeat(20, 1, 1, 1))
    assert res.details["classes_covered"] == 1 and res.details["class_entropy_bits"] == 0.0
    pixels = (one.repeat(20, 1, 1, 1) + 1) * 127.5
    ctx_images = TensorImageDataset(pixels, name="pixels", value_range=(0.0, 255.0))
    ctx = EvalContext(objective=FixedImagesObjective(pixels), models={}, registries=registries, data_root=None,
                      device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), train_dataset=ctx_images)
    scaled = _metric(registries, "digit_score", {"n_samples": 20, "epochs": 15}).compute(ctx)
    assert abs(scaled.value - res.value) < 1e-5
