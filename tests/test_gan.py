"""The GAN plugin (`coop_gan`): loss values and gradients against hand-computed examples, the
WGAN-GP and R1 penalties on linear critics, lazy R1, the generator's EMA against its closed
form, and the `gan` objective built through the registries with tiny DCGAN networks."""
from __future__ import annotations

import math

import pytest
import torch

from coop_gan.losses import (
    d_loss,
    g_loss,
    gradient_penalty,
    interpolates,
    lazy_r1_penalty,
    r1_due,
    r1_penalty,
)
from coopcore import Batch, Objective, UsageError
from coopcore.plugin_manager import load_registries


def sp(x: float) -> float:
    """softplus written out: log(1 + e^x)."""
    return math.log(1.0 + math.exp(x))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


D_REAL = [0.0, 2.0]
D_FAKE = [-1.0, 3.0]

# loss -> (D value, dD/dd_real, dD/dd_fake, G value, dG/dd_fake); means over B = 2.
HAND = {
    "ns": (
        # (log(1+e^0) + log(1+e^-1) + log(1+e^-2) + log(1+e^3)) / 2 = 2.090962
        (sp(-0.0) + sp(-1.0) + sp(-2.0) + sp(3.0)) / 2,
        [-sig(0.0) / 2, -sig(-2.0) / 2],  # d softplus(-r)/dr = -sigmoid(-r)
        [sig(-1.0) / 2, sig(3.0) / 2],  # d softplus(f)/df = sigmoid(f)
        (sp(1.0) + sp(-3.0)) / 2,  # (log(1+e^1) + log(1+e^-3)) / 2 = 0.680924
        [-sig(1.0) / 2, -sig(-3.0) / 2],
    ),
    "hinge": (
        # relu(1-0) + relu(1-2) + relu(1-1) + relu(1+3) = 1 + 0 + 0 + 4, over 2
        2.5,
        [-0.5, 0.0],
        [0.0, 0.5],  # d_fake = -1 sits on the kink: torch's relu'(0) = 0
        -(-1.0 + 3.0) / 2,
        [-0.5, -0.5],
    ),
    "wgan": (
        ((-1.0 - 0.0) + (3.0 - 2.0)) / 2,  # = 0
        [-0.5, -0.5],
        [0.5, 0.5],
        -1.0,
        [-0.5, -0.5],
    ),
}


@pytest.mark.parametrize("loss", sorted(HAND))
def test_losses_values_and_gradients(loss):
    d_val, g_real, g_fake, g_val, gg_fake = HAND[loss]
    r = torch.tensor(D_REAL, dtype=torch.float64, requires_grad=True)
    f = torch.tensor(D_FAKE, dtype=torch.float64, requires_grad=True)
    ld = d_loss(loss, r, f)
    assert ld.dim() == 0 and ld.item() == pytest.approx(d_val, abs=1e-12)
    gr, gf = torch.autograd.grad(ld, (r, f))
    assert gr.tolist() == pytest.approx(g_real, abs=1e-12)
    assert gf.tolist() == pytest.approx(g_fake, abs=1e-12)
    lg = g_loss(loss, f)
    assert lg.dim() == 0 and lg.item() == pytest.approx(g_val, abs=1e-12)
    (gf,) = torch.autograd.grad(lg, f)
    assert gf.tolist() == pytest.approx(gg_fake, abs=1e-12)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown GAN loss"):
        d_loss("lsgan", torch.zeros(2), torch.zeros(2))


def _linear_critic(w: torch.Tensor):
    return lambda x: x.flatten(1) @ w


