"""CoopInit Table 6's discriminator regularisers (`coop_gan`): spectral normalisation of the
StyleGAN2 discriminator's effective weights (and the DCGAN discriminator's `norm = "spectral"`),
zCR latent consistency regularisation on the `gan` / `coopinit` objectives (closed-form toy,
random draws, gradients, defaults), and non-lazy R1 (`r1_interval = 1`)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from coop_gan.coopinit import CoopInit
from coop_gan.dcgan import DCGANDiscriminator, DCGANDiscriminatorOptions
from coop_gan.losses import lazy_r1_penalty, r1_penalty, zcr_discriminator_term, zcr_generator_term
from coop_gan.objective import Adversarial, Gan, GanOptions, ZcrOptions
from coop_gan.stylegan2 import EqualConv2d, EqualLinear, StyleGAN2Discriminator, StyleGAN2DiscriminatorOptions
from coopcore.config import ConfigError, structure
from coopcore.contract import check_objective
from coopcore.plugin_manager import get_registries

from conftest import step_on_first_examples

torch.set_num_threads(1)


# --- spectral normalisation -------------------------------------------------------------
def _tiny_d_options(architecture: str = "orig", **kw) -> StyleGAN2DiscriminatorOptions:
    return StyleGAN2DiscriminatorOptions(resolution=8, img_channels=3, architecture=architecture,
                                         channel_base=64, channel_max=8, mbstd_group_size=2, **kw)


def _equal_layers(d: nn.Module) -> list[nn.Module]:
    return [m for m in d.modules() if isinstance(m, (EqualConv2d, EqualLinear))]


def _effective_sigma(layer: nn.Module) -> float:
    """Largest singular value of the layer's effective weight, as the [out, -1] matrix."""
    w = (layer.weight * layer.weight_gain).detach()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_sn_normalises_every_effective_weight(architecture):
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(_tiny_d_options(architecture, spectral_norm=True)).train()
    layers = _equal_layers(d)
    # every conv / fully connected layer is parametrised, and the equalised-lr gain is dropped
    assert layers and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in layers)
    assert all(m.weight_gain == 1.0 for m in layers)
    x = torch.randn(4, 3, 8, 8)
    for _ in range(5):  # a few forwards = a few more power iterations (15 at registration)
        d.score(x)
    for m in layers:
        # the power iteration's sigma estimate is a lower bound: the normalised sigma is >= 1
        assert 1.0 - 1e-5 <= _effective_sigma(m) <= 1.05
        for _ in range(300):  # each access in training mode is one more power iteration
            m.weight
        assert _effective_sigma(m) == pytest.approx(1.0, abs=1e-3)


def test_sn_is_the_plain_network_with_normalised_effective_weights():
    """In eval mode (u, v frozen) the SN network is the plain network whose effective weights
    are W / sigma(W): SN changes the weights and nothing else."""
    torch.manual_seed(0)
    plain = StyleGAN2Discriminator(_tiny_d_options())
    torch.manual_seed(0)
    sn = StyleGAN2Discriminator(_tiny_d_options(spectral_norm=True)).eval()
    # SN is registered after construction: the stored weights are the plain network's.
    for a, b in zip(_equal_layers(plain), _equal_layers(sn)):
        assert torch.equal(a.weight, b.parametrizations.weight.original)
    with torch.no_grad():
        for a, b in zip(_equal_layers(plain), _equal_layers(sn)):
            a.weight.copy_(b.weight / a.weight_gain)
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(plain.score(x), sn.score(x), atol=1e-5)


def test_sn_off_by_default_leaves_the_network_unchanged():
    torch.manual_seed(0)
    default = StyleGAN2Discriminator(_tiny_d_options())
    torch.manual_seed(0)
    off = StyleGAN2Discriminator(_tiny_d_options(spectral_norm=False))
    assert StyleGAN2DiscriminatorOptions().spectral_norm is False
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in default.modules())
    sd, sd_off = default.state_dict(), off.state_dict()
    assert list(sd) == list(sd_off) and all(torch.equal(sd[k], sd_off[k]) for k in sd)
    # the equalised-lr gains are still 1 / sqrt(fan_in)
    assert default.epilogue_conv.weight_gain == pytest.approx(1 / (9 * 9) ** 0.5)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(default.score(x), off.score(x))


