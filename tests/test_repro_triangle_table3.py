"""Divergence triangle Table 3 (learning from occluded images): the `abp` baseline and the `vae`
objective with an occlusion (Algorithm G / a VAE on the observed pixels) and `coop repro
triangle:table3 --scale smoke` end to end, pinned by golden numbers."""
from __future__ import annotations

import json
from typing import Optional

import pytest
import torch

from coopcore import Batch, Parts
from test_repro_triangle_table1 import TABLE_TOL, run_triangle_smoke

MASKS = ("P.5", "P.7", "MB10", "B20", "B30")


def _abp(occlusion: str = "B4", n: int = 6, steps: int = 2, seed: int = 0):
    from coop_coopnets.samplers import Langevin, LangevinOptions
    from coop_triangle.abp import Abp, AbpOptions
    from coop_triangle.networks import TriangleGenerator, TriangleGeneratorOptions

    torch.manual_seed(seed)
    gen = TriangleGenerator(TriangleGeneratorOptions(latent_dim=4, out_channels=1, channels=(8, 4), sizes=(2, 4, 8),
                                                     kernels=(2, 4, 4), strides=(1, 2, 2), sigma=0.3))
    parts = Parts(models={"generator": gen}, samplers={"inference": Langevin(LangevinOptions(n_steps=steps, step_size=0.1))},
                  optimizers={"generator": torch.optim.Adam(gen.parameters(), lr=1e-3)}, n_train=n,
                  device=torch.device("cpu"), data_shape=(1, 8, 8))
    return Abp(AbpOptions(occlusion=occlusion, occlusion_seed=3), parts)


def test_abp_never_reads_the_ground_truth_of_the_holes():
    """Two data sets equal on the observed pixels and different in the holes train identically:
    inference and learning see the observed pixels only; the holes end up holding g(z_i)."""
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    runs = []
    for fill in (0.0, 1.0):
        obj = _abp()
        masks = obj.occlusion.masks
        data = torch.where(masks, x, torch.full_like(x, fill))
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            res = obj.step(Batch(x=data, index=torch.arange(6)), gen)
        runs.append((obj, res, data))
    (a, res_a, _), (b, res_b, data_b) = runs
    assert torch.equal(a.latents, b.latents)
    for pa, pb in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.equal(pa, pb)
    assert torch.equal(res_a.scalars["loss_generator"], res_b.scalars["loss_generator"])
    # holes = g(z_i) of the updated generator, observed pixels untouched
    with torch.no_grad():
        recon = b.generator(b.latents)
    recovered = b.recovered_images(data_b, torch.arange(6))
    masks = b.occlusion.masks
    assert torch.equal(recovered[masks.expand_as(recovered)], data_b[masks.expand_as(data_b)])
    assert torch.allclose(recovered[~masks.expand_as(recovered)], recon[~masks.expand_as(recon)])


def test_abp_masks_equal_the_triangle_objectives_and_the_state_round_trips():
    from coop_triangle.occlusion import example_masks

    obj = _abp(occlusion="B4")
    assert torch.equal(obj.occlusion.masks, example_masks("B4", range(6), (1, 8, 8), 3))
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    obj.step(Batch(x=x, index=torch.arange(6)), torch.Generator().manual_seed(0))
    state = obj.state_dict()
    other = _abp(occlusion="B4", seed=1)
    other.load_state_dict(state)
    assert torch.equal(other.latents, obj.latents)
    assert torch.equal(other.occlusion.imputed, obj.occlusion.imputed)
    wrong = _abp(occlusion="B3")
    with pytest.raises(Exception, match="occlusion"):
        wrong.load_state_dict(state)


def test_abp_mask_larger_than_the_image_is_a_usage_error():
    from coopcore import UsageError

    with pytest.raises(UsageError, match="does not fit"):
        _abp(occlusion="B30")


def test_golden_repro_triangle_table3_smoke(tmp_path, num_regression):
    from coopcore.checkpoint import load_checkpoint

    assert run_triangle_smoke("table3", tmp_path) == 0
    out = tmp_path / "triangle-table3-smoke"
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert results["failed"] == 0
    assert set(results["runs"]) == {f"{m}-{k}" for m in ("ours", "abp", "vae") for k in MASKS}
    assert results["quoted"] == [] and len(results["published"]) == 15
    assert "| VAE | 0.0446 | 0.0498 | 0.1169 | 0.0666 | 0.0800 |" in report
    values = {}
    for c in results["cells"]:
        assert c["status"] == "ok", c
        assert c["n_samples"] == [100]
        values[f"{c['row']}|{c['column']}"] = c["ours"]
        values[f"{c['row']}|{c['column']}.stderr"] = c["ours_error"]
    assert len(values) == 30
    # both rows learned with the same masks per occlusion, and the masks have the paper's sizes
    missing_share = {"P.5": 0.5, "P.7": 0.7, "B20": 400 / 4096, "B30": 900 / 4096}
    for k in MASKS:
        masks = []
        for m in ("ours", "abp", "vae"):
            ckpt = sorted((out / "runs" / f"{m}-{k}" / "checkpoints").glob("*.ckpt"))[-1]
            masks.append(load_checkpoint(ckpt)["objective"]["occlusion"]["masks"])
        assert torch.equal(masks[0], masks[1]) and torch.equal(masks[0], masks[2]), k
        assert tuple(masks[0].shape) == (100, 1, 64, 64)
        share = (~masks[0]).float().flatten(1).mean(1)
        if k in missing_share:
            assert torch.allclose(share, torch.full_like(share, missing_share[k]), atol=1 / 4096), k
        else:  # MB10: ten 10x10 blocks, overlaps allowed
            assert bool((share <= 1000 / 4096).all()) and bool((share >= 100 / 4096).all())
    num_regression.check(values, **TABLE_TOL)


