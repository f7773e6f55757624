"""Multi-grid minimal CD (Gao et al.): grids, the per-grid Langevin chain, the objective, the
baselines (CD1, persistent CD, single-grid CD), masked training, the registered descriptors and
the recipes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from coop_multigrid.baselines import (
    CD1, CD1Options, PersistentCD, PersistentCDOptions, SingleGridCD, SingleGridCDOptions,
)
from coop_multigrid.grids import check_sizes, downscale, draw_start, grid_sizes, start_images, upscale
from coop_multigrid.networks import MultigridDescriptor, MultigridDescriptorOptions
from coop_multigrid.objective import Multigrid, MultigridOptions
from coop_multigrid.sampler import MultigridLangevin, MultigridLangevinOptions, multigrid_chain
from coopcore import Batch, ConfigError, Parts
from coopcore.masks import mask_from_name
from coopcore.plugin_manager import load_registries

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("d", [2, 3, 4])
def test_down_up_exact(d):
    g = torch.Generator().manual_seed(0)
    # constants whose block sums are NOT exact in float (0.1, 1/3, random per image/channel)
    for value in (0.375, 0.1, 1.0 / 3.0, 254.7):
        const = torch.full((2, 3, 4 * d, 4 * d), value)
        assert torch.equal(upscale(downscale(const, d), d), const)
    per_image = torch.rand(2, 3, 1, 1, generator=g).expand(2, 3, 4 * d, 4 * d).contiguous()
    assert torch.equal(upscale(downscale(per_image, d), d), per_image)
    # any image that is constant on d x d blocks is reproduced exactly
    blocks = upscale(torch.rand(2, 3, 4, 4, generator=g) * 255, d)
    assert torch.equal(upscale(downscale(blocks, d), d), blocks)
    small = torch.rand(2, 3, 5, 3, generator=g)
    assert torch.equal(downscale(upscale(small, d), d), small)  # pseudo-inverse
    assert upscale(small, d).shape == (2, 3, 5 * d, 3 * d)
    # the multi-step chain of grids: 1x1 -> d^2 x d^2 and back
    one = torch.rand(4, 3, 1, 1, generator=g)
    assert torch.equal(downscale(downscale(upscale(upscale(one, d), d), d), d), one)


@pytest.mark.parametrize("d", [2, 3, 4])
def test_block_means_match_numpy(d):
    x = torch.rand(3, 2, 4 * d, 2 * d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a = x.numpy()
    b, c, h, w = a.shape
    ref = a.reshape(b, c, h // d, d, w // d, d).mean(axis=(3, 5))
    np.testing.assert_allclose(downscale(x, d).numpy(), ref, rtol=0, atol=1e-12)


def test_grid_sizes_and_start():
    assert grid_sizes(64, 4, 3) == [1, 4, 16, 64]
    assert grid_sizes(16, 2, 2) == [4, 8, 16]
    with pytest.raises(ValueError):
        grid_sizes(48, 4, 3)
    x = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    own = start_images(x, 1)
    assert torch.allclose(own, x.mean(dim=(2, 3), keepdim=True))
    drawn = draw_start(own, 200, torch.Generator().manual_seed(3))
    # draws come from the empirical distribution of the 1x1 images
    matches = (drawn[:, None] == own[None]).flatten(2).all(-1).any(-1)
    assert drawn.shape == (200, 3, 1, 1) and matches.all()
    weights = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    assert torch.equal(draw_start(own, 10, torch.Generator().manual_seed(4), weights), own[[1] * 10])
    # one-dimensional histograms per channel: every channel value comes from that channel's pool,
    # and channels are drawn independently (mixed colours that no single image has do occur)
    mixed = draw_start(own, 400, torch.Generator().manual_seed(5), per_channel=True)
    for c in range(3):
        assert torch.isin(mixed[:, c].flatten(), own[:, c].flatten()).all()
    whole = (mixed[:, None] == own[None]).flatten(2).all(-1).any(-1)
    assert not whole.all() and whole.any()
    assert check_sizes([1, 4, 16, 32], 32) == [1, 4, 16, 32]
    for bad in ([1, 4, 16], [1, 3, 16, 32], [4, 4, 32], [32]):
        with pytest.raises(ValueError):
            check_sizes(bad, 32)


def test_multigrid_chain_reaches_gaussian_on_finest_grid():
    """log p_k(y) = -||y - m_k||^2 / (2 v) at grids 1 -> 2 -> 4 -> 8 (d = 2).  The unadjusted
    Langevin chain with step d has stationary variance v / (1 - d^2 / (4 v)), mean m_k (with
    d = 0.2 that is 4% above v, which the 2% check on the average variance tells apart)."""
    v, step = 0.25, 0.2
    g = torch.Generator().manual_seed(0)
    means = [torch.randn(1, 1, s, s, generator=g) for s in (2, 4, 8)]
    log_ps = [lambda y, m=m: -(y - m).flatten(1).pow(2).sum(1) / (2 * v) for m in means]
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=100, step_size=step, noise=True))
    start = torch.zeros(4000, 1, 1, 1)
    outs = multigrid_chain(sampler, log_ps, start, 2, g)
    assert [o.samples.shape[-1] for o in outs] == [2, 4, 8]
    y = outs[-1].samples.double()
    expected_var = v / (1 - step**2 / (4 * v))
    assert torch.allclose(y.mean(0), means[-1].double()[0], atol=0.04)
    var = y.var(0)
    assert torch.allclose(var, torch.full_like(var, expected_var), rtol=0.1)
    assert abs(float(var.mean()) / expected_var - 1) < 0.02
    assert outs[-1].energies.shape == (100,) and outs[-1].grad_norms.shape == (100,)


def test_noise_free_chain_descends_to_modes():
    g = torch.Generator().manual_seed(1)
    means = [torch.full((1, 1, s, s), 2.0) for s in (4, 16)]
    log_ps = [lambda y, m=m: -(y - m).flatten(1).pow(2).sum(1) / 2 for m in means]
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=200, step_size=0.3, noise=False))
    outs = multigrid_chain(sampler, log_ps, torch.zeros(3, 1, 1, 1), 4, g)
    assert torch.allclose(outs[-1].samples, torch.full((3, 1, 16, 16), 2.0), atol=1e-3)


def test_mask_keeps_observed_pixels_exactly_even_with_clipping():
    g = torch.Generator().manual_seed(2)
    init = 3.0 * torch.randn(8, 3, 8, 8, generator=g)  # observed values well outside the clip range
    mask = (torch.rand(8, 1, 8, 8, generator=g) > 0.5).float()  # 1 = may change
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=20, step_size=0.5, noise=True, clip=(0.0, 1.0)))
    out = sampler.run(lambda y: -(y - 5.0).flatten(1).pow(2).sum(1), init, g, mask=mask)
    keep = (mask == 0).expand_as(init)
    assert torch.equal(out.samples[keep], init[keep])
    free = out.samples[~keep]
    assert free.min() >= 0.0 and free.max() <= 1.0
    # through the chain too: observed entries start from and stay at the observed image
    observed = [torch.rand(8, 3, s, s, generator=g) * 10 for s in (4, 8)]
    masks = [(torch.rand(8, 1, s, s, generator=g) > 0.5).float() for s in (4, 8)]
    outs = multigrid_chain(sampler, [lambda y: -y.flatten(1).pow(2).sum(1)] * 2, torch.zeros(8, 3, 2, 2), 2, g,
                           masks=masks, observed=observed)
    for o, m, obs in zip(outs, masks, observed):
        k = (m == 0).expand_as(obs)
        assert torch.equal(o.samples[k], obs[k])


def _tiny_parts(n_grids=2, n_train=12):
    models, opts = {}, {}
    for k, size in zip(range(1, n_grids + 1), (4, 16)):
        model = MultigridDescriptor(MultigridDescriptorOptions(
            grid=k, input_shape=(3, size, size), channels=(4, 6), kernels=(3, 3), strides=(2, 1)))
        models[f"grid{k}"] = model
        opts[f"grid{k}"] = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.5, 0.999))
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=3, step_size=0.3, clip=(0.0, 255.0)))
    return Parts(models=models, samplers={"revision": sampler}, optimizers=opts, n_train=n_train,
                 device=torch.device("cpu"), data_shape=(3, 16, 16))


@pytest.mark.parametrize("start", ["own", "histogram"])
def test_objective_step_updates_every_grid(start):
    g = torch.Generator().manual_seed(0)
    parts = _tiny_parts()
    obj = Multigrid(MultigridOptions(n_grids=2, factor=4, start=start), parts)
    before = {r: [p.detach().clone() for p in m.parameters()] for r, m in parts.models.items()}
    x = 255.0 * torch.rand(6, 3, 16, 16, generator=g)
    res = obj.step(Batch(x, torch.arange(6)), g)
    for role, model in parts.models.items():
        changed = [not torch.equal(a, b) for a, b in zip(before[role], model.parameters())]
        assert all(changed), role
    for name, value in res.scalars.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert {"loss_grid1", "loss_grid2", "loss_descriptor"} <= set(res.scalars)
    named = obj.samples(5, g)
    assert named["grid1"].shape == (5, 3, 4, 4) and named["revised"].shape == (5, 3, 16, 16)
    assert torch.equal(named["grid2"], named["revised"])
    res = obj.step(Batch(x, torch.arange(6, 12)), g)
    assert all(torch.isfinite(v) for v in res.scalars.values())
    state = obj.state_dict()
    assert state["seen"].sum() == 12


def test_batch_statistics_descriptor_is_blind_to_scale_about_its_origin():
    """Batch-statistics BN after a bias-free first convolution: f(a Y) = f(Y) for the whole
    batch, so the Langevin gradient is perpendicular to Y (and keeps the batch's norm about the
    origin, the reason for `origin`)."""
    torch.manual_seed(0)
    model = MultigridDescriptor(MultigridDescriptorOptions(
        grid=2, input_shape=(1, 16, 16), channels=(4, 6), kernels=(5, 3), strides=(2, 1)))
    y = torch.rand(8, 1, 16, 16, dtype=torch.float64) * 2 - 1
    model = model.double()
    # exact up to BN's eps (1e-5 added to the variance)
    assert torch.allclose(model.score(0.5 * y), model.score(y), rtol=1e-3, atol=1e-3)
    y.requires_grad_(True)
    (grad,) = torch.autograd.grad(model.score(y).sum(), y)
    assert abs(float((grad * y.detach()).sum())) < 1e-3 * float(grad.norm() * y.detach().norm())


def test_origin_shifts_what_the_descriptors_see():
    """`origin = c` on data x trains and samples as origin 0 on x - c (no clipping), the samples
    shifted back by c; the default (0) leaves the objective as it was."""
    assert MultigridOptions().origin == 0.0
    c = -2.0
    runs = {}
    for origin in (c, 0.0):
        torch.manual_seed(0)
        parts = _tiny_parts()
        parts.samplers["revision"] = MultigridLangevin(MultigridLangevinOptions(n_steps=3, step_size=0.3))
        obj = Multigrid(MultigridOptions(n_grids=2, factor=4, origin=origin), parts)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
        res = obj.step(Batch(x if origin else x - c, torch.arange(6)), g)
        runs[origin] = (res, parts, obj.samples(5, g)["revised"])
    (res_a, parts_a, samples_a), (res_b, parts_b, samples_b) = runs[c], runs[0.0]
    assert torch.allclose(res_a.scalars["loss_descriptor"], res_b.scalars["loss_descriptor"], rtol=1e-4)
    for role in ("grid1", "grid2"):
        for p, q in zip(parts_a.models[role].parameters(), parts_b.models[role].parameters()):
            assert torch.allclose(p, q, rtol=1e-4, atol=1e-5), role
    assert torch.allclose(samples_a, samples_b + c, atol=1e-4)
    # the descriptors score y - origin
    y = torch.rand(2, 3, 16, 16)
    obj = Multigrid(MultigridOptions(n_grids=2, factor=4, origin=c), parts_a)
    assert torch.equal(obj._log_ps()[1](y), -parts_a.models["grid2"].energy(y - c))


def test_objective_names_missing_role():
    parts = _tiny_parts()
    with pytest.raises(ConfigError, match="grid3"):
        Multigrid(MultigridOptions(n_grids=3, factor=4), parts)


def test_two_grid_recipe_resolves_builds_and_trains(registries):
    """Required roles follow n_grids: a 2-grid recipe (grid1, grid2) passes the pre-build checks."""
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    grid = lambda k: {"name": "multigrid.descriptor", "options": {"grid": k, "input_shape": [1, 4**k, 4**k], "channels": [8, 16], "kernels": [3, 3],  # noqa: E731
                                                                  "strides": [2, 1]}}
    data = {
        "run": {"iterations": 1, "tensorboard": False},
        "data": {"name": "digits", "batch_size": 8, "options": {"size": 16, "limit": 16}},
        "models": {"grid1": grid(1), "grid2": grid(2)},
        "samplers": {"revision": {"name": "multigrid_langevin", "options": {"n_steps": 2}}},
        "optimizers": {"grid1": {"lr": 1e-3}, "grid2": {"lr": 1e-3}},
        "objective": {"name": "multigrid", "options": {"n_grids": 2, "factor": 4}},
    }
    exp = build_experiment(resolve_data(data, registries=registries), torch.device("cpu"), registries=registries)
    res = exp.objective.step(Batch(exp.dataset.get_batch(torch.arange(8)), torch.arange(8)), torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in res.scalars.values())


@pytest.mark.parametrize("name", ["multigrid.descriptor.grid1", "multigrid.descriptor.grid2",
                                  "multigrid.descriptor.grid3", "multigrid.descriptor"])
@pytest.mark.parametrize("variant", ["paper", "code"])
def test_registered_descriptors_build_and_score(name, variant):
    reg = load_registries()
    entry = reg.energy.get(name)
    assert entry.owner == "multigrid"
    model = reg.energy.create(name) if variant == "paper" else reg.energy.create(name, entry.options(variant=variant))
    assert model.reference_std is None
    x = 255.0 * torch.rand(2, *model.input_shape)
    f = model.score(x)
    assert f.shape == (2,) and torch.isfinite(f).all()
    assert torch.equal(model.energy(x), -f)


def test_paper_and_code_architectures():
    def convs(opts):
        m = MultigridDescriptor(opts)
        return [(c.conv.out_channels, c.conv.kernel_size[0], c.conv.stride[0]) for c in m.features
                if hasattr(c, "conv")], m
    paper3, m = convs(MultigridDescriptorOptions(grid=3))
    assert paper3 == [(96, 5, 2), (128, 3, 2), (256, 3, 1)] and m.input_shape == (3, 64, 64)
    assert any(isinstance(l, torch.nn.ReLU) for l in m.features) and m.fc.out_features == 1
    code3, m = convs(MultigridDescriptorOptions(grid=3, variant="code"))
    assert code3 == [(64, 5, 2), (128, 5, 2), (256, 5, 2), (512, 5, 2)]
    assert any(isinstance(l, torch.nn.LeakyReLU) for l in m.features)
    paper2, m = convs(MultigridDescriptorOptions(grid=2))
    assert paper2 == [(96, 5, 2), (128, 3, 1), (256, 3, 1), (512, 3, 1)] and m.input_shape == (3, 16, 16)
    paper1, m = convs(MultigridDescriptorOptions(grid=1))
    assert paper1 == [(96, 5, 2), (128, 3, 1), (256, 3, 1)] and m.input_shape == (3, 4, 4)


# ---------------------------------------------------------------------------------------
# the chain's wiring against the closed-form transient of Langevin on Gaussians
def test_short_chains_follow_the_closed_form_transient_at_every_grid():
    """log p_k(y) = -||y - m_k||^2 / (2 v) at grids 2 -> 4 -> 8 from a constant 1x1 start, l = 4
    steps per grid with noise.  Per pixel, one step maps (mean, var) to
    (m + a (mean - m), a^2 var + d^2) with a = 1 - d^2 / (2 v); up-scaling hands each pixel its
    parent's (mean, var).  So the moments at every grid are known in closed form, and they
    depend on every coarser grid (l is far too short to forget the start)."""
    v, step, l, n = 0.25, 0.2, 4, 6000
    a = 1 - step**2 / (2 * v)
    g = torch.Generator().manual_seed(11)
    means = [torch.randn(1, 1, s, s, generator=g) for s in (2, 4, 8)]
    log_ps = [lambda y, m=m: -(y - m).flatten(1).pow(2).sum(1) / (2 * v) for m in means]
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=l, step_size=step, noise=True))
    outs = multigrid_chain(sampler, log_ps, torch.full((n, 1, 1, 1), 0.7), 2, g)
    mu, var = torch.full((1, 1, 1, 1), 0.7, dtype=torch.float64), torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    for m, out in zip(means, outs):
        mu, var = upscale(mu, 2), upscale(var, 2)
        for _ in range(l):
            mu, var = m.double() + a * (mu - m.double()), a**2 * var + step**2
        y = out.samples.double()
        assert torch.allclose(y.mean(0, keepdim=True), mu, atol=0.03)
        ratio = y.var(0, keepdim=True) / var
        se = (2 / n) ** 0.5  # standard error of one sample variance ratio
        assert (ratio - 1).abs().max() < 6 * se and abs(float(ratio.mean()) - 1) < 5 * se / ratio.numel() ** 0.5
    # without the coarse grids' influence the finest mean would be m + a^l (0.7 - m): it is not
    naive = means[-1].double() + a**l * (0.7 - means[-1].double())
    assert (outs[-1].samples.double().mean(0, keepdim=True) - naive).abs().max() > 0.2


# ---------------------------------------------------------------------------------------
# objectives built directly from parts, with a sampler that records what it was given
class _Recording:
    """Wraps a sampler and keeps (init, mask, samples) of every run."""

    def __init__(self, inner):
        self.inner = inner
        self.n_steps = inner.n_steps
        self.calls = []

    def run(self, log_density, init, generator, mask=None):
        out = self.inner.run(log_density, init, generator, mask=mask)
        self.calls.append((init.clone(), None if mask is None else mask.clone(), out.samples.clone()))
        return out


def _descriptor(shape, grid=3):
    return MultigridDescriptor(MultigridDescriptorOptions(
        grid=grid, input_shape=tuple(shape), channels=(4, 6), kernels=(3, 3), strides=(2, 1)))


def _single_parts(n_steps=2, n_train=8, shape=(3, 16, 16), step=2.0, examples=None):
    model = _descriptor(shape)
    sampler = _Recording(MultigridLangevin(MultigridLangevinOptions(n_steps=n_steps, step_size=step,
                                                                    clip=(0.0, 255.0))))
    return Parts(models={"descriptor": model}, samplers={"revision": sampler},
                 optimizers={"descriptor": torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.5, 0.999))},
                 n_train=n_train, device=torch.device("cpu"), data_shape=tuple(shape), examples=examples)


def _grid_parts(n_steps=2, sizes=(4, 16), n_train=8, step=2.0):
    models = {f"grid{k}": _descriptor((3, s, s), k) for k, s in enumerate(sizes, 1)}
    opts = {r: torch.optim.Adam(m.parameters(), lr=0.01, betas=(0.5, 0.999)) for r, m in models.items()}
    sampler = _Recording(MultigridLangevin(MultigridLangevinOptions(n_steps=n_steps, step_size=step,
                                                                    clip=(0.0, 255.0))))
    return Parts(models=models, samplers={"revision": sampler}, optimizers=opts, n_train=n_train,
                 device=torch.device("cpu"), data_shape=(3, sizes[-1], sizes[-1]))


def _images(n, size=16, seed=0):
    return 255.0 * torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_cd1_chains_start_at_the_data():
    data = _images(8, seed=3)
    parts = _single_parts(n_steps=1, examples=lambda idx: data[idx])
    obj = CD1(CD1Options(), parts)
    x = _images(4)
    res = obj.step(Batch(x, torch.arange(4)), torch.Generator().manual_seed(0))
    ((init, mask, out),) = parts.samplers["revision"].calls
    assert torch.equal(init, x) and mask is None
    assert not torch.equal(out, x)  # one step moved them
    assert torch.isfinite(res.scalars["loss_descriptor"])
    x2 = _images(4, seed=1)  # CD restarts at the new batch every iteration
    obj.step(Batch(x2, torch.arange(4, 8)), torch.Generator().manual_seed(1))
    assert torch.equal(parts.samplers["revision"].calls[1][0], x2)


def test_cd1_samples_are_fresh_chains_from_distinct_training_images():
    """CD's samples are the method's chains: l steps from observed images, each image used once
    per pass over the training set (it used to tile the last batch's chains into n)."""
    data = _images(8, seed=3)
    parts = _single_parts(n_steps=1, examples=lambda idx: data[idx])
    rec = parts.samplers["revision"]
    obj = CD1(CD1Options(), parts)
    obj.step(Batch(data[:4], torch.arange(4)), torch.Generator().manual_seed(0))
    out = obj.samples(6, torch.Generator().manual_seed(1))["revised"]
    init = rec.calls[-1][0]
    assert out.shape == (6, 3, 16, 16) and torch.equal(out, rec.calls[-1][2])
    starts = [next(i for i in range(8) if torch.equal(row, data[i])) for row in init]
    assert len(set(starts)) == 6  # six distinct training images
    assert len({tuple(r.flatten().tolist()) for r in out}) == 6
    more = obj.samples(12, torch.Generator().manual_seed(1))["revised"]  # > n_train: two passes
    assert more.shape[0] == 12 and len({tuple(r.flatten().tolist()) for r in more}) == 12
    first_pass = [next(i for i in range(8) if torch.equal(row, data[i])) for row in rec.calls[-1][0][:8]]
    assert sorted(first_pass) == list(range(8))
    bare = CD1(CD1Options(), _single_parts(n_steps=1))
    with pytest.raises(RuntimeError, match="training images"):
        bare.samples(2, torch.Generator())


def test_pcd_samples_more_than_its_chains_without_repeating_them():
    """An evaluation larger than the chain store continues the chains instead of drawing copies."""
    for options, n_train in ((PersistentCDOptions(), 8), (PersistentCDOptions(chains="fixed", n_chains=4), 8)):
        parts = _single_parts(n_steps=2, n_train=n_train)
        obj = PersistentCD(options, parts)
        x = _images(8)
        g = torch.Generator().manual_seed(0)
        obj.step(Batch(x[:4], torch.arange(4)), g)
        stored = obj.chains.clone() if options.chains == "fixed" else obj.buffer[:4].clone()
        out = obj.samples(10, torch.Generator().manual_seed(2))["revised"]
        assert out.shape == (10, 3, 16, 16)
        assert len({tuple(r.flatten().tolist()) for r in out}) == 10
        assert all(any(torch.equal(o, c) for c in stored) for o in out[:4])  # the stored chains first
        after = obj.chains if options.chains == "fixed" else obj.buffer[:4]
        assert torch.equal(after, stored)  # evaluation leaves the training chains alone


def test_pcd_chains_persist_per_image_and_round_trip_through_state_dict():
    import copy
    import io

    parts = _single_parts(n_steps=2, n_train=8)
    rec = parts.samplers["revision"]
    obj = PersistentCD(PersistentCDOptions(), parts)
    x = _images(8)
    g = torch.Generator().manual_seed(0)
    obj.step(Batch(x[:4], torch.arange(4)), g)
    obj.step(Batch(x[4:], torch.arange(4, 8)), g)
    assert torch.equal(rec.calls[0][0], x[:4]) and torch.equal(rec.calls[1][0], x[4:])  # first visit: data
    order = torch.tensor([0, 5, 2, 7])
    twin = copy.deepcopy(parts)  # models, optimisers and sampler as they are now
    buf = io.BytesIO()
    torch.save(obj.state_dict(), buf)
    buf.seek(0)
    fresh = PersistentCD(PersistentCDOptions(), twin)
    fresh.load_state_dict(torch.load(buf))
    g_twin = torch.Generator()
    g_twin.set_state(g.get_state())
    res = obj.step(Batch(x[order], order), g)
    # each image's chain continues from the sample synthesised for that image last time
    expected = torch.stack([rec.calls[0][2][0], rec.calls[1][2][1], rec.calls[0][2][2], rec.calls[1][2][3]])
    assert torch.equal(rec.calls[2][0], expected)
    res_twin = fresh.step(Batch(x[order], order), g_twin)
    assert torch.equal(twin.samplers["revision"].calls[-1][0], expected)
    assert torch.equal(twin.samplers["revision"].calls[-1][2], rec.calls[2][2])
    assert all(torch.equal(res.scalars[k], res_twin.scalars[k]) for k in res.scalars)
    drawn = obj.samples(5, torch.Generator().manual_seed(2))["revised"]
    assert all(any(torch.equal(d, b) for b in obj.buffer) for d in drawn)


def test_pcd_fixed_chains_carry_over_between_batches():
    parts = _single_parts(n_steps=2, n_train=8)
    rec = parts.samplers["revision"]
    obj = PersistentCD(PersistentCDOptions(chains="fixed", n_chains=6), parts)
    x = _images(8)
    g = torch.Generator().manual_seed(0)
    obj.step(Batch(x[:4], torch.arange(4)), g)
    assert torch.equal(rec.calls[0][0], torch.cat([x[:4], x[:2]]))  # started from the first batch
    obj.step(Batch(x[4:], torch.arange(4, 8)), g)
    assert torch.equal(rec.calls[1][0], rec.calls[0][2])  # not restarted at the second batch
    with pytest.raises(ValueError, match="train_mask"):
        PersistentCDOptions(chains="fixed", train_mask="M8")


@pytest.mark.parametrize("start", ["own", "histogram"])
def test_single_grid_starts_at_upscaled_1x1_images(start):
    parts = _single_parts(n_steps=2)
    rec = parts.samplers["revision"]
    obj = SingleGridCD(SingleGridCDOptions(start=start), parts)
    x = _images(4)
    obj.step(Batch(x, torch.arange(4)), torch.Generator().manual_seed(0))
    init = rec.calls[0][0]
    colours = x.double().mean(dim=(2, 3))  # [4, 3], computed independently of the grid code
    assert (init == init[:, :, :1, :1]).all()  # constant images at the finest size
    got = init[:, :, 0, 0].double()
    if start == "own":
        assert torch.allclose(got, colours, rtol=0, atol=1e-3)
    else:  # each start is one of the batch's 1x1 images
        assert all(torch.isclose(c, colours, atol=1e-3).all(1).any() for c in got)
    # from scratch: with 0 steps a sample is an up-scaled 1x1 training colour
    zero = SingleGridCD(SingleGridCDOptions(start=start), _single_parts(n_steps=0))
    zero.step(Batch(x, torch.arange(4)), torch.Generator().manual_seed(0))
    s = zero.samples(5, torch.Generator().manual_seed(3))["revised"]
    assert s.shape == (5, 3, 16, 16) and (s == s[:, :, :1, :1]).all()
    assert all(torch.isclose(c, colours, atol=1e-3).all(1).any() for c in s[:, :, 0, 0].double())


def test_mcmc_budget_is_matched():
    """Count the descriptors' forward passes: S grids x l steps of multi-grid CD against the
    S * l steps of PCD and single-grid CD (the paper's 3 x 30 vs 90), CD1's single step."""
    def langevin_calls(obj, models, batch):
        calls = []
        hooks = [m.fc.register_forward_hook(lambda *_: calls.append(1)) for m in models]
        obj.step(batch, torch.Generator().manual_seed(0))
        for h in hooks:
            h.remove()
        return len(calls) - 2 * len(models)  # the update scores observed and synthesised once per model

    batch = Batch(_images(4, size=8), torch.arange(4))
    grids = _grid_parts(n_steps=3, sizes=(2, 4, 8))
    mg = Multigrid(MultigridOptions(n_grids=3, factor=2), grids)
    budget = langevin_calls(mg, list(grids.models.values()), batch)
    assert budget == 3 * 3
    for cls, opts, steps in ((PersistentCD, PersistentCDOptions(), 9), (SingleGridCD, SingleGridCDOptions(), 9),
                             (CD1, CD1Options(), 1)):
        parts = _single_parts(n_steps=steps, shape=(3, 8, 8))
        assert langevin_calls(cls(opts, parts), [parts.models["descriptor"]], batch) == steps
    assert budget == 9


def test_recipes_match_the_budget():
    from coopcore.config import read_recipe_data

    def steps(name):
        return read_recipe_data(RECIPES / name)["samplers"]["revision"]["options"]["n_steps"]

    mg = read_recipe_data(RECIPES / "multigrid-celeba.toml")
    budget = steps("multigrid-celeba.toml") * mg["objective"]["options"]["n_grids"]
    assert budget == 90
    assert steps("multigrid-celeba-pcd.toml") == budget and steps("multigrid-celeba-single-grid.toml") == budget
    assert steps("multigrid-celeba-cd1.toml") == 1
    for name in ("multigrid-celeba-pcd.toml", "multigrid-celeba-cd1.toml", "multigrid-celeba-single-grid.toml"):
        assert read_recipe_data(RECIPES / name)["models"]["descriptor"]["name"] == "multigrid.descriptor.grid3"


# ---------------------------------------------------------------------------------------
# masked training (Section 7.4): the objectives draw their own masks
def _build(kind, train_mask, n_steps=2):
    if kind == "multigrid":
        parts = _grid_parts(n_steps=n_steps)
        return Multigrid(MultigridOptions(n_grids=2, factor=4, train_mask=train_mask), parts), parts
    parts = _single_parts(n_steps=n_steps)
    cls, opts = {"cd1": (CD1, CD1Options), "pcd": (PersistentCD, PersistentCDOptions),
                 "single_grid": (SingleGridCD, SingleGridCDOptions)}[kind]
    return cls(opts(train_mask=train_mask), parts), parts


@pytest.mark.parametrize("kind", ["multigrid", "cd1", "pcd", "single_grid"])
def test_training_mask_keeps_observed_pixels(kind):
    obj, parts = _build(kind, "M8")
    rec = parts.samplers["revision"]
    x = _images(6)
    g = torch.Generator().manual_seed(5)
    twin = torch.Generator()
    twin.set_state(g.get_state())
    expected = mask_from_name("M8", 6, (3, 16, 16), twin)  # the objective draws first, one mask per image
    res = obj.step(Batch(x, torch.arange(6)), g)
    init, mask, out = rec.calls[-1]
    seen = expected.bool().expand_as(x)
    assert torch.equal(out[seen], x[seen]) and torch.equal(init[seen], x[seen])
    assert torch.equal(mask, 1.0 - expected)  # the sampler may move exactly the 8x8 hole
    assert not torch.equal(out[~seen], init[~seen])
    assert torch.allclose(res.scalars["missing_fraction"], torch.tensor(64 / 256))
    assert (expected.flatten(1).sum(1) == 256 - 64).all()
    if kind == "multigrid":  # 4x4 grid: fully observed 4x4 blocks stay at their block means
        c_init, c_mask, c_out = rec.calls[0]
        full = expected.view(6, 1, 4, 4, 4, 4).amin(dim=(3, 5)) == 1
        assert torch.equal(c_mask == 0, full) and not full.all()
        means = x.view(6, 3, 4, 4, 4, 4).mean(dim=(3, 5))
        assert torch.allclose(c_out[full.expand_as(c_out)], means[full.expand_as(means)], rtol=1e-6)
        assert not torch.allclose(c_out[~full.expand_as(c_out)], c_init[~full.expand_as(c_init)])
    # test-time completion through the same masked sampling: observed pixels come back exactly
    observed = mask_from_name("pepper", 6, (3, 16, 16), torch.Generator().manual_seed(9))
    done = obj.inpaint(x, observed, torch.Generator().manual_seed(1))
    keep = observed.bool().expand_as(x)
    assert torch.equal(done[keep], x[keep]) and not torch.equal(done[~keep], x[~keep])
    assert torch.isfinite(done).all() and done.min() >= 0 and done.max() <= 255


def test_bad_options_name_their_field(registries):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    def recipe(objective, options):
        grid = lambda k: {"name": "multigrid.descriptor", "options": {  # noqa: E731
            "grid": k, "input_shape": [1, 4**k, 4**k], "channels": [4], "kernels": [3], "strides": [2]}}
        models = {"grid1": grid(1), "grid2": grid(2)} if objective == "multigrid" else {"descriptor": grid(2)}
        return {
            "run": {"iterations": 1, "tensorboard": False},
            "data": {"name": "digits", "batch_size": 4, "options": {"size": 16, "limit": 8}},
            "models": models,
            "samplers": {"revision": {"name": "multigrid_langevin", "options": {"n_steps": 1}}},
            "optimizers": {r: {"lr": 1e-3} for r in models},
            "objective": {"name": objective, "options": options},
        }

    for objective, options, field in (
        ("multigrid", {"n_grids": 2, "train_mask": "Q7"}, "objective.options.train_mask"),
        ("multigrid", {"n_grids": 2, "sizes": [1, 4, 8, 16]}, "objective.options.sizes"),
        ("multigrid", {"n_grids": 2, "coarse_keep_fraction": 0.0}, "objective.options.coarse_keep_fraction"),
        ("multigrid.pcd", {"chains": "fixed", "train_mask": "M4"}, "objective.options.train_mask"),
        ("multigrid.cd1", {"train_mask": "doodle2"}, "objective.options.train_mask"),
    ):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            resolve_data(recipe(objective, options), registries=registries)
    too_big = resolve_data(recipe("multigrid.single_grid", {"train_mask": "M32"}), registries=registries)
    with pytest.raises(ConfigError, match=r"objective\.options\.train_mask.*M32"):
        build_experiment(too_big, torch.device("cpu"), registries=registries)
    sizes = resolve_data(recipe("multigrid", {"n_grids": 2, "sizes": [1, 4, 12]}), registries=registries)
    with pytest.raises(ConfigError, match=r"objective\.options\.sizes"):
        build_experiment(sizes, torch.device("cpu"), registries=registries)


# ---------------------------------------------------------------------------------------
# recipes
RECIPE_FILES = sorted(RECIPES.glob("multigrid-*.toml"))


def test_every_experiment_has_a_recipe():
    names = {p.stem for p in RECIPE_FILES}
    assert {"multigrid-celeba", "multigrid-celeba-inpainting", "multigrid-celeba-pcd", "multigrid-celeba-cd1",
            "multigrid-celeba-single-grid", "multigrid-svhn", "multigrid-digits"} <= names


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_recipe_resolves_and_builds(path, registries):
    """Every recipe resolves against the registries; its objective builds on data of the
    recipe's shape (a stand-in tensor, so no files are needed)."""
    from coopcore import TensorImageDataset
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve

    resolved = resolve(path, registries=registries)
    opts = resolved.data.options
    size = {"celeba": getattr(opts, "size", 64), "svhn": 32, "digits": getattr(opts, "size", 28)}[resolved.data.name]
    channels = 1 if resolved.data.name == "digits" else 3
    stand_in = TensorImageDataset(torch.zeros(4, channels, size, size), name="stand-in")
    exp = build_experiment(resolved, torch.device("cpu"), dataset=stand_in, registries=registries)
    assert exp.objective.required_samplers == ("revision",)


def test_cli_trains_the_digits_recipe(tmp_path):
    import json

    from conftest import run_cli

    out = tmp_path / "run"
    sets = [
        "data.batch_size=8", "data.options.limit=32",
        "models.grid1.options.channels=[4,8]", "models.grid2.options.channels=[4,8,8]",
        "samplers.revision.options.n_steps=2", "run.iterations=3", "run.log_every=1",
        "run.sample_every=3", "run.sample_count=4", "run.checkpoint_every=3", "run.tensorboard=false",
    ]
    assert run_cli(["train", "multigrid-digits", "--out", out, "--no-progress",
                    *[a for s in sets for a in ("--set", s)]]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert {"loss_grid1", "loss_grid2", "score_obs_grid2", "score_syn_grid2"} <= set(rows[-1])
    for kind in ("grid1", "grid2", "revised"):
        assert (out / "samples" / f"iter-00000003-{kind}.png").exists()
    assert (out / "checkpoints" / "iter-00000003.ckpt").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["objective"]["options"]["start"] == "own"
    assert cfg["samplers"]["revision"]["options"]["clip"] == [-1.0, 1.0]