def test_sn_score_is_deterministic_in_eval_mode_and_trains_with_r1():
    """In training mode every forward advances the power iteration (so two calls differ
    slightly, which is why the registry's energy-model contract, run in training mode on the
    defaults, is not applied with SN on); in eval mode u, v are frozen."""
    torch.manual_seed(0)
    d = StyleGAN2Discriminator(_tiny_d_options(spectral_norm=True))
    x = torch.randn(4, 3, 8, 8)
    d.eval()
    assert torch.equal(d.score(x), d.score(x))
    assert torch.allclose(d.energy(x), -d.score(x))
    d.train()
    u0 = d.fc.parametrizations.weight[0]._u.clone()
    d.score(x)
    assert not torch.equal(u0, d.fc.parametrizations.weight[0]._u)  # one power iteration per forward
    # R1 differentiates through the parametrisation twice (create_graph).
    pen = r1_penalty(d.score, x, gamma=1.0)
    pen.backward()
    orig = d.out.parametrizations.weight.original
    assert orig.grad is not None and torch.isfinite(orig.grad).all()


def test_dcgan_spectral_norm_option_normalises_every_conv():
    torch.manual_seed(0)
    d = DCGANDiscriminator(DCGANDiscriminatorOptions(input_shape=(3, 8, 8), channels=(4, 8), norm="spectral")).train()
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    for m in convs:
        for _ in range(300):
            m.weight
        w = m.weight.detach()
        assert torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item() == pytest.approx(1.0, abs=1e-3)