def _vae(occlusion: Optional[str] = "B4", n: int = 6, seed: int = 0):
    from coop_triangle.networks import (
        TriangleEncoder, TriangleEncoderOptions, TriangleGenerator, TriangleGeneratorOptions,
    )
    from coop_triangle.vae import Vae, VaeOptions

    torch.manual_seed(seed)
    gen = TriangleGenerator(TriangleGeneratorOptions(latent_dim=4, out_channels=1, channels=(8, 4), sizes=(2, 4, 8),
                                                     kernels=(2, 4, 4), strides=(1, 2, 2)))
    enc = TriangleEncoder(TriangleEncoderOptions(in_channels=1, input_size=8, channels=(4, 8), sizes=(4, 2),
                                                 kernels=(4, 4), strides=(2, 2), head_kernel=2, latent_dim=4))
    parts = Parts(models={"generator": gen, "encoder": enc}, samplers={},
                  optimizers={"generator": torch.optim.Adam(gen.parameters(), lr=1e-3),
                              "encoder": torch.optim.Adam(enc.parameters(), lr=1e-3)},
                  n_train=n, device=torch.device("cpu"), data_shape=(1, 8, 8))
    return Vae(VaeOptions(occlusion=occlusion, occlusion_seed=3), parts)


def test_vae_without_occlusion_has_no_occlusion_state():
    """`vae` on complete images (occlusion "none") keeps no per-example state, refuses an
    occluded checkpoint's state and has no recovery error to measure."""
    from coopcore import UsageError

    obj = _vae(occlusion=None)
    assert obj.occlusion is None and obj.state_dict() == {}
    obj.load_state_dict({})
    with pytest.raises(UsageError, match="occlusion"):
        obj.load_state_dict(_vae().state_dict())
    with pytest.raises(UsageError, match="complete images"):
        obj.recovery_error_on([])


def test_occluded_vae_learns_from_observed_pixels_and_refills_the_holes():
    """The ELBO's reconstruction runs over the observed pixels and the encoder sees the completed
    images, so the ground truth of the holes never matters; after a step the holes hold
    g(mu(x_c)) of the updated networks; the first step's loss is the masked ELBO by hand."""
    from coop_triangle.losses import gaussian_kl_standard

    x = torch.rand(6, 1, 8, 8) * 2 - 1
    runs = []
    for fill in (0.0, 1.0):
        obj = _vae()
        data = torch.where(obj.occlusion.masks, x, torch.full_like(x, fill))
        gen = torch.Generator().manual_seed(1)
        if fill == 0.0:  # the first loss by hand, from the same networks and noise
            with torch.no_grad():
                xc = obj.occlusion.compose(data, torch.arange(6))
                mu, logvar = obj.encoder(xc)
                eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
                rec = obj.generator(mu + torch.exp(0.5 * logvar) * eps)
                m = obj.occlusion.masks.float()
                by_hand = (((xc - rec) * m) ** 2).flatten(1).sum(1).mean() / (2 * obj.sigma**2) \
                    + gaussian_kl_standard(mu, logvar).sum(1).mean()
        first = obj.step(Batch(x=data, index=torch.arange(6)), gen)
        if fill == 0.0:
            assert torch.allclose(first.scalars["loss"], by_hand, rtol=1e-5)
        for _ in range(2):
            res = obj.step(Batch(x=data, index=torch.arange(6)), gen)
        runs.append((obj, res, data))
    (a, res_a, _), (b, res_b, data_b) = runs
    assert torch.equal(res_a.scalars["loss"], res_b.scalars["loss"])
    assert torch.equal(a.occlusion.imputed, b.occlusion.imputed)
    masks = b.occlusion.masks.expand_as(data_b)
    recovered = b.recovered_images(data_b, torch.arange(6))
    assert torch.equal(recovered[masks], data_b[masks])
    assert not torch.equal(recovered[~masks], torch.zeros_like(recovered[~masks]))  # refilled, not zero
