"""Multi-grid minimal CD (Gao et al.): grids, the per-grid Langevin chain, the objective and the
registered descriptors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from coop_multigrid.grids import downscale, draw_start, grid_sizes, start_images, upscale
from coop_multigrid.networks import MultigridDescriptor, MultigridDescriptorOptions
from coop_multigrid.objective import Multigrid, MultigridOptions
from coop_multigrid.sampler import MultigridLangevin, MultigridLangevinOptions, multigrid_chain
from coopcore import Batch, ConfigError, Parts
from coopcore.plugin_manager import load_registries


@pytest.mark.parametrize("d", [2, 4])
def test_down_up_exact(d):
    g = torch.Generator().manual_seed(0)
    const = torch.full((2, 3, 4 * d, 4 * d), 0.375)  # block sums exact in float
    assert torch.equal(upscale(downscale(const, d), d), const)
    small = torch.rand(2, 3, 5, 3, generator=g)
    assert torch.equal(downscale(upscale(small, d), d), small)  # pseudo-inverse
    assert upscale(small, d).shape == (2, 3, 5 * d, 3 * d)


@pytest.mark.parametrize("d", [2, 4])
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


def test_multigrid_chain_reaches_gaussian_on_finest_grid():
    """log p_k(y) = -||y - m_k||^2 / (2 v) at grids 1 -> 2 -> 4 -> 8 (d = 2).  The unadjusted
    Langevin chain with step d has stationary variance v / (1 - d^2 / (4 v)), mean m_k."""
    v, step = 0.25, 0.1
    g = torch.Generator().manual_seed(0)
    means = [torch.randn(1, 1, s, s, generator=g) for s in (2, 4, 8)]
    log_ps = [lambda y, m=m: -(y - m).flatten(1).pow(2).sum(1) / (2 * v) for m in means]
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=300, step_size=step, noise=True))
    start = torch.zeros(4000, 1, 1, 1)
    outs = multigrid_chain(sampler, log_ps, start, 2, g)
    assert [o.samples.shape[-1] for o in outs] == [2, 4, 8]
    y = outs[-1].samples.double()
    expected_var = v / (1 - step**2 / (4 * v))
    assert torch.allclose(y.mean(0), means[-1].double()[0], atol=0.04)
    var = y.var(0)
    assert torch.allclose(var, torch.full_like(var, expected_var), rtol=0.1)
    assert abs(float(var.mean()) / expected_var - 1) < 0.02
    assert outs[-1].energies.shape == (300,) and outs[-1].grad_norms.shape == (300,)


def test_noise_free_chain_descends_to_modes():
    g = torch.Generator().manual_seed(1)
    means = [torch.full((1, 1, s, s), 2.0) for s in (4, 16)]
    log_ps = [lambda y, m=m: -(y - m).flatten(1).pow(2).sum(1) / 2 for m in means]
    sampler = MultigridLangevin(MultigridLangevinOptions(n_steps=200, step_size=0.3))
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
    # masked step (inpainting): runs and stays finite
    mask = torch.ones(6, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 0
    res = obj.step(Batch(x, torch.arange(6, 12), mask), g)
    assert all(torch.isfinite(v) for v in res.scalars.values())
    state = obj.state_dict()
    assert state["seen"].sum() == 12


def test_objective_names_missing_role():
    parts = _tiny_parts()
    with pytest.raises(ConfigError, match="grid3"):
        Multigrid(MultigridOptions(n_grids=3, factor=4), parts)


def test_two_grid_recipe_resolves_builds_and_trains(registries):
    """Required roles follow n_grids: a 2-grid recipe (grid1, grid2) passes the pre-build checks."""
    from coopcore.build import build_experiment, resolve_experiment
    from coopcore.config import experiment_from_data

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
    cfg = resolve_experiment(experiment_from_data(data), registries)
    exp = build_experiment(cfg, registries, torch.device("cpu"))
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
