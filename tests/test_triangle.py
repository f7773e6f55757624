"""The divergence-triangle plugin: KL / NLL helpers against closed forms, the objective's loss
terms on a linear-Gaussian toy, learning on 2-D data, and one step with the MNIST networks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coopcore import Batch, Encoder, EnergyModel, EnergyModelBase, Generator, GeneratorBase, Parts
from coopcore.plugin_manager import get_registries


def _triangle_module():
    regs = get_registries()
    entry = regs.objective.get("triangle")
    assert entry.owner == "triangle"
    return regs


def _objective(models, lrs=(1e-3, 1e-3, 1e-3), **options):
    regs = _triangle_module()
    opts = {role: torch.optim.Adam(m.parameters(), lr=lr, betas=(0.5, 0.999))
            for (role, m), lr in zip(models.items(), lrs)}
    x_shape = models["descriptor"].input_shape
    parts = Parts(models=models, samplers={}, optimizers=opts, n_train=100, device=torch.device("cpu"),
                  data_shape=tuple(x_shape))
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
    def __init__(self, d_z: int, d_out: int, h: int = 32, linear: bool = False) -> None:
        super().__init__((d_z,), (d_out,), sigma=math.sqrt(0.5))
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


def test_tiny_models_implement_the_protocols():
    assert isinstance(MLPEncoder(2, 1), Encoder) and isinstance(LinearEncoder(2, 1), Encoder)
    assert isinstance(MLPGenerator(1, 2), Generator) and isinstance(MLPEBM(2), EnergyModel)


# ---------------------------------------------------------------------------------------
def test_kl_helper_matches_closed_form_and_monte_carlo():
    from coop_triangle.objective import gaussian_kl_standard, gaussian_nll

    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    s = torch.rand(3, 4, generator=g, dtype=torch.float64) * 1.5 + 0.3
    logvar = torch.log(s**2)
    kl = gaussian_kl_standard(mu, logvar).sum(1)
    closed = 0.5 * (mu**2 + s**2 - 1 - torch.log(s**2)).sum(1)
    torch.testing.assert_close(kl, closed)
    # Monte Carlo: E_q[log q(z) - log N(z; 0, I)], z ~ q
    n = 400_000
    z = mu + s * torch.randn(n, 3, 4, generator=g, dtype=torch.float64)
    log_q = -gaussian_nll(z, mu, logvar).sum(-1)
    log_p = -gaussian_nll(z, torch.zeros_like(mu), torch.zeros_like(logvar)).sum(-1)
    mc = (log_q - log_p).mean(0)
    assert torch.allclose(mc, kl, atol=0.02), (mc, kl)
    # the NLL helper is the Gaussian log-density
    ref = -torch.distributions.Normal(mu, s).log_prob(z[:5]).sum()
    torch.testing.assert_close(gaussian_nll(z[:5], mu, logvar).sum(), ref)


def test_loss_terms_equal_closed_forms_on_a_linear_gaussian_toy():
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
    # KL(N(mu, diag s2) || N(0, I)) per example, averaged over batch and latent dims (code)
    kl_closed = 0.5 * (mu**2 + s2 - 1 - s2.log()).sum(1)
    torch.testing.assert_close(terms["kl"], kl_closed.mean() / d_z)
    # reconstruction with z~ = mu + s eps through the linear generator
    z_post = mu + s2.sqrt() * eps
    recon_closed = ((x - (z_post @ C.T + c0)) ** 2).sum() / b
    torch.testing.assert_close(terms["recon"], recon_closed)
    # latent NLL of z under q(z | G(z)) = N(A G(z) + a0, diag s2)
    m2 = x_gen @ A.T + a0
    nll_closed = 0.5 * ((z - m2) ** 2 / s2 + s2.log() + math.log(2 * math.pi))
    torch.testing.assert_close(terms["latent_nll"], nll_closed.mean())
    torch.testing.assert_close(terms["loss"], recon_closed + kl_closed.mean() / d_z + 0.1 * nll_closed.mean())
    # the "batch_mean" reduction gives the usual per-example KL
    obj2 = _objective({"descriptor": ebm, "generator": gen, "encoder": enc}, kl_reduction="batch_mean")
    torch.testing.assert_close(obj2.encoder_loss(x, z, x_gen, eps)["kl"], kl_closed.mean())


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
    for i in range(200):
        res = obj.step(Batch(data(64), torch.arange(64)), g)
    after = recon_mse()
    assert all(torch.isfinite(v) for v in res.scalars.values())
    assert after < 0.5 * before, (before, after)
    assert after < 0.1, after


def test_one_step_with_the_registered_mnist_networks():
    regs = get_registries()
    torch.manual_seed(0)
    models = {
        "descriptor": regs.energy.create("triangle.ebm.mnist"),
        "generator": regs.generator.create("triangle.generator.mnist"),
        "encoder": regs.encoder.create("triangle.encoder.mnist"),
    }
    assert isinstance(models["encoder"], Encoder) and models["encoder"].latent_shape == (100,)
    assert models["descriptor"].reference_std is None
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
    s = obj.samples(3, torch.Generator().manual_seed(1))
    assert set(s) == {"generator"} and s["generator"].shape == (3, 1, 28, 28)
    assert obj.state_dict() == {}


def test_mnist_architecture_sizes():
    regs = get_registries()
    gen = regs.generator.create("triangle.generator.mnist")
    h, sizes = torch.zeros(2, 100, 1, 1), []
    for m in gen.net:
        h = m(h)
        if isinstance(m, nn.ConvTranspose2d):
            sizes.append((m.out_channels, h.shape[-1]))
    assert sizes == [(1024, 3), (512, 7), (256, 14), (1, 28)]
    ebm = regs.energy.create("triangle.ebm.mnist")
    h, sizes = torch.zeros(2, 1, 28, 28), []
    for m in ebm.features:
        h = m(h)
        if isinstance(m, nn.Conv2d):
            sizes.append((m.out_channels, h.shape[-1]))
    assert sizes == [(128, 14), (256, 7), (512, 3)]
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(ebm.energy(x), ebm.network_energy(x))


@pytest.mark.parametrize("bad", [{"grad_clip": -1.0}, {"nll_weight": -0.1}])
def test_options_are_validated(bad):
    entry = _triangle_module().objective.get("triangle")
    with pytest.raises((ValueError, TypeError)):
        entry.options(**bad)
