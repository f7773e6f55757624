"""The divergence-triangle objective: the Gaussian KL and NLL functions against closed forms and Monte Carlo,
the loss terms against closed forms on a linear-Gaussian toy (the public code's scalings), the
whole loss (13) and its gradients against the closed-form KL divergences between the three
joint Gaussians Q, P and Pi, learning on 2-D data, the multiple-step updates and one step with
the registered MNIST networks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coopcore import Batch, ConfigError, Encoder, EnergyModel, EnergyModelBase, Generator, GeneratorBase, Parts
from coopcore.config import structure
from coopcore.plugin_manager import get_registries


def _objective(models, lrs=(1e-3, 1e-3, 1e-3), n_train=100, data_shape=None, **options):
    regs = get_registries()
    assert regs.objective.get("triangle").owner == "triangle"
    opts = {role: torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.999))
            for (role, m), lr in zip(models.items(), lrs)}
    shape = data_shape or tuple(models["descriptor"].input_shape)
    parts = Parts(models=models, samplers={}, optimizers=opts, n_train=n_train, device=torch.device("cpu"),
                  data_shape=tuple(shape))
    entry = regs.objective.get("triangle")
    return regs.objective.create("triangle", entry.options(**options), parts=parts)


# ---------------------------------------------------------------------------------------
# Tiny models implementing the protocols.
class LinearEncoder(nn.Module):
    """q(z | x) = N(A x + b, diag(exp(c)))."""

    def __init__(self, d_in: int, d_z: int) -> None:
        super().__init__()
        self.input_shape = (d_in,)
        self.latent_shape = (d_z,)
        self.lin = nn.Linear(d_in, d_z)
        self.c = nn.Parameter(torch.linspace(-1.0, 0.5, d_z))

    def forward(self, x):
        mu = self.lin(x)
        return mu, self.c.expand_as(mu)


class MLPEncoder(nn.Module):
    def __init__(self, d_in: int, d_z: int, h: int = 32) -> None:
        super().__init__()
        self.input_shape = (d_in,)
        self.latent_shape = (d_z,)
        self.net = nn.Sequential(nn.Linear(d_in, h), nn.LeakyReLU(0.2), nn.Linear(h, 2 * d_z))

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


class MLPGenerator(GeneratorBase):
    def __init__(self, d_z: int, d_out: int, h: int = 32, linear: bool = False, sigma: float = math.sqrt(0.5)) -> None:
        super().__init__((d_z,), (d_out,), sigma=sigma)
        self.net = nn.Linear(d_z, d_out) if linear else nn.Sequential(
            nn.Linear(d_z, h), nn.LeakyReLU(0.2), nn.Linear(h, d_out))

    def forward(self, z):
        return self.net(z)


class MLPEBM(EnergyModelBase):
    def __init__(self, d: int, h: int = 32) -> None:
        super().__init__((d,), None)
        self.net = nn.Sequential(nn.Linear(d, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))

    def score(self, x):
        return -self.net(x).squeeze(1)


class QuadraticEBM(EnergyModelBase):
    """E(x) = (x - m)^T Lambda (x - m) / 2 with Lambda = L L^T + I/2: pi = N(m, Lambda^-1)."""

    def __init__(self, d: int) -> None:
        super().__init__((d,), None)
        self.m = nn.Parameter(torch.randn(d) * 0.3)
        self.L = nn.Parameter(torch.eye(d) * 0.8 + 0.1 * torch.randn(d, d))

    def precision(self):
        return self.L @ self.L.T + 0.5 * torch.eye(self.L.shape[0], dtype=self.L.dtype)

    def score(self, x):
        d = x - self.m
        return -0.5 * ((d @ self.precision()) * d).sum(1)


def test_tiny_models_implement_the_protocols():
    assert isinstance(MLPEncoder(2, 1), Encoder) and isinstance(LinearEncoder(2, 1), Encoder)
    assert isinstance(MLPGenerator(1, 2), Generator) and isinstance(MLPEBM(2), EnergyModel)
    assert isinstance(QuadraticEBM(2), EnergyModel)


# ---------------------------------------------------------------------------------------
def test_kl_and_nll_functions_match_closed_form_and_monte_carlo():
    from coop_triangle.losses import gaussian_kl_standard, gaussian_nll

    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    s = torch.rand(3, 4, generator=g, dtype=torch.float64) * 1.5 + 0.3
    logvar = torch.log(s**2)
    kl = gaussian_kl_standard(mu, logvar).sum(1)
    closed = 0.5 * (mu**2 + s**2 - 1 - torch.log(s**2)).sum(1)
    torch.testing.assert_close(kl, closed)
    # Monte Carlo: E_q[log q(z) - log N(z; 0, I)], z ~ q
    n = 200_000
    z = mu + s * torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    log_q = -gaussian_nll(z, mu, logvar).sum(-1)
    log_p = -gaussian_nll(z, torch.zeros_like(mu), torch.zeros_like(logvar)).sum(-1)
    mc = (log_q - log_p).mean(0)
    assert torch.allclose(mc, kl, atol=0.03), (mc, kl)
    # the NLL function is the Gaussian log-density
    ref = -torch.distributions.Normal(mu, s).log_prob(z[:5]).sum()
    torch.testing.assert_close(gaussian_nll(z[:5], mu, logvar).sum(), ref)


def test_loss_terms_with_the_code_scalings_equal_closed_forms_on_a_linear_gaussian_toy():
    """Defaults = the public code: R = sum ||x - G(z~)||^2 / batch, KL averaged over batch *and*
    latent dims, 0.1 x the per-example latent NLL (summed over dims) averaged over the batch."""
    torch.manual_seed(0)
    d_x, d_z, b = 3, 2, 5
    enc, gen = LinearEncoder(d_x, d_z).double(), MLPGenerator(d_z, d_x, linear=True).double()
    ebm = MLPEBM(d_x).double()
    obj = _objective({"descriptor": ebm, "generator": gen, "encoder": enc})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, d_x, generator=g, dtype=torch.float64)
    z = torch.randn(b, d_z, generator=g, dtype=torch.float64)
    eps = torch.randn(b, d_z, generator=g, dtype=torch.float64)
    x_gen = gen(z).detach()
    terms = obj.encoder_loss(x, z, x_gen, eps)

    A, a0 = enc.lin.weight.detach(), enc.lin.bias.detach()
    C, c0 = gen.net.weight.detach(), gen.net.bias.detach()
    s2 = enc.c.detach().exp()  # posterior variances
    mu = x @ A.T + a0
    kl_closed = 0.5 * (mu**2 + s2 - 1 - s2.log()).sum(1)  # per example
    torch.testing.assert_close(terms["kl"], kl_closed.mean() / d_z)
    z_post = mu + s2.sqrt() * eps
    recon_closed = ((x - (z_post @ C.T + c0)) ** 2).sum() / b
    torch.testing.assert_close(terms["recon"], recon_closed)
    # latent NLL of z under q(z | G(z)) = N(A G(z) + a0, diag s2), summed over dims
    m2 = x_gen @ A.T + a0
    nll_closed = 0.5 * ((z - m2) ** 2 / s2 + s2.log() + math.log(2 * math.pi))
    torch.testing.assert_close(terms["latent_nll"], nll_closed.sum(1).mean())
    torch.testing.assert_close(terms["loss"], recon_closed + kl_closed.mean() / d_z + 0.1 * nll_closed.sum(1).mean())
    # theta-step terms: same reconstruction, mean energy of G(z), the same latent NLL
    gt = obj.generator_loss(x, z, z_post)
    torch.testing.assert_close(gt["energy_gen"], ebm.energy(z @ C.T + c0).mean())
    torch.testing.assert_close(gt["loss"], recon_closed + gt["energy_gen"] + 0.1 * nll_closed.sum(1).mean())
    # "batch_mean" gives the per-example KL; recon_weight "sigma" = 1 / (2 sigma^2) = 1 for sigma^2 = 1/2
    obj2 = _objective({"descriptor": ebm, "generator": gen, "encoder": enc}, kl_reduction="batch_mean",
                      recon_weight="sigma")
    t2 = obj2.encoder_loss(x, z, x_gen, eps)
    torch.testing.assert_close(t2["kl"], kl_closed.mean())
    torch.testing.assert_close(t2["loss"], recon_closed + kl_closed.mean() + 0.1 * nll_closed.sum(1).mean())


# ---------------------------------------------------------------------------------------
# Eq. 13 against the closed-form KL divergences between joint Gaussians.
def _gauss_kl(m0, s0, m1, s1):
    s1i = torch.linalg.inv(s1)
    diff = m1 - m0
    return 0.5 * (torch.trace(s1i @ s0) + diff @ s1i @ diff - m0.numel() + torch.logdet(s1) - torch.logdet(s0))


def _closed_form_triangle(enc, gen, ebm, mu_d, sig_d):
    """D = KL(Q||P) + KL(P||Pi) - KL(Q||Pi) for Gaussian data, a linear-Gaussian generator, a
    linear-Gaussian inference model and a quadratic energy: all three joints are Gaussian on (z, x)."""
    A, a = enc.lin.weight, enc.lin.bias
    S = torch.diag(enc.c.exp())
    C, c0 = gen.net.weight, gen.net.bias
    d, D = A.shape
    eye_d, eye_D = torch.eye(d, dtype=A.dtype), torch.eye(D, dtype=A.dtype)

    def with_inference(mx, sx):  # x ~ N(mx, sx), z | x ~ q_phi
        cov = torch.cat([torch.cat([A @ sx @ A.T + S, A @ sx], 1), torch.cat([sx @ A.T, sx], 1)], 0)
        return torch.cat([A @ mx + a, mx]), cov

    mQ, sQ = with_inference(mu_d, sig_d)
    mPi, sPi = with_inference(ebm.m, torch.linalg.inv(ebm.precision()))
    mP = torch.cat([torch.zeros(d, dtype=A.dtype), c0])
    sP = torch.cat([torch.cat([eye_d, C.T], 1), torch.cat([C, C @ C.T + gen.sigma**2 * eye_D], 1)], 0)
    return _gauss_kl(mQ, sQ, mP, sP) + _gauss_kl(mP, sP, mPi, sPi) - _gauss_kl(mQ, sQ, mPi, sPi)


def test_loss_and_gradients_equal_eq13_from_closed_form_gaussian_kls():
    """With eq. 13's own scalings (recon 1/(2 sigma^2), per-example KL and NLL with weight 1, x~ a
    draw from p_theta(x|z)), the objective's terms are a Monte Carlo estimate of D up to the
    constant -D_x/2 - (d/2) log(2 pi e), and their gradients estimate dD/dphi, dD/dtheta and
    -dD/dalpha (the alpha step ascends D)."""
    torch.manual_seed(0)
    d, D = 2, 3
    enc, gen, ebm = LinearEncoder(D, d).double(), MLPGenerator(d, D, linear=True, sigma=0.5).double(), QuadraticEBM(D).double()
    models = {"descriptor": ebm, "generator": gen, "encoder": enc}
    paper = dict(recon_weight="sigma", kl_reduction="batch_mean", nll_weight=1.0, nll_reduction="batch_mean",
                 sample_noise=True)
    obj = _objective(models, **paper)
    mu_d = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    B = torch.tensor([[1.0, 0.2, 0.0], [0.3, 0.8, 0.1], [0.0, -0.4, 0.6]], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    n = 200_000
    x = mu_d + torch.randn(n, D, generator=g, dtype=torch.float64) @ B.T
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise = torch.randn(n, D, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    x_gen = obj.generate(z, noise).detach()
    i_terms = obj.encoder_loss(x, z, x_gen, eps)
    e_terms = obj.ebm_loss(x, x_gen)
    g_terms = obj.generator_loss(x, z, i_terms["z_post"].detach(), noise)
    closed = _closed_form_triangle(enc, gen, ebm, mu_d, B @ B.T)
    const = -D / 2 - d / 2 * math.log(2 * math.pi * math.e)
    estimate = float((i_terms["loss"] - e_terms["loss"]).detach()) + const
    assert abs(estimate - float(closed.detach())) < 0.08, (estimate, float(closed.detach()))

    def grad(loss, module):
        return torch.cat([t.flatten() for t in torch.autograd.grad(loss, list(module.parameters()), retain_graph=True)])

    for loss, module, sign in ((e_terms["loss"], ebm, -1.0), (i_terms["loss"], enc, 1.0), (g_terms["loss"], gen, 1.0)):
        mc, exact = grad(loss, module), sign * grad(closed, module)
        assert (mc - exact).abs().max() < 0.03 * exact.abs().max() + 0.01, (mc, exact)
    # The code's scalings (KL averaged over latent dims, NLL x 0.1) are not eq. 13: the
    # inference model's gradient differs clearly, so the check above can fail.
    code = _objective(models, sample_noise=True, recon_weight="sigma")
    mc_code = grad(code.encoder_loss(x, z, x_gen, eps)["loss"], enc)
    assert (mc_code - grad(closed, enc)).abs().max() > 0.1 * grad(closed, enc).abs().max()


# ---------------------------------------------------------------------------------------
def test_reconstructions_improve_on_2d_data():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    direction = torch.tensor([0.8, 0.6])

    def data(n):
        t = torch.randn(n, 1, generator=g)
        return t * direction + 0.05 * torch.randn(n, 2, generator=g)

    models = {"descriptor": MLPEBM(2), "generator": MLPGenerator(1, 2), "encoder": MLPEncoder(2, 1)}
    obj = _objective(models, lrs=(1e-4, 3e-3, 3e-3))
    x_test = data(512)

    def recon_mse():
        return float((obj.reconstruct(x_test) - x_test).pow(2).mean())

    before = recon_mse()
    for _ in range(200):
        res = obj.step(Batch(data(64), torch.arange(64)), g)
    after = recon_mse()
    assert all(torch.isfinite(v) for v in res.scalars.values())
    # the data's variance is 1 along the line: a good inference model + generator reconstruct
    # far below that; the remaining error is about the noise level 2 x 0.05^2 plus the KL's pull
    assert after < 0.5 * before, (before, after)
    assert after < 0.1, after


@pytest.mark.parametrize(("option", "role"), [("ebm_steps", "descriptor"), ("encoder_steps", "encoder"),
                                              ("generator_steps", "generator")])
def test_multiple_step_updates(option, role):
    """Algorithm 1 line 9: k updates of one network per iteration, one of the others."""
    torch.manual_seed(0)
    models = {"descriptor": MLPEBM(2), "generator": MLPGenerator(1, 2), "encoder": MLPEncoder(2, 1)}
    obj = _objective(models, **{option: 3})
    g = torch.Generator().manual_seed(0)
    obj.step(Batch(torch.randn(8, 2, generator=g), torch.arange(8)), g)
    opts = {"descriptor": obj.opt_e, "generator": obj.opt_g, "encoder": obj.opt_i}
    for r, opt in opts.items():
        steps = {int(s["step"]) for s in opt.state.values()}
        assert steps == ({3} if r == role else {1}), (r, steps)


def test_posterior_sample_shared_or_redrawn():
    """'shared': the theta step uses the phi step's z~ (one draw of eps per iteration); 'redraw'
    draws a second eps from the updated inference model (the public code)."""
    def run(mode):
        torch.manual_seed(0)
        models = {"descriptor": MLPEBM(2), "generator": MLPGenerator(1, 2), "encoder": MLPEncoder(2, 1)}
        obj = _objective(models, posterior_sample=mode)
        g = torch.Generator().manual_seed(0)
        obj.step(Batch(torch.randn(8, 2, generator=torch.Generator().manual_seed(5)), torch.arange(8)), g)
        return g.get_state(), [p.detach().clone() for p in models["generator"].parameters()]

    (s1, gen1), (s2, gen2) = run("shared"), run("redraw")
    ref = torch.Generator().manual_seed(0)
    torch.randn(8, 1, generator=ref)  # z
    torch.randn(8, 1, generator=ref)  # eps of the phi step
    assert torch.equal(s1, ref.get_state())
    torch.randn(8, 1, generator=ref)  # eps of the theta step
    assert torch.equal(s2, ref.get_state())
    assert any(not torch.equal(a, b) for a, b in zip(gen1, gen2))


def test_one_step_with_the_registered_mnist_networks():
    regs = get_registries()
    torch.manual_seed(0)
    models = {
        "descriptor": regs.energy.create("triangle.ebm.mnist"),
        "generator": regs.generator.create("triangle.generator.mnist"),
        "encoder": regs.encoder.create("triangle.encoder.mnist"),
    }
    assert isinstance(models["encoder"], Encoder) and models["encoder"].latent_shape == (100,)
    assert models["encoder"].input_shape == (1, 28, 28) and models["descriptor"].reference_std is None
    obj = _objective(models, lrs=(1e-4, 3e-4, 3e-4))
    assert tuple(obj.required_models) == ("descriptor", "generator", "encoder") and tuple(obj.required_samplers) == ()
    before = {r: [p.detach().clone() for p in m.parameters()] for r, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g) * 2 - 1
    res = obj.step(Batch(x, torch.arange(4)), g)
    for role, m in models.items():
        changed = any(not torch.equal(a, p) for a, p in zip(before[role], m.parameters()))
        assert changed, role
    for k, v in res.scalars.items():
        assert v.dim() == 0 and torch.isfinite(v), k
    assert "recovery_error" not in res.scalars
    s = obj.samples(3, torch.Generator().manual_seed(1))
    assert set(s) == {"generator"} and s["generator"].shape == (3, 1, 28, 28)
    assert obj.state_dict() == {}


@pytest.mark.parametrize(("bad", "field"), [
    ({"grad_clip": -1.0}, "grad_clip"), ({"nll_weight": -0.1}, "nll_weight"), ({"occlusion": "Q7"}, "occlusion"),
    ({"recon_weight": "paper"}, "recon_weight"), ({"recon_weight": -1.0}, "recon_weight"),
    ({"recon_pixels": "observed"}, "recon_pixels"), ({"generator_steps": 0}, "generator_steps"),
])
def test_options_are_validated_naming_the_field(bad, field):
    entry = get_registries().objective.get("triangle")
    with pytest.raises(ConfigError) as err:
        structure(entry.options, bad, "objective.options")
    assert f"objective.options.{field}" in str(err.value)
