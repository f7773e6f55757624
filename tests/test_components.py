"""Every registered network and sampler, built from its defaults, honours its protocol."""
from __future__ import annotations

import pytest
import torch

from coopcore import Encoder, EnergyModel, Generator, Sampler
from coopcore.plugin_manager import load_registries

REG = load_registries()


@pytest.mark.parametrize("name", list(REG.energy))
def test_energy_models(name):
    torch.manual_seed(0)
    model = REG.energy.create(name)
    assert isinstance(model, EnergyModel) and isinstance(model, torch.nn.Module)
    x = torch.randn(2, *model.input_shape)
    f, e = model.score(x), model.energy(x)
    assert f.shape == (2,) and e.shape == (2,) and torch.isfinite(e).all()
    if model.reference_std is not None:  # eq. 4: E = ||Y||^2 / (2 s^2) - f
        expected = x.flatten(1).pow(2).sum(1) / (2 * model.reference_std**2) - f
        assert torch.allclose(e, expected, rtol=1e-5, atol=1e-3)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.energy(xg).sum(), xg)
    assert grad.shape == x.shape


@pytest.mark.parametrize("name", list(REG.generator))
def test_generators(name):
    torch.manual_seed(0)
    model = REG.generator.create(name)
    assert isinstance(model, Generator)
    z1 = model.sample_latent(2, torch.Generator().manual_seed(5))
    z2 = model.sample_latent(2, torch.Generator().manual_seed(5))
    assert torch.equal(z1, z2) and z1.shape == (2, *model.latent_shape)
    y = model(z1)
    assert y.shape == (2, *model.output_shape)
    assert float(y.detach().abs().max()) <= 1.0  # tanh output
    assert model.sigma > 0


@pytest.mark.parametrize("name", list(REG.sampler))
def test_samplers(name):
    sampler = REG.sampler.create(name)
    assert isinstance(sampler, Sampler)
    init = torch.zeros(3, 4)
    lp = lambda x: -0.5 * x.pow(2).sum(1)  # noqa: E731
    a = sampler.run(lp, init, torch.Generator().manual_seed(0))
    b = sampler.run(lp, init, torch.Generator().manual_seed(0))
    assert torch.equal(a.samples, b.samples) and a.samples.shape == init.shape
    assert a.energies.shape == (sampler.n_steps,) and a.grad_norms.shape == (sampler.n_steps,)


def test_encoder_protocol_is_checkable():
    class Enc(torch.nn.Module):
        input_shape = (4,)
        latent_shape = (2,)

        def forward(self, x):
            return x[:, :2], x[:, 2:4]

    class NoInputShape(torch.nn.Module):
        latent_shape = (2,)

        def forward(self, x):
            return x[:, :2], x[:, 2:4]

    assert isinstance(Enc(), Encoder)
    assert not isinstance(NoInputShape(), Encoder)


def test_paper_architecture_shapes():
    """Spot checks against the sizes the paper and code state."""
    d = REG.energy.create("coopnets.descriptor.mnist")
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    h = torch.zeros(1, 1, 28, 28)
    sizes = []
    for m in d.features:
        h = m(h)
        if isinstance(m, torch.nn.Conv2d):
            sizes.append(h.shape[-1])
    assert [c.out_channels for c in convs] == [64, 128, 256] and sizes == [14, 7, 4]  # TF 'SAME'
    assert d.fc.out_features == 100
    g = REG.generator.create("coopnets.generator.mnist")
    chans, z = [], torch.zeros(2, 100)
    x = g.fc(z).view(2, -1, 1, 1)
    for m in g.net:
        x = m(x)
        if isinstance(m, torch.nn.ConvTranspose2d):
            chans.append((m.out_channels, x.shape[-1]))
    assert chans == [(512, 4), (256, 7), (128, 14), (1, 28)]
