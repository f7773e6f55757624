"""Adaptive discriminator augmentation (`coop_gan.ada`): the `bgc` pipeline's transforms
(differentiable, range, identity at p = 0), the p controller's rule, ADA inside the `gan` and
`coopinit` objectives (off by default; on: p logged, checkpointed, rising when the discriminator
overfits a tiny real set)."""
from __future__ import annotations

import copy
import io

import pytest
import torch

from coop_gan.ada import (
    BGC,
    BGC_TRANSFORMS,
    AdaController,
    AdaOptions,
    AugmentSpec,
    augment_images,
)
from coop_gan.coopinit import CoopInit
from coop_gan.objective import Gan
from coopcore import Batch
from coopcore.config import ConfigError, structure
from coopcore.contract import check_objective
from coopcore.plugin_manager import load_registries

from conftest import step_on_first_examples

GEOMETRIC = BGC_TRANSFORMS[:7]
COLOUR = BGC_TRANSFORMS[7:]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _images(n: int = 6, c: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, c, size, size), generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _only(name: str) -> AugmentSpec:
    return AugmentSpec(**{name: 1.0})


# --- the pipeline --------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", BGC_TRANSFORMS)
def test_each_transform_is_differentiable_and_changes_images(name, channels):
    if name in ("hue", "saturation") and channels == 1:
        pytest.skip("hue and saturation act on colour images only (as in StyleGAN2-ADA)")
    x = _images(c=channels).requires_grad_(True)
    y = augment_images(x, 1.0, torch.Generator().manual_seed(1), _only(name))
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.equal(y, x), f"{name} at p = 1 changed nothing"
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    (grad,) = torch.autograd.grad((y * weights).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, f"no gradient reaches the input through {name}"


@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometric_transforms_keep_the_range(name):
    """Bilinear resampling with reflection padding: each output pixel is a convex combination of
    input pixels, so [-1, 1] (indeed [min, max] of the input) is kept exactly."""
    x = _images(n=16)
    x[:, :, 0, 0], x[:, :, -1, -1] = -1.0, 1.0  # the extremes sit on the border
    y = augment_images(x, 1.0, torch.Generator().manual_seed(3), _only(name))
    assert y.min() >= -1.0 and y.max() <= 1.0


@pytest.mark.parametrize("name", COLOUR)
def test_colour_transforms_leave_the_range_unless_clamped(name):
    """The colour transforms are affine maps of the values (StyleGAN2-ADA's, unclamped);
    `clamp` bounds the output to [-1, 1], gradients stay finite."""
    x = _images(n=32, seed=4)
    x[:, :, 0, 0], x[:, :, -1, -1] = -1.0, 1.0
    y = augment_images(x, 1.0, torch.Generator().manual_seed(5), _only(name))
    assert y.abs().max() > 1.0  # documented: not clamped by default
    xc = x.clone().requires_grad_(True)
    yc = augment_images(xc, 1.0, torch.Generator().manual_seed(5), _only(name), clamp=True)
    assert yc.min() >= -1.0 and yc.max() <= 1.0
    (grad,) = torch.autograd.grad(yc.sum(), xc)
    assert torch.isfinite(grad).all()


def test_pipeline_is_identity_at_p0_and_changes_images_at_p1():
    x = _images().requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert augment_images(x, 0.0, gen, BGC) is x
    assert torch.equal(gen.get_state(), state)  # no random numbers drawn at p = 0
    y = augment_images(x, 1.0, gen, BGC)
    assert (y - x).flatten(1).abs().amax(1).gt(0).all()  # every image changed
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.isfinite(grad).all()


def test_unselected_images_pass_untouched_and_draws_are_reproducible():
    x = _images(n=64)
    y = augment_images(x, 0.05, torch.Generator().manual_seed(7), BGC)
    same = (y == x).flatten(1).all(1)
    assert same.any() and not same.all()  # at small p most images are left exactly as they were
    assert torch.equal(y, augment_images(x, 0.05, torch.Generator().manual_seed(7), BGC))


def test_blit_transforms_move_whole_pixels():
    """x-flip, 90-degree rotations and integer translations only permute/reflect pixels."""
    x = _images(n=16, c=1)
    spec = AugmentSpec(xflip=1.0, rotate90=1.0, xint=1.0)
    y = augment_images(x, 1.0, torch.Generator().manual_seed(8), spec)
    for a, b in zip(x, y):
        assert all(bool(torch.isclose(a, v, atol=1e-5).any()) for v in b.flatten()[:20])


def test_rotation_probability_is_either_pre_or_post():
    """P(pre or post rotation) = p: with p = 0.5, about half the images rotate."""
    x = _images(n=400, c=1, size=8)
    y = augment_images(x, 0.5, torch.Generator().manual_seed(9), _only("rotate"))
    rotated = (y != x).flatten(1).any(1).float().mean().item()
    assert 0.42 < rotated < 0.58


# --- the controller ------------------------------------------------------------------------
def test_controller_rule_up_down_and_clamp():
    o = AdaOptions(augment="bgc", ada_target=0.6, ada_interval=4, ada_kimg=500.0)
    ctl = AdaController(o)
    batch = 16
    step = batch * 4 / 500_000
    positive, negative = torch.ones(batch), -torch.ones(batch)
    for k in range(1, 4):  # overfitting: every real scored positive, r_t = 1 > 0.6
        for i in range(4):
            assert ctl.p == pytest.approx((k - 1) * step)  # moves only at the end of an interval
            ctl.observe(positive, batch)
        assert ctl.p == pytest.approx(k * step)
    for _ in range(4 * 2):  # r_t = -1 < 0.6: back down
        ctl.observe(negative, batch)
    assert ctl.p == pytest.approx(step)
    for _ in range(4 * 5):  # clamped at 0
        ctl.observe(negative, batch)
    assert ctl.p == 0.0
    # r_t is the mean sign over the interval: 3 positive updates and 1 mixed one give 0.875
    for _ in range(3):
        ctl.observe(positive, batch)
    assert ctl.rt == 1.0
    ctl.observe(torch.cat([torch.ones(batch // 2), -torch.ones(batch // 2)]), batch)
    assert ctl.p == pytest.approx(step)


def test_controller_upper_bound_fixed_p_and_state():
    ctl = AdaController(AdaOptions(augment="bgc", ada_kimg=0.001, ada_interval=1, ada_p_max=1.0))
    for _ in range(5):
        ctl.observe(torch.ones(8), 8)  # step 8 / 1 = 8 per update, bounded at 1
    assert ctl.p == 1.0
    fixed = AdaController(AdaOptions(augment="bgc", augment_p=0.3, augment_fixed=True, ada_interval=1))
    for _ in range(5):
        fixed.observe(torch.ones(8), 8)
    assert fixed.p == 0.3
    a = AdaController(AdaOptions(augment="bgc", ada_interval=4))
    for _ in range(6):
        a.observe(torch.ones(8), 8)
    b = AdaController(AdaOptions(augment="bgc", ada_interval=4))
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert b.state_dict() == a.state_dict() and b.p > 0
    for c in (a, b):
        c.observe(torch.ones(8), 8)
        c.observe(-torch.ones(8), 8)
    assert a.p == b.p


def test_options_table_is_validated():
    o = structure(AdaOptions, {"augment": "bgc", "ada_target": 0.6, "ada_interval": 4, "ada_kimg": 500})
    assert o.augment == "bgc"
    with pytest.raises(ConfigError):
        structure(AdaOptions, {"augment": "bgcfnc"})
    with pytest.raises(ConfigError):
        structure(AdaOptions, {"ada_interval": 0})


# --- in the objectives ---------------------------------------------------------------------
def _recipe(objective: str, options: dict, data: dict, seed: int = 0) -> dict:
    shape = [1, 16, 16]
    return {
        "run": {"name": "t", "seed": seed, "iterations": 4, "tensorboard": False},
        "data": data,
        "models": {
            "descriptor": {"name": "gan.discriminator.dcgan", "options": {"input_shape": shape, "channels": [16, 32]}},
            "generator": {"name": "gan.generator.dcgan",
                          "options": {"latent_dim": 8, "output_shape": shape, "channels": [16, 8]}},
        },
        "optimizers": {"descriptor": {"name": "adam", "lr": 2e-3, "betas": [0.5, 0.999]},
                       "generator": {"name": "adam", "lr": 2e-3, "betas": [0.5, 0.999]}},
        "objective": {"name": objective, "options": options},
    }


SYNTH = {"name": "synthetic", "batch_size": 6, "options": {"shape": [1, 16, 16], "n": 12}}


def _build(recipe: dict):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    reg = load_registries()
    resolved = resolve_data(recipe, registries=reg)
    torch.manual_seed(recipe["run"]["seed"])
    return build_experiment(resolved, torch.device("cpu"), registries=reg)


def _run(objective: str, options: dict, steps: int = 3) -> tuple[list[dict], dict]:
    return step_on_first_examples(_build(_recipe(objective, options, SYNTH)), 6, steps)


@pytest.mark.parametrize("objective,extra", [("gan", {}), ("coopinit", {"n_coop": 0})])
def test_ada_off_changes_nothing(objective, extra):
    """augment = "none" (the default, or written out with other ADA settings) gives the same
    numbers bit for bit, no `augment_p` scalar and no ADA state."""
    base, state = _run(objective, {"r1_gamma": 0.5, "g_ema_kimg": 0.0, **extra})
    off, state_off = _run(objective, {"r1_gamma": 0.5, "g_ema_kimg": 0.0, **extra,
                                      "ada": {"augment": "none", "augment_p": 0.5}})
    assert all(set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(base, off))
    assert "augment_p" not in base[0] and "ada" not in state and state == state_off


def test_ada_on_logs_p_and_uses_the_pipeline():
    on, state = _run("gan", {"r1_gamma": 0.5, "loss": "wgan_gp", "g_ema_kimg": 0.0,
                             "ada": {"augment": "bgc", "augment_p": 0.5, "augment_fixed": True}})
    off, _ = _run("gan", {"r1_gamma": 0.5, "loss": "wgan_gp", "g_ema_kimg": 0.0})
    assert all(s["augment_p"].item() == 0.5 for s in on)
    assert not torch.equal(on[0]["d_real"], off[0]["d_real"])  # D saw augmented reals
    assert state["ada"]["p"] == 0.5
    for s in on:
        assert all(torch.isfinite(v) for v in s.values())


@pytest.mark.parametrize("name", ["gan", "coopinit"])
def test_contract_with_ada_on(monkeypatch, name):
    """The registry's objective contract (reproducible, resumes bit-exactly from a checkpoint)
    with ADA adapting p from its first step."""
    cls = {"gan": Gan, "coopinit": CoopInit}[name]
    example = copy.deepcopy(cls.contract_example)
    ada = {"augment": "bgc", "augment_p": 0.2, "ada_interval": 1, "ada_kimg": 0.01}
    example["options"] = {**example["options"], "ada": ada}
    if name == "coopinit":
        example["options"]["n_coop"] = 0  # the 2-D toy cannot be augmented: adversarial images only
        example["data"] = {"name": "synthetic", "batch_size": 4, "options": {"shape": [3, 8, 8], "n": 8}}
        example["models"] = Gan.contract_example["models"]
        langevin = ("eta", "langevin_steps", "noise_scale")
        example["options"] = {k: v for k, v in example["options"].items() if k not in langevin}
    monkeypatch.setattr(cls, "contract_example", example)
    check_objective(load_registries(), name, torch.device("cpu"))


def test_p_survives_a_checkpoint():
    options = {"g_ema_kimg": 0.0, "ada": {"augment": "bgc", "ada_interval": 2, "ada_kimg": 0.01}}
    exp = _build(_recipe("gan", options, SYNTH))
    x = exp.dataset.get_batch(torch.arange(6))
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        exp.objective.step(Batch(x=x, index=torch.arange(6)), gen)
    state = exp.objective.state_dict()
    assert state["ada"]["updates"] == 1 and state["ada"]["p"] > 0  # mid-interval
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    other = _build(_recipe("gan", options, SYNTH))
    other.objective.load_state_dict(torch.load(buf, weights_only=True))
    assert other.objective.state_dict() == state
    assert other.objective.adversarial.ada.p == exp.objective.adversarial.ada.p


def test_p_rises_when_the_discriminator_overfits_a_tiny_set():
    """16 digits, a discriminator that soon scores every real positive (r_t > 0.6): p climbs at
    nearly every adjustment.  ada_kimg is scaled down (2 instead of 500) so that the rise shows within
    dozens of iterations rather than hundreds of thousands of images; the rule is the same.
    (Run longer, the augmentation makes D less sure of the reals and p settles and oscillates.)"""
    data = {"name": "digits", "batch_size": 16, "options": {"size": 16, "limit": 16}}
    options = {"g_ema_kimg": 0.0, "ada": {"augment": "bgc", "ada_kimg": 2.0, "ada_interval": 4}}
    exp = _build(_recipe("gan", options, data))
    x = exp.dataset.get_batch(torch.arange(16))
    gen = torch.Generator().manual_seed(0)
    ps, d_real = [], []
    for _ in range(40):
        s = exp.objective.step(Batch(x=x, index=torch.arange(16)), gen).scalars
        ps.append(s["augment_p"].item())
        d_real.append(s["d_real"].item())
    step = 16 * 4 / 2000
    assert ps[0] == 0.0 and sum(d > 0 for d in d_real[4:]) >= 30  # D scores the reals positive
    assert all(b >= a for a, b in zip(ps, ps[1:])), ps  # never lowered while D overfits
    # 10 adjustments: the first comes before D has pulled ahead (r_t < 0.6 at p = 0 keeps p at
    # 0); nearly all the others raise p by one step
    assert ps[-1] >= 8 * step - 1e-6, ps
