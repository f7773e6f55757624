"""The two baselines of TPAMI Tables 1 and 3 that the framework adds: WGAN with weight clipping
(`gan` objective, `weight_clip`) and the variational auto-encoder (`vae` objective).

- weight clipping: every discriminator parameter lies in [-c, c] after every discriminator
  step (checked before each of several D steps and at the end), only with the option on;
- VAE: the KL and reconstruction terms against torch.distributions, the single-sample ELBO
  against the exact log-likelihood of a linear-Gaussian model whose posterior the encoder
  represents exactly, the gradients reaching both networks, and a short training run on the
  embedded digits through the CLI whose loss falls.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from coopcore import Batch, Objective, Parts
from coopcore.plugin_manager import load_registries

from conftest import run_cli


# --- WGAN weight clipping ---------------------------------------------------------------------
def _gan(options: dict, seed: int = 0):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data

    recipe = {
        "run": {"name": "t", "seed": seed, "iterations": 4, "tensorboard": False},
        "data": {"name": "synthetic", "batch_size": 6, "options": {"shape": [1, 16, 16], "n": 12}},
        "models": {
            "descriptor": {"name": "gan.discriminator.dcgan", "options": {"input_shape": [1, 16, 16], "channels": [8, 16]}},
            "generator": {"name": "gan.generator.dcgan",
                          "options": {"latent_dim": 8, "output_shape": [1, 16, 16], "channels": [16, 8]}},
        },
        # a large learning rate pushes parameters far beyond c in one step when nothing clips them
        "optimizers": {"descriptor": {"name": "rmsprop", "lr": 5e-2}, "generator": {"name": "rmsprop", "lr": 5e-3}},
        "objective": {"name": "gan", "options": {"g_ema_kimg": 0.0, **options}},
    }
    reg = load_registries()
    torch.manual_seed(seed)
    exp = build_experiment(resolve_data(recipe, registries=reg), torch.device("cpu"), registries=reg)
    return exp.objective, exp.parts.models["descriptor"]


def _batch() -> Batch:
    x = torch.rand((6, 1, 16, 16), generator=torch.Generator().manual_seed(9)) * 2 - 1
    return Batch(x=x, index=torch.arange(6))


def _max_abs(module: nn.Module) -> float:
    return max(float(p.detach().abs().max()) for p in module.parameters())


def test_weight_clip_bounds_every_discriminator_parameter_after_every_step():
    c = 0.01
    obj, d = _gan({"loss": "wgan", "weight_clip": c, "d_steps": 3})
    assert _max_abs(d) > c  # the initial weights exceed c: the test can see a clip
    seen: list[float] = []
    # before each D optimiser step, record the parameters the previous D step left
    obj.adversarial.opt_d.register_step_pre_hook(lambda opt, args, kwargs: seen.append(_max_abs(d)))
    obj.step(_batch(), torch.Generator().manual_seed(0))
    obj.step(_batch(), torch.Generator().manual_seed(1))
    assert len(seen) == 6
    assert seen[0] > c  # the first step starts from the unclipped initial weights
    assert all(v <= c for v in seen[1:])  # every later D step starts from clipped weights
    assert _max_abs(d) <= c
    clipped = sum(int((p.detach().abs() == c).sum()) for p in d.parameters())
    assert clipped > 0  # some parameters sit on the bound: the clamp did something


def test_without_weight_clip_the_discriminator_is_not_clipped():
    obj, d = _gan({"loss": "wgan", "d_steps": 3})
    assert obj.options.weight_clip is None
    obj.step(_batch(), torch.Generator().manual_seed(0))
    assert _max_abs(d) > 0.01


@pytest.mark.parametrize("bad", [0.0, -0.01])
def test_weight_clip_must_be_positive(bad):
    from coop_gan.objective import GanOptions

    with pytest.raises(ValueError, match="weight_clip"):
        GanOptions(loss="wgan", weight_clip=bad)


def test_weight_clip_in_a_recipe_is_validated_with_the_key_path(tmp_path, capsys):
    code = run_cli(["train", "wgan-digits", "--out", tmp_path / "r", "--no-progress",
                    "--set", "objective.options.weight_clip=-1.0", "--set", "run.iterations=1"])
    assert code == 2
    assert "weight_clip" in capsys.readouterr().err


# --- VAE: closed forms ------------------------------------------------------------------------
def test_vae_terms_match_torch_distributions():
    from coop_triangle.vae import vae_terms

    g = torch.Generator().manual_seed(0)
    x = torch.randn((5, 1, 3, 3), generator=g, dtype=torch.float64)
    recon = torch.randn((5, 1, 3, 3), generator=g, dtype=torch.float64)
    mu = torch.randn((5, 4), generator=g, dtype=torch.float64)
    logvar = torch.randn((5, 4), generator=g, dtype=torch.float64)
    sigma = 0.7
    t = vae_terms(x, recon, mu, logvar, sigma)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    nll = -torch.distributions.Normal(recon, sigma).log_prob(x).flatten(1).sum(1).mean()
    assert torch.allclose(t["kl"], kl, rtol=1e-12)
    assert torch.allclose(t["recon"] + t["log_norm"], nll, rtol=1e-12)
    # the reconstruction term alone is the sum of squares over 2 sigma^2, per example
    assert math.isclose(float(t["recon"]), float((x - recon).pow(2).sum() / (2 * sigma**2) / 5), rel_tol=1e-12)
    # KL = 0 exactly at the prior
    zero = vae_terms(x, recon, torch.zeros_like(mu), torch.zeros_like(logvar), sigma)["kl"]
    assert float(zero) == 0.0


class _LinearDecoder(nn.Module):
    """g(z) = W z + b on a [1, 2, 2] image (D = 4), latent k = 2, Generator protocol."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, sigma: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), nn.Parameter(b.clone())
        self.latent_shape, self.output_shape, self.sigma = (2,), (1, 2, 2), sigma

    def sample_latent(self, n, generator=None):
        return torch.randn((n, 2), generator=generator, dtype=self.w.dtype)

    def forward(self, z):
        return (z @ self.w.T + self.b).view(-1, 1, 2, 2)