# --- zCR: closed-form toy ------------------------------------------------------------------
class LinearG(nn.Module):
    """G(z) = A z, latents N(0, I) from the explicit generator."""

    def __init__(self, k: int, d: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(d, k))
        self.k = k

    def sample_latent(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn((n, self.k), generator=generator)

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.A.T


class LinearD(nn.Module):
    """D(x) = w . x."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def score(self, x: Tensor) -> Tensor:
        return x @ self.w


def _toy(zcr: ZcrOptions, loss: str = "wgan") -> Adversarial:
    torch.manual_seed(0)
    g, d = LinearG(3, 5), LinearD(5)
    # lr 0: the step leaves the parameters (and the gradients) to be inspected.
    opts = GanOptions(loss=loss, zcr=zcr, g_ema_kimg=0.0)
    return Adversarial(opts, d, g, torch.optim.SGD(d.parameters(), lr=0.0), torch.optim.SGD(g.parameters(), lr=0.0))


def _clone(gen: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(gen.get_state())


def test_zcr_discriminator_term_is_the_hand_computed_value_and_trains_only_d():
    lam, std, n = 2.0, 0.1, 6
    adv = _toy(ZcrOptions(weight_dis=lam, noise_std=std))
    A, w = adv.generator.A.detach(), adv.descriptor.w.detach()
    x_real = torch.randn(n, 5)
    gen = torch.Generator().manual_seed(1)
    ref = _clone(gen)
    out = adv.d_update(x_real, gen)
    z = torch.randn((n, 3), generator=ref)  # the order of the draws: latents, then dz
    dz = std * torch.randn((n, 3), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())  # nothing else drawn
    # D(G(z)) - D(G(z + dz)) = -w . A dz
    diff = (dz @ A.T) @ w
    assert torch.allclose(out["zcr_d"], lam * diff.pow(2).mean(), rtol=1e-6)
    assert torch.allclose(zcr_discriminator_term((z @ A.T) @ w, ((z + dz) @ A.T) @ w, lam), out["zcr_d"], rtol=1e-5)
    # gradient of WGAN's mean D(fake) - mean D(real) plus lam mean (w.A dz)^2 with respect to w
    grad = (z @ A.T).mean(0) - x_real.mean(0) + lam * (2 * diff[:, None] * (dz @ A.T)).mean(0)
    assert torch.allclose(adv.descriptor.w.grad, grad, rtol=1e-5, atol=1e-6)
    assert adv.generator.A.grad is None  # G gets nothing from D's update


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_zcr_generator_term_is_the_hand_computed_value_and_trains_only_g(reduction):
    lam, std, n = 0.5, 0.2, 6
    adv = _toy(ZcrOptions(weight_gen=lam, noise_std=std, gen_reduction=reduction))
    A, w = adv.generator.A.detach(), adv.descriptor.w.detach()
    gen = torch.Generator().manual_seed(2)
    ref = _clone(gen)
    adv.g_update(n, gen)
    z = torch.randn((n, 3), generator=ref)
    dz = std * torch.randn((n, 3), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())
    sq = (dz @ A.T).pow(2)  # G(z + dz) - G(z) = A dz
    per = sq.mean(1) if reduction == "mean" else sq.sum(1)
    assert torch.allclose(adv.last_g_terms["zcr_g"], -lam * per.mean(), rtol=1e-6)
    x, xp = z @ A.T, (z + dz) @ A.T
    assert torch.allclose(zcr_generator_term(x, xp, lam, reduction), adv.last_g_terms["zcr_g"], rtol=1e-5)
    # gradient of WGAN's -mean w.A z  minus  lam mean_i c ||A dz_i||^2 (c = 1/5 for "mean") w.r.t. A
    c = 1.0 / 5 if reduction == "mean" else 1.0
    grad = -torch.outer(w, z.mean(0)) - lam * c * 2 * (dz @ A.T).T @ dz / n
    assert torch.allclose(adv.generator.A.grad, grad, rtol=1e-5, atol=1e-6)
    assert adv.descriptor.w.grad is None  # D is frozen in G's update


def test_zcr_off_draws_nothing_and_changes_nothing():
    n = 6
    x_real = torch.randn(n, 5)
    runs = {}
    cases = [("default", ZcrOptions()), ("zero weights", ZcrOptions(weight_dis=0.0, weight_gen=0.0, noise_std=0.5))]
    for name, zcr in cases:
        adv = _toy(zcr, loss="ns")
        gen = torch.Generator().manual_seed(3)
        ref = _clone(gen)
        result = adv.step(x_real, gen)
        torch.randn((n, 3), generator=ref), torch.randn((n, 3), generator=ref)  # D's and G's latents only
        assert torch.equal(gen.get_state(), ref.get_state())
        assert "zcr_d" not in result.scalars and "zcr_g" not in result.scalars
        runs[name] = (result.scalars, adv.descriptor.w.grad.clone(), adv.generator.A.grad.clone())
    a, b = runs["default"], runs["zero weights"]
    assert a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0])
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_zcr_options_are_validated():
    o = structure(GanOptions, {"zcr": {"weight_dis": 5, "weight_gen": 0.5, "noise_std": 0.03}})
    assert o.zcr == ZcrOptions(weight_dis=5.0, weight_gen=0.5, noise_std=0.03)
    assert GanOptions().zcr == ZcrOptions() and ZcrOptions().weight_dis == 0 and ZcrOptions().weight_gen == 0
    for bad in ({"weight_dis": -1.0}, {"noise_std": 0.0}, {"gen_reduction": "max"}, {"lambda": 1.0}):
        with pytest.raises((ConfigError, ValueError)):
            structure(GanOptions, {"zcr": bad})


# --- zCR in the objectives ------------------------------------------------------------------
def _recipe(objective: str, options: dict, discriminator: dict) -> dict:
    shape = [3, 8, 8]
    return {
        "run": {"name": "t", "seed": 0, "iterations": 3, "tensorboard": False},
        "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": shape, "n": 8}},
        "models": {
            "descriptor": discriminator,
            "generator": {"name": "gan.generator.dcgan",
                          "options": {"latent_dim": 4, "output_shape": shape, "channels": [8, 4]}},
        },
        "optimizers": {"descriptor": {"name": "adam", "lr": 2e-3, "betas": [0.0, 0.99]},
                       "generator": {"name": "adam", "lr": 2e-3, "betas": [0.0, 0.99]}},
        "objective": {"name": objective, "options": options},
    }


DCGAN_D = {"name": "gan.discriminator.dcgan", "options": {"input_shape": [3, 8, 8], "channels": [4, 8]}}
STYLEGAN2_D_SN = {"name": "coopinit.discriminator.stylegan2",
                  "options": {"resolution": 8, "channel_base": 64, "channel_max": 8, "mbstd_group_size": 2,
                              "spectral_norm": True}}


def _run(objective: str, options: dict, discriminator: dict = DCGAN_D, steps: int = 2) -> tuple[list[dict], dict]:
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    reg = get_registries()
    resolved = resolve_data(_recipe(objective, options, discriminator), registries=reg)
    torch.manual_seed(0)
    return step_on_first_examples(build_experiment(resolved, torch.device("cpu"), registries=reg), 4, steps)


@pytest.mark.parametrize("objective,extra", [("gan", {}), ("coopinit", {"n_coop": 0})])
def test_zcr_off_in_the_objectives_is_bit_identical(objective, extra):
    base, state = _run(objective, {"r1_gamma": 0.5, "g_ema_kimg": 0.0, **extra})
    off, state_off = _run(objective, {"r1_gamma": 0.5, "g_ema_kimg": 0.0, **extra,
                                      "zcr": {"weight_dis": 0.0, "weight_gen": 0.0, "noise_std": 0.5}})
    assert all(a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(base, off))
    assert "zcr_d" not in base[0] and state == state_off


@pytest.mark.parametrize("objective,extra", [("gan", {}), ("coopinit", {"n_coop": 0})])
def test_zcr_on_logs_its_terms(objective, extra):
    on, _ = _run(objective, {"g_ema_kimg": 0.0, **extra,
                             "zcr": {"weight_dis": 5.0, "weight_gen": 0.5, "noise_std": 0.03}})
    off, _ = _run(objective, {"g_ema_kimg": 0.0, **extra})
    for s in on:
        assert s["zcr_d"] >= 0 and s["zcr_g"] <= 0 and all(torch.isfinite(v) for v in s.values())
    assert torch.equal(on[0]["loss_d"], off[0]["loss_d"])  # the first adversarial loss is before any zCR step
    assert not torch.equal(on[1]["loss_d"], off[1]["loss_d"])


def test_table6_combinations_run_on_the_stylegan2_discriminator():
    """Table 6's rows on the StyleGAN2 discriminator: + R1 (non-lazy), + R1 + SN, + R1 + zCR."""
    r1 = {"r1_gamma": 0.01, "r1_interval": 1, "g_ema_kimg": 0.0}
    for options, d in [(r1, STYLEGAN2_D_SN),
                       ({**r1, "zcr": {"weight_dis": 5.0, "weight_gen": 0.5}}, {**STYLEGAN2_D_SN, "options": {
                           **STYLEGAN2_D_SN["options"], "spectral_norm": False}})]:
        scalars, _ = _run("gan", options, d, steps=2)
        assert all(torch.isfinite(v).all() for s in scalars for v in s.values())
        assert all(s["r1"] > 0 for s in scalars)  # non-lazy: R1 at every D update


@pytest.mark.parametrize("name", ["gan", "coopinit"])
def test_contract_with_zcr_on(monkeypatch, name):
    """The registry's objective contract (reproducible, resumes bit-exactly) with zCR on; for
    `coopinit` the run crosses from the cooperative to the adversarial stage."""
    cls = {"gan": Gan, "coopinit": CoopInit}[name]
    example = copy.deepcopy(cls.contract_example)
    example["options"] = {**example["options"], "zcr": {"weight_dis": 5.0, "weight_gen": 0.5, "noise_std": 0.03}}
    monkeypatch.setattr(cls, "contract_example", example)
    check_objective(get_registries(), name, torch.device("cpu"))


def test_contract_with_sn_discriminator(monkeypatch):
    example = copy.deepcopy(Gan.contract_example)
    example["models"] = {**example["models"], "descriptor": STYLEGAN2_D_SN}
    monkeypatch.setattr(Gan, "contract_example", example)
    check_objective(get_registries(), "gan", torch.device("cpu"))


# --- non-lazy R1 ------------------------------------------------------------------------------
def test_r1_interval_1_is_non_lazy_r1():
    """r1_interval = 1 (the default; CoopInit's model-analysis tables, Table 6 included): R1 at
    every discriminator update with factor 1, i.e. exactly gamma / 2 * ||grad D(x_real)||^2."""
    assert GanOptions().r1_interval == 1
    torch.manual_seed(0)
    d = LinearD(5)
    x = torch.randn(4, 5)
    for step in range(4):
        pen = lazy_r1_penalty(d.score, x, step, gamma=0.01, interval=1)
        assert pen is not None and torch.equal(pen, r1_penalty(d.score, x, gamma=0.01))
    # D(x) = w.x: ||grad||^2 = ||w||^2 for every example
    assert torch.allclose(r1_penalty(d.score, x, gamma=0.01), 0.005 * d.w.detach().pow(2).sum())
