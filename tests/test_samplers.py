"""Langevin samplers against distributions whose moments are known in closed form."""
from __future__ import annotations

import torch

from coop_coopnets.samplers import Langevin, LangevinOptions
from coopcore import EnergyModelBase, generator_log_joint


class LinearScoreDescriptor(EnergyModelBase):
    """f(Y) = w . Y with a Gaussian reference N(0, s^2 I): the model is N(s^2 w, s^2 I)."""

    def __init__(self, w: torch.Tensor, s: float) -> None:
        super().__init__(tuple(w.shape), s)
        self.w = torch.nn.Parameter(w.clone())

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    mean = x.mean(0)
    xc = x - mean
    return mean, xc.T @ xc / (x.shape[0] - 1)


def test_revision_reaches_gaussian_of_descriptor():
    s = 0.5
    w = torch.tensor([2.0, -4.0, 1.0])
    d = LinearScoreDescriptor(w, s)
    sampler = Langevin(LangevinOptions(n_steps=400, step_size=0.1))
    gen = torch.Generator().manual_seed(0)
    init = torch.zeros(20000, 3)
    out = sampler.run(lambda y: -d.energy(y), init, gen)
    mean, cov = _moments(out.samples)
    expected_mean = (s**2 * w).double()
    # With step size delta the unadjusted chain's stationary variance is s^2 / (1 - delta^2/(4 s^2)).
    expected_var = s**2 / (1 - 0.1**2 / (4 * s**2))
    assert torch.allclose(mean, expected_mean, atol=0.02)
    assert torch.allclose(torch.diagonal(cov), torch.full((3,), expected_var, dtype=torch.double), rtol=0.05)
    assert torch.allclose(cov - torch.diag(torch.diagonal(cov)), torch.zeros(3, 3, dtype=torch.double), atol=0.01)
    # no parameter gradients are accumulated while sampling
    assert d.w.grad is None
    assert out.energies.shape == (400,) and out.grad_norms.shape == (400,)


def test_metropolis_adjusted_chain_is_exact_for_correlated_gaussian():
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.double)
    prec = torch.linalg.inv(cov).float()
    mu = torch.tensor([1.0, -2.0])

    def log_p(x):
        dx = x - mu
        return -0.5 * ((dx @ prec) * dx).sum(1)

    sampler = Langevin(LangevinOptions(n_steps=300, step_size=0.9, metropolis=True))
    out = sampler.run(log_p, torch.zeros(20000, 2), torch.Generator().manual_seed(1))
    mean, got = _moments(out.samples)
    assert torch.allclose(mean, mu.double(), atol=0.03)
    assert torch.allclose(got, cov, atol=0.04)  # the large step would bias an unadjusted chain
    assert 0.3 < float(out.acceptance) < 1.0


def test_mask_keeps_entries_fixed_and_noise_switch():
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(8, 1, 6, 6, generator=gen)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 2:4, 2:4] = 1.0
    sampler = Langevin(LangevinOptions(n_steps=5, step_size=0.3))
    out = sampler.run(lambda x: -0.5 * x.flatten(1).pow(2).sum(1), init, gen, mask=mask)
    keep = mask.expand_as(init) == 0
    assert torch.equal(out.samples[keep], init[keep])
    assert not torch.equal(out.samples[~keep], init[~keep])
    # noise off: deterministic gradient descent, x <- x (1 - delta^2/2) for a unit Gaussian
    gd = Langevin(LangevinOptions(n_steps=3, step_size=0.3, noise=False))
    res = gd.run(lambda x: -0.5 * x.flatten(1).pow(2).sum(1), init, torch.Generator())
    assert torch.allclose(res.samples, init * (1 - 0.045) ** 3, atol=1e-6)


def test_sampler_is_deterministic_under_seeded_generator():
    init = torch.zeros(4, 3)
    s = Langevin(LangevinOptions(n_steps=4, step_size=0.2))
    lp = lambda x: -0.5 * x.pow(2).sum(1)  # noqa: E731
    a = s.run(lp, init, torch.Generator().manual_seed(3)).samples
    b = s.run(lp, init, torch.Generator().manual_seed(3)).samples
    assert torch.equal(a, b)


