"""Algorithms D and G and CoopNets against independent references."""
from __future__ import annotations

import torch

from coop_coopnets.objectives import (
    AlgorithmD, AlgorithmDOptions, AlgorithmG, AlgorithmGOptions, CoopNets, CoopNetsOptions,
)
from coop_coopnets.samplers import Langevin, LangevinOptions
from coopcore import Batch, EnergyModelBase, GeneratorBase, Parts


class GaussianFamily(EnergyModelBase):
    """Mean/log-variance parametrised Gaussians as a descriptor over the reference N(0, 1):
    f(x) = -(1/v - 1) x^2 / 2 + (m / v) x, so the model is exactly N(m, v) per coordinate.
    Maximum likelihood over this family gives the data's mean and (biased) variance."""

    def __init__(self, dim: int) -> None:
        super().__init__((dim,), 1.0)
        self.m = torch.nn.Parameter(torch.zeros(dim))
        self.log_v = torch.nn.Parameter(torch.zeros(dim))

    def score(self, x: torch.Tensor) -> torch.Tensor:
        inv_v = torch.exp(-self.log_v)
        return (-0.5 * (inv_v - 1.0) * x * x + self.m * inv_v * x).sum(1)


def _parts(models, samplers, lrs, n_train, shape) -> Parts:
    opts = {k: torch.optim.Adam(models[k].parameters(), lr=lr, betas=(0.5, 0.999)) for k, lr in lrs.items()}
    return Parts(models=models, samplers=samplers, optimizers=opts, n_train=n_train, device=torch.device("cpu"),
                 data_shape=shape)


def test_algorithm_d_learns_maximum_likelihood_gaussian():
    g = torch.Generator().manual_seed(0)
    data = torch.tensor([1.5, -0.5]) + torch.tensor([0.5, 0.8]) * torch.randn(20000, 2, generator=g)
    model = GaussianFamily(2)
    sampler = Langevin(LangevinOptions(n_steps=20, step_size=0.05))
    obj = AlgorithmD(AlgorithmDOptions(n_chains=4000, persistent=True),
                     _parts({"descriptor": model}, {"revision": sampler}, {"descriptor": 0.03}, len(data), (2,)))
    means, variances = [], []
    for it in range(500):
        if it == 300:  # stochastic approximation: smaller steps once near the optimum
            for group in obj.opt_d.param_groups:
                group["lr"] = 0.005
        idx = torch.randint(0, len(data), (1000,), generator=g)
        obj.step(Batch(data[idx], idx), g)
        if it >= 400:
            means.append(model.m.detach().clone())
            variances.append(model.log_v.detach().exp())
    mean, var = torch.stack(means).mean(0), torch.stack(variances).mean(0)
    ml_mean, ml_var = data.mean(0), data.var(0, unbiased=False)
    assert torch.allclose(mean, ml_mean, atol=0.05), (mean, ml_mean)
    assert torch.allclose(var, ml_var, rtol=0.12), (var, ml_var)
    # the persistent chains are part of the objective's state (checkpointed)
    assert obj.state_dict()["chains"].shape == (4000, 2)


class LinearGenerator(GeneratorBase):
    def __init__(self, d: int, D: int, sigma: float) -> None:
        super().__init__((d,), (D,), sigma)
        self.lin = torch.nn.Linear(d, D)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lin(z)