def _xs(seed=0, shape=(4, 2, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_interpolates_use_the_explicit_generator():
    x_real, x_fake = _xs()
    a = interpolates(x_real, x_fake, torch.Generator().manual_seed(3))
    eps = torch.rand((4, 1, 1, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(a, eps * x_real + (1 - eps) * x_fake)
    assert torch.equal(a, interpolates(x_real, x_fake, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("scale", [1.0, 0.3, 3.0])
def test_gradient_penalty_linear_critic(scale):
    x_real, x_fake = _xs()
    w = torch.randn(18, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = (scale * w / w.norm()).requires_grad_(True)
    gp = gradient_penalty(_linear_critic(w), x_real, x_fake, torch.Generator().manual_seed(0), lam=10.0)
    assert gp.dim() == 0
    assert gp.item() == pytest.approx(10.0 * (scale - 1.0) ** 2, abs=1e-10)  # 0 when ||w|| = 1
    # it trains the critic: d/dw lambda (||w|| - 1)^2 = 2 lambda (||w|| - 1) w / ||w||
    (gw,) = torch.autograd.grad(gp, w)
    assert torch.allclose(gw, 2 * 10.0 * (scale - 1.0) * w.detach() / scale, atol=1e-10)


def test_r1_linear_critic():
    x_real, _ = _xs()
    w = torch.randn(18, generator=torch.Generator().manual_seed(2), dtype=torch.float64, requires_grad=True)
    r1 = r1_penalty(_linear_critic(w), x_real, gamma=4.0)
    assert r1.item() == pytest.approx(4.0 / 2 * w.detach().pow(2).sum().item(), rel=1e-12)
    (gw,) = torch.autograd.grad(r1, w)  # d/dw gamma/2 ||w||^2 = gamma w
    assert torch.allclose(gw, 4.0 * w.detach())


def test_lazy_r1_every_kth_step_scaled_by_k():
    x_real, _ = _xs()
    w = torch.randn(18, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eager = 4.0 / 2 * w.pow(2).sum().item()
    got = [lazy_r1_penalty(_linear_critic(w), x_real, step, gamma=4.0, interval=3) for step in range(7)]
    assert [g is not None for g in got] == [True, False, False, True, False, False, True]
    for g in (got[0], got[3], got[6]):
        assert g.item() == pytest.approx(3 * eager, rel=1e-12)
    assert all(r1_due(s, 1) for s in range(5))
    one = lazy_r1_penalty(_linear_critic(w), x_real, 5, gamma=4.0, interval=1)
    assert one.item() == pytest.approx(eager, rel=1e-12)


# --- EMA ---------------------------------------------------------------------------------------
def test_ema_beta_is_a_half_life_in_images():
    from coop_gan.ema import ema_beta

    # 500k-image half-life, batch 64, no ramp-up: after 500k / 64 updates the old weights count 1/2.
    beta = ema_beta(64, 10**9, 500.0, None)
    assert beta ** (500_000 / 64) == pytest.approx(0.5, rel=1e-9)
    # ramp-up 0.05 after 100k images: half-life 5k images.
    assert ema_beta(64, 100_000, 500.0, 0.05) == pytest.approx(0.5 ** (64 / 5000), rel=1e-12)
    assert ema_beta(64, 10**9, 500.0, 0.05) == pytest.approx(beta, rel=1e-12)  # capped at ema_kimg


def test_generator_ema_update_matches_the_formula():
    from coop_gan.ema import GeneratorEMA

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = GeneratorEMA(net)
    old = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(3.0)
    ema.update(net, 0.9)
    for p_old, p_ema, p in zip(old, ema.module.parameters(), net.parameters()):
        assert torch.allclose(p_ema, 0.9 * p_old + 0.1 * p)
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers copied
    assert not any(p.requires_grad for p in ema.module.parameters())


# --- the objective, built through the registries as a recipe would ---------------------------
def _recipe(options: dict, seed: int = 0) -> dict:
    return {
        "run": {"name": "t", "seed": seed, "iterations": 4, "tensorboard": False},
        "data": {"name": "synthetic", "batch_size": 6, "options": {"shape": [1, 16, 16], "n": 12}},
        "models": {
            "descriptor": {"name": "gan.discriminator.dcgan", "options": {"input_shape": [1, 16, 16], "channels": [8, 16]}},
            "generator": {"name": "gan.generator.dcgan",
                          "options": {"latent_dim": 8, "output_shape": [1, 16, 16], "channels": [16, 8]}},
        },
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-2, "betas": [0.5, 0.999]},
                       "generator": {"name": "adam", "lr": 1e-2, "betas": [0.5, 0.999]}},
        "objective": {"name": "gan", "options": options},
    }


def _tiny_gan(options, seed=0):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    reg = load_registries()
    resolved = resolve_data(_recipe(options, seed), registries=reg)
    torch.manual_seed(seed)
    exp = build_experiment(resolved, torch.device("cpu"), registries=reg)
    return exp.objective, exp.parts.models["descriptor"], exp.parts.models["generator"]


def _batch():
    x = torch.rand((6, 1, 16, 16), generator=torch.Generator().manual_seed(9)) * 2 - 1
    return Batch(x=x, index=torch.arange(6))


@pytest.mark.parametrize("options", [
    dict(loss="ns"), dict(loss="hinge"), dict(loss="wgan"), dict(loss="wgan_gp", d_steps=2),
    dict(loss="wgan", gp_lambda=10.0), dict(loss="ns", r1_gamma=1.0, r1_interval=2),
])
def test_gan_step_updates_both_networks(options):
    obj, d, g = _tiny_gan({**options, "g_ema_kimg": 0.0})
    assert isinstance(obj, Objective)
    assert obj.required_models == ("descriptor", "generator") and tuple(obj.required_samplers) == ()
    before_d = [p.detach().clone() for p in d.parameters()]
    before_g = [p.detach().clone() for p in g.parameters()]
    res = obj.step(_batch(), torch.Generator().manual_seed(0))
    assert set(res.scalars) == {"loss_d", "loss_g", "d_real", "d_fake", "gp", "r1"}
    for k, v in res.scalars.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    assert any(not torch.equal(a, b) for a, b in zip(before_d, d.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_g, g.parameters()))
    has_gp = options["loss"] == "wgan_gp" or options.get("gp_lambda", 0) > 0
    assert (res.scalars["gp"] > 0) == has_gp
    assert (res.scalars["r1"] > 0) == (options.get("r1_gamma", 0) > 0)  # step 0: lazy R1 is due
    assert obj.state_dict() == {"d_updates": options.get("d_steps", 1), "images": 6}
    assert all(p.requires_grad for p in d.parameters())  # the G step restored D's flags
    s = obj.samples(3, torch.Generator().manual_seed(1))
    assert set(s) == {"generator"} and s["generator"].shape == (3, 1, 16, 16)


def test_generator_step_leaves_the_discriminator_alone():
    obj, d, g = _tiny_gan({"loss": "ns", "g_ema_kimg": 0.0})
    d.requires_grad_(True)
    d.net[0].bias.requires_grad_(False)  # a frozen parameter stays frozen
    for p in d.parameters():
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in d.parameters()]
    before_g = [p.detach().clone() for p in g.parameters()]
    obj.adversarial.g_update(6, torch.Generator().manual_seed(0))
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in d.parameters())  # no gradient reached D
    assert all(torch.equal(a, p) for a, p in zip(before, d.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(before_g, g.parameters()))
    assert [p.requires_grad for p in d.parameters()] == [p is not d.net[0].bias for p in d.parameters()]


def test_gan_losses_reach_the_objective():
    """The objective's reported D loss is the loss function of the logits it reports (NS)."""
    obj, d, g = _tiny_gan({"loss": "ns", "g_ema_kimg": 0.0})
    gen = torch.Generator().manual_seed(0)
    z = g.sample_latent(6, torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected_fake = d.score(g(z))
        expected_real = d.score(_batch().x)
    res = obj.step(_batch(), gen)  # the same generator state draws the same latents first
    assert torch.allclose(res.scalars["d_fake"], expected_fake.mean())
    assert torch.allclose(res.scalars["d_real"], expected_real.mean())
    assert torch.allclose(res.scalars["loss_d"], d_loss("ns", expected_real, expected_fake))


def test_gan_lazy_r1_in_the_objective_and_state():
    obj, _, _ = _tiny_gan(dict(loss="ns", r1_gamma=1.0, r1_interval=2, g_ema_kimg=0.0))
    gen = torch.Generator().manual_seed(0)
    r1 = [obj.step(_batch(), gen).scalars["r1"].item() for _ in range(4)]
    assert [v > 0 for v in r1] == [True, False, True, False]
    assert obj.state_dict() == {"d_updates": 4, "images": 24}
    other, _, _ = _tiny_gan(dict(loss="ns", r1_gamma=1.0, r1_interval=2, g_ema_kimg=0.0))
    other.load_state_dict({"d_updates": 3, "images": 18})
    assert other.step(_batch(), gen).scalars["r1"].item() == 0.0  # update 3 is not due


def test_gan_ema_samples_and_state():
    from coop_gan.ema import ema_beta

    obj, _, g = _tiny_gan({"loss": "hinge", "g_ema_kimg": 0.01, "g_ema_rampup": "none"})
    ema = obj.tracker.ema.module
    expected = [p.detach().clone() for p in g.parameters()]  # the average starts at G
    gen = torch.Generator().manual_seed(0)
    beta = ema_beta(6, 0, 0.01, None)  # 0.5 ** (6 / 10)
    for _ in range(3):
        obj.step(_batch(), gen)
        expected = [beta * e + (1 - beta) * p.detach() for e, p in zip(expected, g.parameters())]
    for e, p in zip(expected, ema.parameters()):
        assert torch.allclose(e, p, atol=1e-6)
    s = obj.samples(4, torch.Generator().manual_seed(5))
    z = g.sample_latent(4, torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(s["generator"], ema(z)) and torch.allclose(s["generator_raw"], g(z))
    assert not torch.allclose(s["generator"], s["generator_raw"])
    state = obj.state_dict()
    assert state["images"] == 18 and set(state["g_ema"]) == set(g.state_dict())
    fresh, _, _ = _tiny_gan({"loss": "hinge", "g_ema_kimg": 0.01, "g_ema_rampup": "none"})
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.tracker.ema.module.parameters(), ema.parameters()))


def test_split_real_batches_give_each_d_update_its_own_part(monkeypatch):
    """d_batches = "split": the k-th of d_steps D updates sees the k-th part of the batch, and G
    generates a part's worth; "same" shows every update the whole batch.  A batch that does not
    divide is refused with the fix in the message."""
    from coop_gan.objective import Adversarial

    for mode, d_steps, sizes, g_n in (("split", 3, [2, 2, 2], 2), ("same", 2, [6, 6], 6)):
        obj, _, _ = _tiny_gan({"loss": "hinge", "d_steps": d_steps, "d_batches": mode, "g_ema_kimg": 0.0})
        seen, g_sizes = [], []
        d_update, g_update = Adversarial.d_update, Adversarial.g_update
        monkeypatch.setattr(Adversarial, "d_update",
                            lambda self, x, gen, y=None: (seen.append(x.clone()), d_update(self, x, gen, y))[1])
        monkeypatch.setattr(Adversarial, "g_update",
                            lambda self, n, gen, y=None: (g_sizes.append(n), g_update(self, n, gen, y))[1])
        batch = _batch()
        obj.step(batch, torch.Generator().manual_seed(0))
        monkeypatch.undo()
        assert [x.shape[0] for x in seen] == sizes and g_sizes == [g_n]
        assert torch.equal(torch.cat(seen) if mode == "split" else seen[0], batch.x)
        assert obj.state_dict()["images"] == 6 and obj.state_dict()["d_updates"] == d_steps
    bad, _, _ = _tiny_gan({"loss": "hinge", "d_steps": 4, "d_batches": "split", "g_ema_kimg": 0.0})
    with pytest.raises(UsageError, match="multiple of 4"):
        bad.step(_batch(), torch.Generator().manual_seed(0))


def test_ema_copies_the_generator_until_its_start():
    from coop_gan.ema import ema_beta

    assert ema_beta(50, 199_950, 346.556, None, start_kimg=200.0) == 0.0
    assert ema_beta(50, 200_000, 346.556, None, start_kimg=200.0) == pytest.approx(0.9999, abs=1e-8)
    obj, _, g = _tiny_gan({"loss": "hinge", "g_ema_kimg": 0.01, "g_ema_rampup": "none", "g_ema_start_kimg": 0.012})
    gen = torch.Generator().manual_seed(0)
    obj.step(_batch(), gen)  # 6 images < 12: a copy
    assert all(torch.equal(a, b) for a, b in zip(obj.tracker.ema.module.parameters(), g.parameters()))
    obj.step(_batch(), gen)  # 12 images: from here on an average
    obj.step(_batch(), gen)
    assert not all(torch.equal(a, b) for a, b in zip(obj.tracker.ema.module.parameters(), g.parameters()))


def test_gan_step_is_reproducible():
    a, _, _ = _tiny_gan(dict(loss="hinge", gp_lambda=1.0), seed=4)
    b, _, _ = _tiny_gan(dict(loss="hinge", gp_lambda=1.0), seed=4)
    ra = a.step(_batch(), torch.Generator().manual_seed(7)).scalars
    rb = b.step(_batch(), torch.Generator().manual_seed(7)).scalars
    assert all(torch.equal(ra[k], rb[k]) for k in ra)


def test_gan_options_are_validated():
    entry = load_registries().objective.get("gan")
    with pytest.raises((ValueError, TypeError)):
        entry.options(loss="lsgan")
    with pytest.raises(ValueError, match="'r1_interval'"):
        entry.options(r1_interval=0)
    with pytest.raises(ValueError, match="'gp_lambda'"):
        entry.options(loss="wgan_gp", gp_lambda=0.0)
    assert entry.options(loss="wgan_gp").gp_weight == 10.0
    assert entry.options(loss="wgan_gp", gp_lambda=5.0).gp_weight == 5.0
    assert entry.options(loss="hinge").gp_weight == 0.0
    assert entry.options(loss="wgan_gp").base_loss == "wgan"
    assert (entry.options().g_ema_kimg, entry.options().g_ema_rampup) == (500.0, 0.05)  # StyleGAN2-ADA cifar
    from coopcore.config import structure
    from coopcore.errors import ConfigError

    with pytest.raises(ConfigError, match="objective.options.r1_gama"):  # what a recipe's options go through
        structure(entry.options, {"loss": "ns", "r1_gama": 1.0}, "objective.options")
    with pytest.raises(ConfigError, match="objective.options.gp_lambda"):
        structure(entry.options, {"loss": "wgan_gp", "gp_lambda": 0.0}, "objective.options")
    assert structure(entry.options, {"loss": "wgan", "gp_lambda": 10.0}, "objective.options").gp_lambda == 10.0
    assert structure(entry.options, {"g_ema_rampup": "none"}, "objective.options").g_ema_rampup is None
