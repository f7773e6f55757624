"""CoopInit (Zhao, Xie, Li, AAAI 2023): the Langevin dynamics of eq. 4 against the closed form of
a Gaussian target, Algorithm 1 against a hand-written second implementation, Algorithm 2's
schedule (image count, stage switch, carried-over networks, optimiser state), the ring data and
its mode statistics, the scatter-plot sample writer, every coopinit recipe resolving against the
registries, each CoopInit recipe agreeing with its GAN baseline but for the objective, the
CIFAR-10 settings the paper states, and a short CLI run of coopinit-digits."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from coop_gan.coopinit import langevin_revision
from coop_gan.ring import ring_centres, ring_statistics
from coopcore import Batch
from coopcore.plugin_manager import load_registries

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# --- eq. 4 ------------------------------------------------------------------------------------
def _gaussian_score(m: float, s: float):
    """D(x) = -||x - m||^2 / (2 s^2): exp(D) is N(m, s^2 I)."""
    return lambda x: -(x - m).pow(2).sum(1) / (2 * s**2)


def test_langevin_without_noise_is_the_closed_form():
    # x_{t+1} - m = (1 - eta / s^2)(x_t - m): after T steps a^T (x_0 - m).
    x0 = torch.tensor([[0.0, 1.0], [-3.0, 5.0]], dtype=torch.float64)
    out, scores, norms = langevin_revision(_gaussian_score(2.0, 1.5), x0, 0.3, 7, 0.0, torch.Generator().manual_seed(0))
    a = 1 - 0.3 / 1.5**2
    assert torch.allclose(out, 2.0 + a**7 * (x0 - 2.0), atol=1e-12)
    assert scores.shape == norms.shape == (7,)
    # step 0 diagnostics: mean score and mean gradient norm at x0
    assert scores[0].item() == pytest.approx(_gaussian_score(2.0, 1.5)(x0).mean().item())
    assert norms[0].item() == pytest.approx(((x0 - 2.0) / 1.5**2).norm(dim=1).mean().item())
    assert torch.equal(x0, torch.tensor([[0.0, 1.0], [-3.0, 5.0]], dtype=torch.float64))  # init untouched


def test_langevin_noise_has_std_sqrt_2_eta():
    # With noise std sqrt(2 eta) the chain is an AR(1) process: after T steps from 0,
    # mean m (1 - a^T), variance 2 eta (1 - a^(2T)) / (1 - a^2), a = 1 - eta / s^2.
    m, s, eta, steps, n = 2.0, 1.0, 0.1, 20, 40000
    x0 = torch.zeros((n, 2), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    out, _, _ = langevin_revision(_gaussian_score(m, s), x0, eta, steps, math.sqrt(2 * eta), gen)
    a = 1 - eta / s**2
    mean = m * (1 - a**steps)
    var = 2 * eta * (1 - a ** (2 * steps)) / (1 - a**2)
    assert out.mean().item() == pytest.approx(mean, abs=0.02)  # standard error ~0.004
    assert out.var().item() == pytest.approx(var, abs=0.03)  # standard error ~0.005
    again, _, _ = langevin_revision(_gaussian_score(m, s), x0, eta, steps, math.sqrt(2 * eta),
                                    torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # all noise from the explicit generator


# --- building through the registries as a recipe would -----------------------------------------
def _recipe(objective: str, options: dict, batch: int = 8, seed: int = 0) -> dict:
    return {
        "run": {"name": "t", "seed": seed, "iterations": 4, "tensorboard": False},
        "data": {"name": "ring_of_gaussians", "batch_size": batch, "options": {"n": 64}},
        "models": {"descriptor": {"name": "gan.discriminator.mlp", "options": {"hidden": [16, 16]}},
                   "generator": {"name": "gan.generator.mlp", "options": {"hidden": [16, 16]}}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-2, "betas": [0.5, 0.999]},
                       "generator": {"name": "adam", "lr": 2e-2, "betas": [0.5, 0.999]}},
        "objective": {"name": objective, "options": options},
    }


def _build(objective: str, options: dict, batch: int = 8, seed: int = 0):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    reg = load_registries()
    resolved = resolve_data(_recipe(objective, options, batch, seed), registries=reg)
    torch.manual_seed(seed)
    return build_experiment(resolved, torch.device("cpu"), registries=reg)


def _batch(exp, it: int, batch: int = 8) -> Batch:
    idx = torch.arange(it * batch, (it + 1) * batch) % len(exp.dataset)
    return Batch(exp.dataset.get_batch(idx), idx)


# --- Algorithm 1 -------------------------------------------------------------------------------
def test_coop_step_is_algorithm_1():
    """One `coopinit.coop` step against a plain re-implementation of Algorithm 1 on copies of the
    networks: G1, T Langevin steps (eq. 4), D2 on mean D(x~) - mean D(x), G2 on
    mean ||x~ - G(z^)||^2, each one Adam step."""
    eta, steps, noise_scale = 0.05, 3, 0.5
    exp = _build("coopinit.coop", {"eta": eta, "langevin_steps": steps, "noise_scale": noise_scale,
                                   "g_ema_kimg": 0.0})
    d, g = exp.parts.models["descriptor"], exp.parts.models["generator"]
    d0, g0 = copy.deepcopy(d), copy.deepcopy(g)
    opt_d = torch.optim.Adam(d0.parameters(), lr=1e-2, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g0.parameters(), lr=2e-2, betas=(0.5, 0.999))
    batch = _batch(exp, 0)

    res = exp.objective.step(batch, torch.Generator().manual_seed(3))

    gen = torch.Generator().manual_seed(3)
    z = torch.randn((8, 2), generator=gen)  # G1
    x_hat = g0(z).detach()
    x = x_hat.clone()
    for _ in range(steps):  # D1
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(d0(x).sum(), x)
        x = (x + eta * grad + math.sqrt(2 * eta) * noise_scale * torch.randn(x.shape, generator=gen)).detach()
    loss_d = d0(x).mean() - d0(batch.x).mean()  # D2
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = ((x - g0(z)) ** 2).sum(dim=1).mean()  # G2
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()

    assert res.scalars["loss_d"].item() == pytest.approx(loss_d.item(), abs=1e-6)
    assert res.scalars["loss_g"].item() == pytest.approx(loss_g.item(), rel=1e-5)
    assert res.scalars["revision_sq"].item() == pytest.approx((x - x_hat).pow(2).sum(1).mean().item(), rel=1e-5)
    for a, b in zip(d.parameters(), d0.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(g.parameters(), g0.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    samples = exp.objective.samples(5, torch.Generator().manual_seed(0))
    assert set(samples) == {"generator", "revised"} and samples["revised"].shape == (5, 2)


# --- Algorithm 2 -------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_coop", "stages"), [(16, [0, 0, 0, 1, 1]), (15, [0, 0, 1, 1, 1]), (0, [1, 1, 1, 1, 1])])
def test_schedule_counts_images(n_coop, stages):
    """Cooperative while N <= N_coop (N = images consumed before the iteration; batch 8)."""
    exp = _build("coopinit", {"n_coop": n_coop, "eta": 0.01, "langevin_steps": 2, "g_ema_kimg": 0.0})
    gen = torch.Generator().manual_seed(0)
    got = []
    for it in range(5):
        res = exp.objective.step(_batch(exp, it), gen)
        got.append(int(res.scalars["stage"].item()))
        assert exp.objective.state_dict()["images"] == 8 * (it + 1)
        assert ("revision_sq" in res.scalars) == (got[-1] == 0)
    assert got == stages


def test_the_descriptor_becomes_the_discriminator():
    """The adversarial stage starts from the descriptor the cooperative stage trained (same
    network object, weights carried over)."""
    exp = _build("coopinit", {"n_coop": 8, "eta": 0.01, "langevin_steps": 2, "g_ema_kimg": 0.0})
    obj = exp.objective
    d = exp.parts.models["descriptor"]
    assert obj.coop.descriptor is d and obj.adversarial.descriptor is d
    gen = torch.Generator().manual_seed(0)
    for it in range(2):
        assert obj.step(_batch(exp, it), gen).scalars["stage"].item() == 0
    x = _batch(exp, 2).x
    with torch.no_grad():
        expected = d.score(x).mean()
    res = obj.step(_batch(exp, 2), gen)
    assert res.scalars["stage"].item() == 1
    assert res.scalars["d_real"].item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("reset", [False, True])
def test_optimiser_state_at_the_switch(reset):
    exp = _build("coopinit", {"n_coop": 16, "eta": 0.01, "langevin_steps": 2, "g_ema_kimg": 0.0,
                              "reset_optimizers": reset})
    gen = torch.Generator().manual_seed(0)
    for it in range(4):  # 3 cooperative iterations, then the first adversarial one
        exp.objective.step(_batch(exp, it), gen)
    for role in ("descriptor", "generator"):
        opt = exp.parts.optimizers[role]
        step = opt.state[opt.param_groups[0]["params"][0]]["step"].item()
        assert step == (1 if reset else 4), role


def test_schedule_resumes_from_its_state():
    """The image count travels in state_dict: a fresh objective loaded after 2 iterations switches
    exactly where the uninterrupted one does, with identical scalars."""
    a = _build("coopinit", {"n_coop": 8, "eta": 0.01, "langevin_steps": 2, "g_ema_kimg": 1.0})
    gen = torch.Generator().manual_seed(0)
    for it in range(2):
        a.objective.step(_batch(a, it), gen)
    b = _build("coopinit", {"n_coop": 8, "eta": 0.01, "langevin_steps": 2, "g_ema_kimg": 1.0})
    for role in ("descriptor", "generator"):
        # deep copies, as a checkpoint round trip gives (Adam's moment tensors must not be shared)
        b.parts.models[role].load_state_dict(copy.deepcopy(a.parts.models[role].state_dict()))
        b.parts.optimizers[role].load_state_dict(copy.deepcopy(a.parts.optimizers[role].state_dict()))
    b.objective.load_state_dict(copy.deepcopy(a.objective.state_dict()))
    gen_b = torch.Generator()
    gen_b.set_state(gen.get_state())
    for it in (2, 3):
        ra, rb = a.objective.step(_batch(a, it), gen), b.objective.step(_batch(b, it), gen_b)
        assert ra.scalars["stage"].item() == rb.scalars["stage"].item() == 1
        assert all(torch.equal(ra.scalars[k], rb.scalars[k]) for k in ra.scalars)


def test_coopinit_options_are_validated():
    from coopcore.config import structure
    from coopcore.errors import ConfigError

    entry = load_registries().objective.get("coopinit")
    o = entry.options()
    assert (o.n_coop, o.eta, o.langevin_steps, o.noise_scale, o.loss, o.reset_optimizers) == (
        750_000, 1.0, 10, 1.0, "ns", False)  # the paper's defaults (noise as printed)
    for key, bad in (("eta", 0.0), ("n_coop", -1), ("noise_scale", -0.1), ("langevin_steps", -1)):
        with pytest.raises(ConfigError, match=f"objective.options.{key}"):
            structure(entry.options, {key: bad}, "objective.options")


# --- data and mode statistics -----------------------------------------------------------------
def test_ring_of_gaussians_is_seeded_and_has_the_right_moments():
    reg = load_registries()
    entry = reg.dataset.get("ring_of_gaussians")
    ds = reg.dataset.create("ring_of_gaussians", entry.options(n=8000, radius=3.0, std=0.1, seed=4))
    again = reg.dataset.create("ring_of_gaussians", entry.options(n=8000, radius=3.0, std=0.1, seed=4))
    assert ds.shape == (2,) and len(ds) == 8000 and torch.equal(ds.images, again.images)
    centres = ring_centres(8, 3.0)
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 3.0))
    assert torch.allclose(centres[2], torch.tensor([0.0, 3.0]), atol=1e-6)  # angle pi/2
    for k in range(8):
        pts = ds.images[ds.labels == k]
        assert 800 < len(pts) < 1200
        assert torch.allclose(pts.mean(0), centres[k], atol=0.03)
        assert pts.std(0).tolist() == pytest.approx([0.1, 0.1], abs=0.01)


def test_ring_statistics_on_hand_made_samples():
    centres = ring_centres(8, 2.0)
    pts = torch.cat([
        centres[0].repeat(30, 1),  # 30 on mode 0
        centres[3].repeat(19, 1) + torch.tensor([0.05, 0.0]),  # 19 within 3 std (0.06): not enough
        centres[5].repeat(25, 1) + torch.tensor([0.0, 0.07]),  # 25 just outside 3 std
        torch.zeros(26, 2),  # the centre of the ring
    ])
    st = ring_statistics(pts, centres, std=0.02)
    assert st.modes_covered == 1
    assert st.counts == (30, 0, 0, 19, 0, 0, 0, 0)
    assert st.high_quality == pytest.approx(49 / 100)
    assert ring_statistics(pts, centres, std=0.02, min_count=19).modes_covered == 2


# --- the sample writer: scatter plots for point sets --------------------------------------------
def test_save_grid_draws_point_sets_as_scatter_plots(tmp_path):
    from PIL import Image

    from coopcore.images import make_grid, save_grid, save_scatter

    p = save_grid(torch.randn(300, 2), tmp_path / "points.png")
    img = Image.open(p)
    assert img.size == (400, 400)
    arr = np.asarray(img.convert("RGB"))
    assert (arr < 200).any()  # something was drawn
    p2 = save_scatter(torch.randn(50, 2), tmp_path / "ref.png", reference=ring_centres(), limit=3.0, title="x")
    assert Image.open(p2).size == (400, 400)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        save_scatter(torch.randn(5, 3), tmp_path / "bad.png")
    # image batches keep their grid: 4 images of 8x8 -> 2x2 grid with 2-pixel padding, x16 upscale
    q = save_grid(torch.zeros(4, 1, 8, 8), tmp_path / "grid.png")
    assert Image.open(q).size == (22 * 16, 22 * 16) and make_grid(torch.zeros(4, 1, 8, 8)).shape == (22, 22)


# --- recipes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(RECIPES.glob("coopinit-*.toml")), ids=lambda p: p.name)
def test_coopinit_recipes_resolve(path, registries):
    from coopcore.experiment import resolve

    assert resolve(path, registries=registries).objective.name in ("gan", "coopinit", "coopinit.cut")


def _resolved_data(name: str, registries) -> dict:
    """The recipe as config.json holds it: resolved, every default filled in."""
    from coopcore.experiment import resolve

    return resolve(RECIPES / f"{name}.toml", registries=registries).to_data()


@pytest.mark.parametrize("coop, gan, same_lr", [
    # Figure 1: the same GAN with and without CoopInit.
    ("coopinit-ring-coopinit", "coopinit-ring-gan", True),
    # Table 1: StyleGAN2 w/o ADA + CoopInit against its baseline; the paper changes the learning
    # rate to 0.003 for its CoopInit runs (Section 5.4), the baseline keeps StyleGAN2-ADA's.
    ("coopinit-cifar10", "coopinit-cifar10-gan", False),
])
def test_coopinit_and_its_baseline_differ_only_in_the_objective(coop, gan, same_lr, registries):
    """A comparison is only fair if the pair agrees on data, networks, optimisers and schedule
    (with every default filled in by resolution)."""
    a, b = _resolved_data(coop, registries), _resolved_data(gan, registries)
    assert (a["objective"]["name"], b["objective"]["name"]) == ("coopinit", "gan")
    for cfg in (a, b):
        cfg["run"].pop("name")
    lrs = [{role: opt.pop("lr") for role, opt in cfg["optimizers"].items()} for cfg in (a, b)]
    assert (lrs[0] == lrs[1]) == same_lr, lrs
    same = set(a) - {"objective", "description"}
    assert {k: a[k] for k in same} == {k: b[k] for k in same}
    # the GAN options both objectives have after the switch agree, except R1 (gamma 0 vs 0.01)
    shared = (set(a["objective"]["options"]) & set(b["objective"]["options"])) - {"r1_gamma"}
    assert {k: a["objective"]["options"][k] for k in shared} == {k: b["objective"]["options"][k] for k in shared}


def test_cifar10_recipes_follow_the_paper(registries):
    """Table 1 / Section 5.4: 25M images at batch 64, N_coop = 0.75M, eta = 1, T = 10, R1 gamma 0
    with CoopInit and 0.01 for the baseline, Adam lr 0.003 for CoopInit runs."""
    coop, gan = _resolved_data("coopinit-cifar10", registries), _resolved_data("coopinit-cifar10-gan", registries)
    for cfg in (coop, gan):
        assert cfg["run"]["iterations"] * cfg["data"]["batch_size"] == 25_000_000
        assert cfg["data"]["name"] == "cifar10"
    o = coop["objective"]["options"]
    assert (o["n_coop"], o["eta"], o["langevin_steps"], o["r1_gamma"]) == (750_000, 1.0, 10, 0.0)
    assert gan["objective"]["options"]["r1_gamma"] == 0.01
    assert {opt["lr"] for opt in coop["optimizers"].values()} == {0.003}


def test_cli_trains_coopinit_digits_through_the_switch(tmp_path):
    from conftest import run_cli

    out = tmp_path / "run"
    code = run_cli(["train", "coopinit-digits", "--out", out, "--no-progress",
                    "--set", "run.iterations=3", "--set", "data.batch_size=8", "--set", "objective.options.n_coop=8",
                    "--set", "run.sample_every=0", "--set", "run.sample_count=4", "--set", "run.log_every=1",
                    "--set", "objective.options.langevin_steps=2"])
    assert code == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == [0.0, 0.0, 1.0]  # N = 0, 8 cooperative; N = 16 adversarial
    assert rows[-1]["images_seen"] == 24
    assert (out / "samples" / "iter-00000003-generator.png").exists()
    assert (out / "checkpoints" / "iter-00000003.ckpt").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["objective"]["options"]["n_coop"] == 8 and cfg["objective"]["name"] == "coopinit"


def test_a_configured_langevin_sampler_reproduces_eq4(registries):
    """Eq. 4 built in and the registered `langevin` sampler with step_size sqrt(2 eta) are two
    implementations of the same update: with equal seeds their revised samples agree."""
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data
    from coopcore.rng import seed_everything

    eta, scale = 0.05, 0.3
    base = {
        "run": {"seed": 0, "tensorboard": False},
        "data": {"name": "ring_of_gaussians", "batch_size": 8, "options": {"n": 32}},
        "models": {"descriptor": {"name": "gan.discriminator.mlp", "options": {"hidden": [16, 16]}},
                   "generator": {"name": "gan.generator.mlp", "options": {"hidden": [16, 16]}}},
        "optimizers": {"descriptor": {"lr": 1e-3}, "generator": {"lr": 1e-3}},
        "objective": {"name": "coopinit.coop", "options": {"eta": eta, "langevin_steps": 5,
                                                           "noise_scale": scale, "g_ema_kimg": 0.0}},
    }
    with_sampler = {**base, "samplers": {"revision": {"name": "langevin", "options": {
        "n_steps": 5, "step_size": math.sqrt(2 * eta), "noise_scale": scale}}}}
    other_step = {**base, "samplers": {"revision": {"name": "langevin", "options": {
        "n_steps": 5, "step_size": 1.5 * math.sqrt(2 * eta), "noise_scale": scale}}}}
    revised = []
    for data in (base, with_sampler, other_step):
        resolved = resolve_data(data, registries=registries)
        seed_everything(0)
        exp = build_experiment(resolved, torch.device("cpu"), registries=registries)
        revised.append(exp.objective.samples(64, torch.Generator().manual_seed(3))["revised"])
    assert torch.allclose(revised[0], revised[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(revised[0], revised[2], atol=1e-3)  # the configured sampler is the one used