def test_inference_matches_linear_gaussian_posterior():
    """Y = W X + b + eps: the posterior of X is N(Sigma W^T (y - b) / sigma^2, Sigma),
    Sigma = (I + W^T W / sigma^2)^-1 (TPAMI eq. 12 with a linear g)."""
    torch.manual_seed(0)
    d, D, sigma = 3, 5, 0.7
    W = torch.randn(D, d)
    b = torch.randn(D)
    lin = torch.nn.Linear(d, D)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b)
    y = torch.randn(1, D).expand(20000, D)
    sampler = Langevin(LangevinOptions(n_steps=600, step_size=0.08, metropolis=True))
    out = sampler.run(generator_log_joint(lin, y, sigma), torch.zeros(20000, d), torch.Generator().manual_seed(2))
    Wd, bd = W.double(), b.double()
    Sigma = torch.linalg.inv(torch.eye(d, dtype=torch.double) + Wd.T @ Wd / sigma**2)
    mu = Sigma @ Wd.T @ (y[0].double() - bd) / sigma**2
    mean, cov = _moments(out.samples)
    assert torch.allclose(mean, mu, atol=0.02)
    assert torch.allclose(cov, Sigma, atol=0.01)


def test_inference_with_observed_mask_ignores_unobserved_pixels():
    """With only some rows of Y observed the posterior is that of the observed rows alone."""
    torch.manual_seed(1)
    d, D, sigma = 2, 6, 0.5
    W = torch.randn(D, d)
    lin = torch.nn.Linear(d, D, bias=False)
    with torch.no_grad():
        lin.weight.copy_(W)
    observed = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    y = torch.randn(1, D)
    y_garbage = y.clone()
    y_garbage[:, 3:] = 100.0  # unobserved values must not matter
    y_garbage = y_garbage.expand(20000, D)
    sampler = Langevin(LangevinOptions(n_steps=600, step_size=0.1, metropolis=True))
    out = sampler.run(generator_log_joint(lin, y_garbage, sigma, observed), torch.zeros(20000, d),
                      torch.Generator().manual_seed(4))
    Wo = W[:3].double()
    Sigma = torch.linalg.inv(torch.eye(d, dtype=torch.double) + Wo.T @ Wo / sigma**2)
    mu = Sigma @ Wo.T @ y[0, :3].double() / sigma**2
    mean, cov = _moments(out.samples)
    assert torch.allclose(mean, mu, atol=0.02)
    assert torch.allclose(cov, Sigma, atol=0.01)


def test_clipping_respects_the_mask():
    init = torch.full((2, 4), 5.0)  # outside the clip range on purpose
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    s = Langevin(LangevinOptions(n_steps=2, step_size=0.1, clip=(-1.0, 1.0)))
    out = s.run(lambda x: -0.5 * x.pow(2).sum(1), init, torch.Generator().manual_seed(0), mask=mask)
    assert torch.equal(out.samples[:, 1], init[:, 1]) and torch.equal(out.samples[:, 3], init[:, 3])
    assert float(out.samples[:, [0, 2]].abs().max()) <= 1.0


def test_video_sample_grids_are_frame_strips():
    """A 5-D sample batch is drawn as one row of evenly spaced frames per video."""
    from coopcore.images import make_grid

    t = torch.linspace(-1, 1, 16).view(1, 1, 16, 1, 1).expand(2, 1, 16, 3, 3).clone()
    t[1] = -t[1]  # the second video runs backwards in brightness
    grid = make_grid(t, padding=1)
    assert grid.shape == (2 * 4 + 1, 8 * 4 + 1)  # 2 rows of 8 frames of 3x3, padding 1
    first_row = [int(grid[2, 2 + 4 * j]) for j in range(8)]
    second_row = [int(grid[6, 2 + 4 * j]) for j in range(8)]
    assert first_row == sorted(first_row) and first_row[0] == 0 and first_row[-1] == 255
    assert second_row == sorted(second_row, reverse=True)