class _ExactEncoder(nn.Module):
    """The exact posterior of the linear-Gaussian model (diagonal because W's columns are
    orthogonal): Sigma = (I + W^T W / sigma^2)^-1, mu = Sigma W^T (x - b) / sigma^2."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor, sigma: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, dtype=w.dtype))  # a parameter, so it has an optimiser
        prec = torch.eye(2, dtype=w.dtype) + w.T @ w / sigma**2
        self.register_buffer("cov", torch.linalg.inv(prec))
        self.w, self.b, self.sigma = w, b, sigma
        self.input_shape, self.latent_shape = (1, 2, 2), (2,)

    def forward(self, x):
        r = x.flatten(1) - self.b
        mu = (r @ self.w / self.sigma**2) @ self.cov.T * self.scale
        logvar = torch.log(torch.diagonal(self.cov)).expand_as(mu)
        return mu, logvar


def _linear_vae(sigma: float = 0.5):
    from coop_triangle.vae import Vae, VaeOptions

    q, _ = torch.linalg.qr(torch.randn((4, 2), generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    w = q * torch.tensor([1.5, 0.8], dtype=torch.float64)  # orthogonal columns
    b = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    dec, enc = _LinearDecoder(w, b, sigma), _ExactEncoder(w, b, sigma)
    parts = Parts(models={"generator": dec, "encoder": enc}, samplers={},
                  optimizers={"generator": torch.optim.SGD(dec.parameters(), lr=1e-3),
                              "encoder": torch.optim.SGD(enc.parameters(), lr=1e-3)},
                  n_train=3, device=torch.device("cpu"), data_shape=(1, 2, 2))
    return Vae(VaeOptions(sigma=sigma), parts), w, b


def test_vae_elbo_equals_the_exact_log_likelihood_with_the_exact_posterior():
    """With q = the exact posterior, E_q[-ELBO] = -log p(x), p(x) = N(b, W W^T + sigma^2 I)."""
    vae, w, b = _linear_vae(sigma=0.5)
    x = torch.tensor([[0.4, -1.0, 0.7, 0.2], [-0.3, 0.5, 0.1, -0.8]], dtype=torch.float64)
    marginal = torch.distributions.MultivariateNormal(b, w @ w.T + 0.25 * torch.eye(4, dtype=torch.float64))
    exact = -marginal.log_prob(x).mean()
    n = 200_000
    xs = x.repeat(n // 2, 1).view(n, 1, 2, 2)
    eps = torch.randn((n, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        t = vae.terms(xs, eps)
    estimate = t["recon"] + t["kl"] + t["log_norm"]
    # Monte Carlo over eps: the per-example -ELBO has sd < 1 here, so 200k draws give ~2e-3
    assert abs(float(estimate) - float(exact)) < 1e-2, (float(estimate), float(exact))
    # and a wrong posterior (scaled mean) gives a strictly larger bound, as the ELBO must
    vae.encoder.scale.data.fill_(0.5)
    with torch.no_grad():
        t2 = vae.terms(xs, eps)
    assert float(t2["recon"] + t2["kl"] + t2["log_norm"]) > float(exact) + 0.05


def test_vae_step_updates_both_networks_and_reports_finite_scalars():
    vae, _, _ = _linear_vae()
    assert isinstance(vae, Objective)
    before_dec = [p.detach().clone() for p in vae.generator.parameters()]
    before_enc = [p.detach().clone() for p in vae.encoder.parameters()]
    x = torch.randn((6, 1, 2, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = vae.step(Batch(x=x, index=torch.arange(6)), torch.Generator().manual_seed(0))
    assert set(res.scalars) == {"loss", "neg_elbo", "recon", "kl", "recon_mse", "grad_norm_generator",
                                "grad_norm_encoder"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in res.scalars.values())
    assert math.isclose(float(res.scalars["loss"]), float(res.scalars["recon"] + res.scalars["kl"]), rel_tol=1e-12)
    assert all(not torch.equal(a, p) for a, p in zip(before_dec, vae.generator.parameters()))
    assert all(not torch.equal(a, p) for a, p in zip(before_enc, vae.encoder.parameters()))
    s = vae.samples(3, torch.Generator().manual_seed(2))
    assert set(s) == {"generator"} and s["generator"].shape == (3, 1, 2, 2)


def test_vae_refuses_mismatched_latents(tmp_path, capsys):
    code = run_cli(["train", "vae-digits", "--out", tmp_path / "r", "--no-progress", "--set", "run.iterations=1",
                    "--set", "models.encoder.options.latent_dim=5"])
    assert code == 2
    assert "latent" in capsys.readouterr().err


def test_vae_trains_on_digits(tmp_path):
    """The vae-digits recipe, shortened: the negative ELBO falls and the reconstructions improve."""
    out = tmp_path / "run"
    code = run_cli(["train", "vae-digits", "--out", out, "--no-progress", "--set", "run.iterations=60",
                    "--set", "run.log_every=1", "--set", "run.threads=1", "--set", "run.tensorboard=false",
                    "--set", "run.sample_every=0", "--set", "run.checkpoint_every=0"])
    assert code == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["neg_elbo"] for r in rows[:5]) / 5
    last = sum(r["neg_elbo"] for r in rows[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert sum(r["recon_mse"] for r in rows[-5:]) < sum(r["recon_mse"] for r in rows[:5])
