"""The shared numerical kernels of the core (`coopcore.langevin`, `coopcore.updates`,
`coopcore.layers`), each checked against an independent fact: known moments of Gaussian
targets, a closed-form Metropolis-Hastings acceptance rate, closed-form gradients, PyTorch's
actual layer output shapes, and the pre-refactor sampler implementations (written out below
once, as they were, as the second implementation the refactored samplers must match bit for bit).
"""
from __future__ import annotations

import math
from typing import Optional

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coopcore import (
    contrastive_update,
    conv_padding,
    grad_norm,
    init_normal,
    langevin_dynamics,
    log_density_and_grad,
    same_padding,
    transposed_conv_padding,
    transposed_conv_stride,
)


def _bits(t: Tensor) -> Tensor:
    """The raw bits of a float tensor (so -0.0 != 0.0 and NaN payloads count)."""
    return t.contiguous().view({torch.float32: torch.int32, torch.float64: torch.int64}[t.dtype])


def _bit_equal(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


def _gaussian(mean: Tensor, cov: Tensor):
    prec = torch.linalg.inv(cov)

    def log_p(x: Tensor) -> Tensor:
        d = x - mean
        return -0.5 * ((d @ prec) * d).sum(1)

    return log_p


# ---------------------------------------------------------------------------------------
# Langevin kernel: Gaussian targets with known moments
MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
# Eigenvalues 2.0 and 0.5 along (1, 1) / sqrt 2 and (1, -1) / sqrt 2.
COV = torch.tensor([[1.25, 0.75], [0.75, 1.25]], dtype=torch.float64)
H = 0.3  # drift; noise std sqrt(2 H), the Langevin discretisation
N_CHAINS = 8000


def _moments(x: Tensor) -> tuple[Tensor, Tensor]:
    m = x.mean(0)
    d = x - m
    return m, d.T @ d / (x.shape[0] - 1)


def _run_gaussian(metropolis: bool) -> tuple[Tensor, Optional[Tensor]]:
    init = torch.zeros(N_CHAINS, 2, dtype=torch.float64)  # far from the mean: burn-in is tested too
    out = langevin_dynamics(_gaussian(MEAN, COV), init, torch.Generator().manual_seed(0), n_steps=120,
                            drift=H, noise_std=math.sqrt(2 * H), metropolis=metropolis)
    return out.samples, out.acceptance


def test_mala_reaches_the_exact_moments():
    x, acceptance = _run_gaussian(metropolis=True)
    m, c = _moments(x)
    # Standard errors with 8000 independent chains: mean <= sqrt(2 / 8000) = 0.016,
    # covariance entries <= 2 sqrt(2 / 8000) = 0.032; tolerances are about 4 of them.
    assert torch.allclose(m, MEAN, atol=0.07), m
    assert torch.allclose(c, COV, atol=0.12), c
    assert acceptance is not None and 0.3 < float(acceptance) < 1.0


def test_unadjusted_langevin_has_the_known_discretisation_bias():
    x, acceptance = _run_gaussian(metropolis=False)
    assert acceptance is None
    # x' - mu = A (x - mu) + s U with A = I - H Sigma^-1: the stationary covariance solves
    # S = A S A + s^2 I, i.e. S = s^2 (I - A^2)^-1 (A is symmetric and commutes with Sigma).
    a = torch.eye(2, dtype=torch.float64) - H * torch.linalg.inv(COV)
    s_exact = 2 * H * torch.linalg.inv(torch.eye(2, dtype=torch.float64) - a @ a)
    m, c = _moments(x)
    assert torch.allclose(m, MEAN, atol=0.07), m
    assert torch.allclose(c, s_exact, atol=0.12), (c, s_exact)
    # ... which is visibly not Sigma at this step size (the small eigenvalue 0.5 becomes 0.71).
    assert (s_exact - COV).abs().max() > 0.15
    assert (c - COV).abs().max() > 0.1


def test_mh_acceptance_of_random_walk_metropolis_is_the_closed_form():
    # drift 0 turns the kernel into random-walk Metropolis; on N(0, 1), started in stationarity,
    # with proposal std s the acceptance rate is (2 / pi) arctan(2 / s).
    gen = torch.Generator().manual_seed(1)
    for s in (0.5, 2.4):
        init = torch.randn(20000, 1, generator=gen, dtype=torch.float64)
        out = langevin_dynamics(lambda x: -0.5 * x.pow(2).sum(1), init, gen, n_steps=20, drift=0.0, noise_std=s,
                                metropolis=True)
        expected = 2 / math.pi * math.atan(2 / s)
        # Standard error about sqrt(0.25 / 400000) < 0.001 (the steps are correlated: generous).
        assert abs(float(out.acceptance) - expected) < 0.006, (s, float(out.acceptance), expected)
        assert abs(float(out.samples.var()) - 1.0) < 0.05


def test_mh_accepts_every_exact_independent_proposal():
    # drift = sigma^2 and noise std sigma on N(mu, sigma^2) propose x' ~ N(mu, sigma^2), the target
    # itself, independently of x: the Metropolis-Hastings ratio is exactly 1.
    mu, sigma = 0.7, 1.3
    init = torch.randn(500, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    log_p = lambda x: -0.5 * ((x - mu) / sigma).pow(2).sum(1)  # noqa: E731
    out = langevin_dynamics(log_p, init, torch.Generator().manual_seed(3), n_steps=5, drift=sigma**2,
                            noise_std=sigma, metropolis=True)
    assert float(out.acceptance) == 1.0


def test_gradient_ascent_without_noise_and_diagnostics():
    # noise_std 0: x <- x + h * grad log p, on log p = -||x - 3||^2 / 2: x_t - 3 = (1 - h)^t (x_0 - 3).
    init = torch.tensor([[0.0, 1.0], [5.0, 3.0]], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    out = langevin_dynamics(lambda x: -0.5 * (x - 3).pow(2).sum(1), init, gen, n_steps=4, drift=0.25, noise_std=0.0)
    assert torch.allclose(out.samples, 3 + 0.75**4 * (init - 3))
    assert torch.equal(gen.get_state(), state)  # no random numbers without noise
    assert out.energies.shape == (4,) and out.grad_norms.shape == (4,) and out.acceptance is None
    assert torch.allclose(out.energies[0], 0.5 * (init - 3).pow(2).sum(1).mean())
    assert torch.allclose(out.grad_norms[0], (init - 3).norm(dim=1).mean())
    empty = langevin_dynamics(lambda x: x.sum(1), init, gen, n_steps=0, drift=1.0, noise_std=1.0)
    assert torch.equal(empty.samples, init) and empty.energies.numel() == 0


def test_kernel_consumes_the_generator_in_the_documented_order():
    # Per step: randn(x.shape), then (with MH) rand(B).  Replaying the draws reproduces the chain.
    init = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    log_p = lambda x: -x.pow(2).sum(1) + x[:, 0]  # noqa: E731
    h, s = 0.1, 0.4
    gen = torch.Generator().manual_seed(7)
    out = langevin_dynamics(log_p, init, gen, n_steps=3, drift=h, noise_std=s, metropolis=True)
    replay = torch.Generator().manual_seed(7)
    x = init.clone()
    for _ in range(3):
        lp, g = log_density_and_grad(log_p, x)
        prop = x + h * g + torch.randn(x.shape, generator=replay) * s
        lp2, g2 = log_density_and_grad(log_p, prop)
        log_q_back = -(x - prop - h * g2).pow(2).sum(1) / (2 * s**2)
        log_q_fwd = -(prop - x - h * g).pow(2).sum(1) / (2 * s**2)
        accept = torch.log(torch.rand(4, generator=replay)) < lp2 - lp + log_q_back - log_q_fwd
        x = torch.where(accept[:, None], prop, x)
    assert torch.allclose(out.samples, x, atol=1e-6)
    assert torch.equal(gen.get_state(), replay.get_state())


def test_masked_entries_stay_bit_identical_and_clipping_holds():
    init = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    init[0, 0, 0, 0] = -0.0  # a signed zero must survive as such
    init[1, 1, 2, 2] = 7.5  # outside the clipping range: kept entries are not clipped
    mask = (torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    mask[0, 0, 0, 0] = 0.0
    mask[1, 0, 2, 2] = 0.0
    mask[2, 0, 1, 1] = -1.0  # <= 0 also means keep
    lin = nn.Linear(32, 1)
    log_p = lambda x: lin(x.flatten(1)).squeeze(1) - x.flatten(1).pow(2).sum(1)  # noqa: E731
    keep = (mask <= 0).expand_as(init)
    out = langevin_dynamics(log_p, init, torch.Generator().manual_seed(2), n_steps=6, drift=0.05, noise_std=0.3,
                            mask=mask, clip=(-1.0, 1.0))
    assert torch.equal(_bits(out.samples[keep]), _bits(init[keep]))
    moved = out.samples[~keep]
    assert moved.min() >= -1.0 and moved.max() <= 1.0 and (moved != init[~keep]).all()
    # With MH (no clipping: the proposal densities ignore it) rejected chains stay whole.
    out = langevin_dynamics(log_p, init, torch.Generator().manual_seed(2), n_steps=6, drift=0.005, noise_std=0.1,
                            mask=mask, metropolis=True)
    assert torch.equal(_bits(out.samples[keep]), _bits(init[keep]))
    assert 0 < float(out.acceptance) <= 1 and (out.samples[~keep] != init[~keep]).float().mean() > 0.3
    assert all(p.grad is None for p in lin.parameters())  # input gradients only


def test_kernel_takes_input_gradients_only_and_leaves_init_alone():
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
    init = torch.randn(4, 5, requires_grad=True)
    before = init.detach().clone()
    out = langevin_dynamics(lambda x: net(x).squeeze(1), init, torch.Generator().manual_seed(0), n_steps=3,
                            drift=0.1, noise_std=0.1, metropolis=True)
    assert all(p.grad is None for p in net.parameters())
    assert init.grad is None and torch.equal(init.detach(), before)
    assert not out.samples.requires_grad and out.samples.grad_fn is None
    assert out.energies.device == init.device and not out.energies.requires_grad


# ---------------------------------------------------------------------------------------
# The samplers before the refactor, as they were: the second implementation to match bitwise.
def _old_value_and_grad(log_density, x):
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = log_density(xg)
        (grad,) = torch.autograd.grad(lp.sum(), xg)
    return lp.detach(), grad


def _old_coopnets_langevin(log_density, init, generator, mask, n_steps, step_size, noise, noise_scale, clip,
                           metropolis):
    x = init.detach().clone()
    m = None if mask is None else mask.to(dtype=x.dtype, device=x.device)
    h = 0.5 * step_size**2
    sd = step_size * noise_scale if noise else 0.0
    energies, norms, accepts = [], [], []
    use_mh = metropolis and sd > 0
    lp = grad = None
    for _ in range(n_steps):
        if lp is None or grad is None:
            lp, grad = _old_value_and_grad(log_density, x)
        energies.append(-lp.mean())
        norms.append(grad.flatten(1).norm(dim=1).mean())
        drift = h * grad
        if m is not None:
            drift = drift * m
        proposal = x + drift
        if sd > 0:
            noise_t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * sd
            proposal = proposal + (noise_t if m is None else noise_t * m)
        if clip is not None:
            proposal = proposal.clamp(clip[0], clip[1])
            if m is not None:
                proposal = torch.where(m > 0, proposal, x)
        if use_mh:
            lp_new, grad_new = _old_value_and_grad(log_density, proposal)

            def log_q(to, frm, g):
                d = to - frm - h * g
                if m is not None:
                    d = d * m
                return -d.flatten(1).pow(2).sum(1) / (2.0 * sd**2)

            log_alpha = lp_new - lp + log_q(x, proposal, grad_new) - log_q(proposal, x, grad)
            u = torch.rand(lp.shape, generator=generator, device=lp.device, dtype=lp.dtype)
            accept = torch.log(u) < log_alpha
            a = accept.view(-1, *([1] * (x.dim() - 1)))
            x, lp, grad = torch.where(a, proposal, x), torch.where(accept, lp_new, lp), torch.where(a, grad_new, grad)
            accepts.append(accept.to(x.dtype).mean())
        else:
            x, lp, grad = proposal, None, None
    return x, torch.stack(energies), torch.stack(norms), torch.stack(accepts).mean() if accepts else None


def _old_multigrid_langevin(log_density, init, generator, mask, n_steps, step_size, noise, clip):
    x = init.detach().clone()
    keep = None if mask is None else (mask.to(device=x.device) <= 0).expand_as(x)
    kept = None if keep is None else x.clone()
    h = 0.5 * step_size**2
    energies, norms = [], []
    for _ in range(n_steps):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            lp = log_density(xg)
            (grad,) = torch.autograd.grad(lp.sum(), xg)
        energies.append(-lp.detach().mean())
        norms.append(grad.flatten(1).norm(dim=1).mean())
        x = x + h * grad
        if noise:
            x = x + step_size * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if clip is not None:
            x = x.clamp(clip[0], clip[1])
        if keep is not None:
            x = torch.where(keep, kept, x)
        x = x.detach()
    return x, torch.stack(energies), torch.stack(norms)


def _old_langevin_revision(score, init, eta, n_steps, noise_std, generator):
    x = init.detach().clone()
    scores, norms = [], []
    for _ in range(n_steps):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = score(xg)
            (grad,) = torch.autograd.grad(s.sum(), xg)
        scores.append(s.detach().mean())
        norms.append(grad.flatten(1).norm(dim=1).mean())
        x = x + eta * grad
        if noise_std > 0:
            x = x + noise_std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x.detach(), torch.stack(scores), torch.stack(norms)


def _net_log_p():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(4 * 16, 1))
    return lambda x: net(x).squeeze(1) - 0.5 * x.flatten(1).pow(2).sum(1)


_X0 = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
_MASKS = {"none": None, "binary": (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(2)) > 0.4).float()}


@pytest.mark.parametrize("mask", list(_MASKS))
@pytest.mark.parametrize("opts", [
    {}, {"noise": False}, {"noise_scale": 0.3}, {"clip": (-0.6, 0.6)}, {"metropolis": True, "step_size": 0.6},
    {"metropolis": True, "step_size": 0.4},
])  # (metropolis with clip is refused by LangevinOptions: the correction assumes no clipping)
def test_coopnets_langevin_is_bitwise_the_pre_refactor_sampler(mask, opts):
    from coop_coopnets.samplers import Langevin, LangevinOptions

    full = {"n_steps": 5, "step_size": 0.3, "noise": True, "noise_scale": 1.0, "clip": None, "metropolis": False, **opts}
    log_p, m = _net_log_p(), _MASKS[mask]
    new = Langevin(LangevinOptions(**full)).run(log_p, _X0, torch.Generator().manual_seed(3), mask=m)
    old = _old_coopnets_langevin(log_p, _X0, torch.Generator().manual_seed(3), m, **full)
    for a, b in zip((new.samples, new.energies, new.grad_norms, new.acceptance), old):
        assert _bit_equal(a, b)


@pytest.mark.parametrize("mask", ["none", "binary", "bool"])
@pytest.mark.parametrize("opts", [{}, {"noise": False}, {"clip": (-0.6, 0.6)}])
def test_multigrid_langevin_is_bitwise_the_pre_refactor_sampler(mask, opts):
    from coop_multigrid.sampler import MultigridLangevin, MultigridLangevinOptions

    full = {"n_steps": 5, "step_size": 0.3, "noise": True, "clip": None, **opts}
    m = _MASKS["binary"].bool() if mask == "bool" else _MASKS[mask]
    log_p = _net_log_p()
    new = MultigridLangevin(MultigridLangevinOptions(**full)).run(log_p, _X0, torch.Generator().manual_seed(3), mask=m)
    old = _old_multigrid_langevin(log_p, _X0, torch.Generator().manual_seed(3), m, **full)
    assert new.acceptance is None
    for a, b in zip((new.samples, new.energies, new.grad_norms), old):
        assert _bit_equal(a, b)


@pytest.mark.parametrize(("eta", "noise_std"), [(0.1, 0.0), (0.05, 0.2), (1.0, math.sqrt(2.0))])
def test_coopinit_revision_is_bitwise_the_pre_refactor_eq4(eta, noise_std):
    from coop_gan.coopinit import langevin_revision

    log_p = _net_log_p()
    new = langevin_revision(log_p, _X0, eta, 4, noise_std, torch.Generator().manual_seed(5))
    old = _old_langevin_revision(log_p, _X0, eta, 4, noise_std, torch.Generator().manual_seed(5))
    for a, b in zip(new, old):
        assert _bit_equal(a, b)


# ---------------------------------------------------------------------------------------
# updates
def test_grad_norm_is_the_closed_form_gradient_norm():
    lin = nn.Linear(4, 3)
    a, c = torch.randn(3, 4), torch.randn(3)
    ((lin.weight * a).sum() + (lin.bias * c).sum()).backward()  # d/dW = a, d/db = c
    assert torch.allclose(grad_norm(lin), torch.sqrt(a.pow(2).sum() + c.pow(2).sum()))
    assert float(grad_norm(nn.Linear(2, 2))) == 0.0  # no gradients yet


class _LinearScore(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(d))

    def score(self, x: Tensor) -> Tensor:
        return x @ self.w


def test_contrastive_update_moves_the_score_by_the_moment_difference():
    # f(x) = w . x and loss = mean f(syn) - mean f(obs): dloss/dw = mean(syn) - mean(obs).
    model = _LinearScore(3)
    w0 = model.w.detach().clone()
    obs, syn = torch.randn(6, 3), torch.randn(4, 3, requires_grad=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, f_obs, f_syn = contrastive_update(model, opt, obs, syn)
    assert torch.allclose(loss, (syn @ w0).mean() - (obs @ w0).mean())
    assert torch.allclose(f_obs, obs @ w0) and torch.allclose(f_syn, syn.detach() @ w0)
    assert torch.allclose(model.w.detach(), w0 - 0.5 * (syn.detach().mean(0) - obs.mean(0)))
    assert syn.grad is None and not loss.requires_grad


# ---------------------------------------------------------------------------------------
# layers
def test_padding_formulas_give_the_actual_output_sizes():
    checked = 0
    for size_in in (1, 2, 3, 7, 8):
        x = torch.zeros(1, 1, size_in, size_in)
        for k in (1, 2, 3, 4):
            w = torch.zeros(1, 1, k, k)
            for s in (1, 2, 3):
                before, after, out = same_padding(size_in, k, s)
                y = F.conv2d(F.pad(x, (before, after, before, after)), w, None, s)
                assert y.shape[-1] == out == math.ceil(size_in / s) and 0 <= after - before <= 1
                for size_out in range(1, 3 * size_in + 4):
                    try:
                        p, op = transposed_conv_padding(size_in, size_out, k, s)
                    except ValueError:
                        # no padding p >= 0, output padding in [0, s) solves the size equation
                        assert all((size_in - 1) * s - 2 * p + k + op != size_out
                                   for p in range(size_in * s + k) for op in range(s))
                    else:
                        assert F.conv_transpose2d(x, w, None, s, p, op).shape[-1] == size_out
                        checked += 1
                    if size_out <= size_in:
                        try:
                            p = conv_padding(size_in, size_out, k, s)
                        except ValueError:
                            assert all(size_in + 2 * p < k or (size_in + 2 * p - k) // s + 1 != size_out for p in range(k))
                        else:
                            assert F.conv2d(x, w, None, s, p).shape[-1] == size_out
                            assert not any(size_in + 2 * q >= k and (size_in + 2 * q - k) // s + 1 == size_out
                                           for q in range(p))  # the smallest
    assert checked > 100
    assert transposed_conv_stride(1, 4) == 1 and transposed_conv_stride(4, 7) == 2 and transposed_conv_stride(7, 14) == 2
    assert transposed_conv_stride(4, 4) == 1 and transposed_conv_stride(3, 10) == 4


def test_init_normal_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(300, 400), nn.BatchNorm1d(20000), nn.Conv2d(64, 64, 5), nn.BatchNorm2d(8, affine=False))
    init_normal(net, 0.02)
    lin, bn, conv = net[0], net[1], net[2]
    for w in (lin.weight.detach(), conv.weight.detach()):
        assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) / 0.02 - 1) < 0.02
    assert torch.equal(lin.bias, torch.zeros(400)) and torch.equal(conv.bias, torch.zeros(64))
    assert torch.equal(bn.weight, torch.ones(20000)) and torch.equal(bn.bias, torch.zeros(20000))
    init_normal(net, 0.02, norm_std=0.05)
    gamma = bn.weight.detach()
    assert abs(float(gamma.mean()) - 1) < 2e-3 and abs(float(gamma.std()) / 0.05 - 1) < 0.03
    before = {k: v.clone() for k, v in net.state_dict().items()}
    init_normal(net, None)  # None: PyTorch's defaults stay
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="init_std"):
        init_normal(net, 0.0)