def test_algorithm_g_fits_factor_analysis_reconstruction():
    """Alternating back-propagation on data from a linear-Gaussian model lowers the
    reconstruction error towards the noise level, and keeps one latent per example."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(6, 2, generator=g)
    data = torch.randn(512, 2, generator=g) @ W.T + 0.1 * torch.randn(512, 6, generator=g)
    gen = LinearGenerator(2, 6, sigma=0.3)
    sampler = Langevin(LangevinOptions(n_steps=20, step_size=0.1))
    obj = AlgorithmG(AlgorithmGOptions(), _parts({"generator": gen}, {"inference": sampler}, {"generator": 0.01}, 512, (6,)))
    first = None
    for it in range(300):
        idx = torch.arange(it % 8 * 64, it % 8 * 64 + 64)
        res = obj.step(Batch(data[idx], idx), g)
        first = first if first is not None else float(res.scalars["recon_mse"])
    last = float(res.scalars["recon_mse"])
    assert last < 0.25 * first
    assert last < 0.08  # noise variance 0.01 plus the prior's shrinkage
    assert obj.state_dict()["latents"].shape == (512, 2)


class _Capture:
    """Wraps a sampler and keeps its last input and output."""

    def __init__(self, inner):
        self.inner, self.n_steps = inner, inner.n_steps
        self.last_init = self.last_out = None

    def run(self, log_density, init, generator, mask=None, n_steps=None):
        out = self.inner.run(log_density, init, generator, mask, n_steps=n_steps)
        self.last_init, self.last_out = init.detach().clone(), out.samples.detach().clone()
        return out


def _digits_parts(generator_steps=1):
    from coop_coopnets.networks import ConvDescriptor, ConvDescriptorOptions, ConvGenerator, ConvGeneratorOptions
    from coop_datasets.digits import DigitsOptions, digits_dataset

    torch.manual_seed(0)
    ds = digits_dataset(DigitsOptions(size=16))
    d = ConvDescriptor(ConvDescriptorOptions(input_shape=(1, 16, 16), channels=(16, 32), kernels=(4, 4), strides=(2, 2),
                                             fc_outputs=20, reference_std=0.3))
    gnet = ConvGenerator(ConvGeneratorOptions(latent_dim=16, sizes=(4, 8, 16), channels=(32, 16), kernels=(4, 4, 4)))
    sampler = _Capture(Langevin(LangevinOptions(n_steps=10, step_size=0.03)))
    parts = _parts({"descriptor": d, "generator": gnet}, {"revision": sampler},
                   {"descriptor": 5e-4, "generator": 1e-3}, len(ds), ds.shape)
    obj = CoopNets(CoopNetsOptions(generator_steps=generator_steps), parts)
    return ds, d, gnet, sampler, obj


def test_coopnets_iteration_moves_energies_and_reconstruction_in_expected_direction():
    ds, d, gnet, sampler, obj = _digits_parts(generator_steps=4)
    g = torch.Generator().manual_seed(1)
    for it in range(6):
        idx = torch.arange(it * 32, it * 32 + 32)
        x = ds.get_batch(idx)
        res = obj.step(Batch(x, idx), g)
        y_syn = sampler.last_out
        with torch.no_grad():
            # D2 shifts density towards the observed: after the update f(obs) - f(syn) grew
            # relative to the values the step itself measured before updating.
            gap_after = float(d.score(x).mean() - d.score(y_syn).mean())
        gap_before = float(res.scalars["score_obs"] - res.scalars["score_syn"])
        assert gap_after > gap_before
        # G2 (4 steps) lowers the reconstruction error of the revised samples from the same X^
        sigma, D = gnet.sigma, y_syn[0].numel()
        initial_loss = float(res.scalars["recon_mse"]) * D / (2 * sigma**2)
        assert float(res.scalars["loss_generator"]) < initial_loss


def test_coopnets_with_inference_steps_runs_langevin_inference():
    ds, d, gnet, sampler, _ = _digits_parts()
    inference = _Capture(Langevin(LangevinOptions(n_steps=5, step_size=0.05)))
    parts = _parts({"descriptor": d, "generator": gnet}, {"revision": sampler, "inference": inference},
                   {"descriptor": 5e-4, "generator": 1e-3}, len(ds), ds.shape)
    obj = CoopNets(CoopNetsOptions(), parts)  # l_q = the inference sampler's 5 steps
    idx = torch.arange(16)
    obj.step(Batch(ds.get_batch(idx), idx), torch.Generator().manual_seed(0))
    assert inference.last_init is not None and inference.last_init.shape == (16, 16)
    assert not torch.equal(inference.last_init, inference.last_out)  # X moved away from X^


def test_coopnets_generator_samples_are_g_of_x_and_only_the_chains_start_from_g_plus_noise():
    """Eq. 11 / step G0: with init_noise the chains start at g(X^) + eps, but the generator's samples
    (what Parzen and FID score as "generator") are g(X^) itself, inside the tanh range."""
    ds, d, gnet, sampler, _ = _digits_parts()
    parts = _parts({"descriptor": d, "generator": gnet}, {"revision": sampler},
                   {"descriptor": 5e-4, "generator": 1e-3}, len(ds), ds.shape)
    obj = CoopNets(CoopNetsOptions(init_noise=True), parts)
    out = obj.samples(64, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, by hand: X^, then eps
    with torch.no_grad():
        z = gnet.sample_latent(64, g)
        y = gnet(z)
        eps = torch.randn(y.shape, generator=g)
    assert torch.equal(out["generator"], y)
    assert out["generator"].abs().max() <= 1.0
    assert torch.allclose(sampler.last_init, y + gnet.sigma * eps)


def test_algorithm_d_samples_more_than_its_chains_without_repeating_them():
    """Asking for more samples than there are persistent chains continues the chains (issue: a
    10,000-sample evaluation used to score ~100 chains repeated)."""
    torch.manual_seed(0)
    d = GaussianFamily(3)
    sampler = _Capture(Langevin(LangevinOptions(n_steps=4, step_size=0.3)))
    obj = AlgorithmD(AlgorithmDOptions(n_chains=5), _parts({"descriptor": d}, {"revision": sampler},
                                                           {"descriptor": 1e-2}, 50, (3,)))
    x = torch.randn(5, 3)
    obj.step(Batch(x, torch.arange(5)), torch.Generator().manual_seed(0))
    chains = obj.chains.clone()
    out = obj.samples(12, torch.Generator().manual_seed(1))["chains"]
    assert out.shape == (12, 3)
    assert torch.equal(out[:5], chains)  # the current chains first
    assert len({tuple(r.tolist()) for r in out}) == 12  # then new states, no copies
    assert torch.equal(obj.chains, chains)  # evaluation leaves the training chains alone
    assert torch.equal(obj.samples(4, torch.Generator().manual_seed(1))["chains"], chains[:4])
