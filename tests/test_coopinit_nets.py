"""The networks of the GAN/CoopInit plugin against independent references: StyleGAN2's
modulated convolution against a per-example loop, demodulation's unit-variance property,
equalised learning rate, the minibatch standard deviation against a loop, the bilinear
upsampling against the [1,3,3,1] FIR filter on a zero-inserted map, the channel schedule of
the `cifar` config and CoopInit's capacity factor, the three discriminator architectures, the
noise inputs carried in the latent vector; DCGAN and MLP shapes."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coop_gan.stylegan2 import (
    EqualLinear,
    ModulatedConv2d,
    StyleGAN2Discriminator,
    StyleGAN2DiscriminatorOptions,
    StyleGAN2Generator,
    StyleGAN2GeneratorOptions,
    channels_at,
    downsample,
    minibatch_std,
    upsample,
)
from coopcore.plugin_manager import load_registries


def test_modulated_conv_matches_a_per_example_loop():
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 4, 3, w_dim=6, demodulate=True)
    x, w = torch.randn(3, 5, 7, 7), torch.randn(3, 6)
    out = conv(x, w)
    for i in range(3):
        s = w[i] @ (conv.affine.weight * conv.affine.weight_gain).T + conv.affine.bias  # style [5]
        wt = conv.weight / math.sqrt(5 * 9) * s.view(1, 5, 1, 1)
        wt = wt / wt.pow(2).sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        assert torch.allclose(out[i : i + 1], F.conv2d(x[i : i + 1], wt, padding=1), atol=1e-5)
    up = ModulatedConv2d(5, 4, 3, w_dim=6, up=True)
    assert up(x, w).shape == (3, 4, 14, 14)


def test_demodulation_keeps_unit_variance():
    # Each output filter has unit norm after demodulation: i.i.d. unit-variance inputs give
    # unit-variance outputs (away from the zero-padded border).
    torch.manual_seed(1)
    conv = ModulatedConv2d(64, 32, 3, w_dim=8)
    out = conv(torch.randn(8, 64, 12, 12), 3.0 * torch.randn(8, 8))[:, :, 1:-1, 1:-1]
    assert out.std().item() == pytest.approx(1.0, abs=0.05)
    raw = ModulatedConv2d(64, 32, 3, w_dim=8, demodulate=False)
    raw.affine.bias.data.fill_(5.0)  # a large style changes the scale without demodulation
    assert raw(torch.randn(8, 64, 12, 12), torch.zeros(8, 8)).std().item() > 3.0


def test_equalised_learning_rate():
    torch.manual_seed(2)
    lin = EqualLinear(400, 50, bias_init=0.5, lr_mul=0.01)
    # stored weights N(0, 1 / lr_mul^2); the layer uses them times lr_mul / sqrt(fan_in)
    assert lin.weight.std().item() == pytest.approx(100.0, rel=0.05)
    x = torch.randn(3, 400)
    expected = x @ (lin.weight * 0.01 / 20.0).T + lin.bias * 0.01
    assert torch.allclose(lin(x), expected, atol=1e-5)
    assert torch.allclose(lin.bias * 0.01, torch.full((50,), 0.5))


def test_minibatch_std_matches_a_loop():
    torch.manual_seed(3)
    x = torch.randn(6, 4, 3, 3)
    out = minibatch_std(x, group_size=3, channels=2)
    assert out.shape == (6, 6, 3, 3) and torch.equal(out[:, :4], x)
    n_groups = 2  # 6 examples, groups of 3: example i is in group i mod 2
    for i in range(6):
        members = x[[j for j in range(6) if j % n_groups == i % n_groups]]  # [3, 4, 3, 3]
        for f in range(2):
            feats = members[:, 2 * f : 2 * f + 2]
            expected = (feats.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            assert torch.allclose(out[i, 4 + f], expected.expand(3, 3), atol=1e-6)
    # a batch of 5 with group size 4 uses groups of 1 (the largest divisor of 5 below 4): std 0
    assert torch.allclose(minibatch_std(torch.randn(5, 2, 2, 2), 4, 1)[:, 2], torch.full((5, 2, 2), 1e-4))


def test_resampling_is_the_fir_filter_away_from_borders():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 8, 8)
    zero_inserted = torch.zeros(2, 3, 16, 16)
    zero_inserted[:, :, ::2, ::2] = x
    fir = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = (torch.outer(fir, fir) / 16.0).expand(3, 1, 4, 4)  # gain 4 = up-factor^2 keeps the mean
    ref = F.conv2d(F.pad(zero_inserted, (2, 1, 2, 1)), k, groups=3)
    assert torch.allclose(upsample(x)[:, :, 2:-2, 2:-2], ref[:, :, 2:-2, 2:-2], atol=1e-5)
    assert torch.allclose(downsample(torch.full((1, 2, 8, 8), 0.7))[:, :, 1:-1, 1:-1], torch.full((1, 2, 2, 2), 0.7))
    assert downsample(x).shape == (2, 3, 4, 4)


def test_channel_schedule_of_the_cifar_config_and_capacity():
    # The formula with StyleGAN2-ADA's PyTorch channel_base (32768, `cifar`): the capacity reading
    # the networks no longer default to (tests/test_coopinit_settings.py has CoopInit's table).
    assert [channels_at(r, 32768, 512, 1.0) for r in (4, 8, 16, 32)] == [512, 512, 512, 512]
    assert [channels_at(r, 32768, 512, 0.25) for r in (4, 8, 16, 32)] == [512, 512, 512, 256]
    assert [channels_at(r, 32768, 512, 1 / 16) for r in (4, 8, 16, 32)] == [512, 256, 128, 64]
    # the default channel_base, 2 M = 16384, at s = 1 is the same `cifar` network up to 32x32
    assert [channels_at(r, 16384, 512, 1.0) for r in (4, 8, 16, 32)] == [512, 512, 512, 512]


def _small_d(**kw) -> StyleGAN2Discriminator:
    return StyleGAN2Discriminator(StyleGAN2DiscriminatorOptions(channel_base=256, channel_max=32, **kw))


@pytest.mark.parametrize("arch", ["orig", "skip", "resnet"])
def test_discriminator_architectures(arch):
    torch.manual_seed(5)
    d = _small_d(architecture=arch, mbstd_group_size=4)
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    s = d.score(x)
    assert s.shape == (4,) and torch.isfinite(s).all()
    (g,) = torch.autograd.grad(s.sum(), x)
    assert g.abs().sum() > 0
    assert len(d.fromrgb) == (4 if arch == "skip" else 1)
    assert (d.shortcut is not None) == (arch == "resnet")
    assert d.energy(x).shape == (4,) and d.reference_std is None


def test_discriminator_capacity_scales_channels():
    full = _small_d(capacity=1.0)
    half = _small_d(capacity=0.5)
    assert full.conv0[0].weight.shape[0] == 8 and half.conv0[0].weight.shape[0] == 4  # 32x32: 256 / 32
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in full.parameters())


def _small_g(**kw) -> StyleGAN2Generator:
    return StyleGAN2Generator(StyleGAN2GeneratorOptions(z_dim=16, w_dim=16, channel_base=256, channel_max=32, **kw))


def test_generator_noise_inputs_live_in_the_latent():
    torch.manual_seed(6)
    g = _small_g()
    assert g.latent_shape == (16 + 16 + 2 * 64 + 2 * 256 + 2 * 1024,)  # z, then noise at 4, 8x2, 16x2, 32x2
    assert g.output_shape == (3, 32, 32) and len(g.mapping) == 2
    z = g.sample_latent(2, torch.Generator().manual_seed(0))
    z2 = z.clone()
    z2[:, 16:] = torch.randn(2, z.shape[1] - 16)
    assert torch.equal(g(z), g(z2))  # noise strengths start at 0
    for layer in g.layers:
        layer.noise_strength.data.fill_(0.5)
    assert torch.equal(g(z), g(z)) and not torch.allclose(g(z), g(z2))
    assert _small_g(noise_mode="const").latent_shape == (16,)
    assert _small_g(noise_mode="none").latent_shape == (16,)
    assert StyleGAN2Generator().latent_shape == (512 + 2704,)  # the cifar config


def test_mapping_normalises_z():
    g = _small_g(mapping_layers=0)
    z = torch.randn(3, 16)
    assert torch.allclose(g.map(5.0 * z), g.map(z), atol=1e-5)  # second-moment normalisation
    assert torch.allclose(g.map(z).pow(2).mean(1), torch.ones(3), atol=1e-4)


def test_stylegan2_options_are_validated():
    from coopcore.config import structure
    from coopcore.errors import ConfigError

    reg = load_registries()
    for name in ("coopinit.generator.stylegan2", "coopinit.discriminator.stylegan2"):
        entry = reg.generator.get(name) if "generator" in name else reg.energy.get(name)
        with pytest.raises(ConfigError, match="resolution"):
            structure(entry.options, {"resolution": 48}, "models.x.options")
        with pytest.raises(ConfigError, match="capacity"):
            structure(entry.options, {"capacity": 0.0}, "models.x.options")


@pytest.mark.parametrize(("suffix", "side"), [("dcgan32", 32), ("dcgan64", 64)])
def test_dcgan_pairs(suffix, side):
    reg = load_registries()
    torch.manual_seed(0)
    g = reg.generator.create(f"gan.generator.{suffix}")
    d = reg.energy.create(f"gan.discriminator.{suffix}")
    x = g(g.sample_latent(2, torch.Generator().manual_seed(0)))
    assert x.shape == (2, 3, side, side) and x.abs().max() <= 1.0
    assert d.score(x).shape == (2,) and d.input_shape == (3, side, side)


def test_dcgan_options_are_validated():
    from coopcore.config import structure
    from coopcore.errors import ConfigError

    entry = load_registries().energy.get("gan.discriminator.dcgan")
    with pytest.raises(ConfigError, match="input_shape"):
        structure(entry.options, {"input_shape": [3, 20, 20], "channels": [8, 16, 32]}, "models.d.options")


def test_mlp_pair():
    reg = load_registries()
    g = reg.generator.create("gan.generator.mlp")
    d = reg.energy.create("gan.discriminator.mlp")
    assert g.latent_shape == (2,) and g.output_shape == (2,) and d.input_shape == (2,)
    linears = [m for m in d.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [128, 128, 128, 1]
    assert g(torch.randn(5, 2)).shape == (5, 2) and d.score(torch.randn(5, 2)).shape == (5,)
