"""The divergence-triangle networks against the paper's Tables 4 (CelebA 64x64), 5 (CIFAR-10
32x32) and 6 (MNIST 28x28): every layer's output channels and size, kernel and stride, where
BatchNorm sits, the output non-linearity and the parameter count from the tables' numbers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from coopcore import ConfigError
from coopcore.config import structure
from coopcore.plugin_manager import get_registries

# Per conv layer (the inference model's two heads both listed): (channels, output side, kernel, stride),
# transcribed from the tables' "Layers" / "In-Out Size" / "Stride" columns.
TABLES = {
    "cifar": {  # Table 5
        "generator": [(512, 4, 4, 1), (512, 8, 4, 2), (256, 16, 4, 2), (128, 32, 4, 2), (3, 32, 3, 1)],
        "encoder": [(64, 32, 3, 1), (128, 16, 4, 2), (256, 8, 4, 2), (512, 4, 4, 2), (100, 1, 4, 1), (100, 1, 4, 1)],
        "ebm": [(64, 32, 3, 1), (128, 16, 4, 2), (256, 8, 4, 2), (256, 4, 4, 2), (1, 1, 4, 1)],
    },
    "celeba": {  # Table 4
        "generator": [(512, 4, 4, 1), (512, 8, 4, 2), (256, 16, 4, 2), (128, 32, 4, 2), (3, 64, 4, 2)],
        "encoder": [(64, 32, 4, 2), (128, 16, 4, 2), (256, 8, 4, 2), (512, 4, 4, 2), (100, 1, 4, 1), (100, 1, 4, 1)],
        "ebm": [(64, 32, 4, 2), (128, 16, 4, 2), (256, 8, 4, 2), (256, 4, 4, 2), (1, 1, 4, 1)],
    },
    "mnist": {  # Table 6; the heads take the 3x3 map to 1x1 with a 3x3 kernel (see networks.py)
        "generator": [(1024, 3, 3, 1), (512, 7, 4, 2), (256, 14, 4, 2), (1, 28, 4, 2)],
        "encoder": [(128, 14, 4, 2), (256, 7, 4, 2), (512, 3, 4, 2), (100, 1, 3, 1), (100, 1, 3, 1)],
        "ebm": [(128, 14, 4, 2), (256, 7, 4, 2), (512, 3, 4, 2), (1, 1, 3, 1)],
    },
}
INPUT = {"cifar": (3, 32), "celeba": (3, 64), "mnist": (1, 28)}
# The tables' BN column for the hidden layers.
BATCH_NORM = {"cifar": {"generator": True, "encoder": False, "ebm": False},
              "celeba": {"generator": True, "encoder": True, "ebm": True},
              "mnist": {"generator": True, "encoder": False, "ebm": False}}
FAMILY = {"generator": "generator", "encoder": "encoder", "ebm": "energy"}


def _build(role: str, table: str, **options):
    regs = get_registries()
    fam = regs.family(FAMILY[role])
    name = f"triangle.{role}.{table}"
    return fam.create(name, structure(fam.get(name).options, options, "options"))


def _trace(module: nn.Module, x: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(channels, side, kernel, stride) of every conv output, in call order."""
    seen: list[tuple[int, int, int, int]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((o.shape[1], o.shape[-1], m.kernel_size[0], m.stride[0])))
             for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("table", ["cifar", "celeba", "mnist"])
def test_layers_match_the_tables(table):
    torch.manual_seed(0)
    c, side = INPUT[table]
    gen = _build("generator", table)
    assert gen.latent_shape == (100,) and gen.output_shape == (c, side, side)
    assert _trace(gen, torch.randn(2, 100)) == TABLES[table]["generator"]
    for role in ("encoder", "ebm"):
        net = _build(role, table)
        assert tuple(net.input_shape) == (c, side, side)
        assert _trace(net, torch.rand(2, c, side, side) * 2 - 1) == TABLES[table][role], role
    enc = _build("encoder", table)
    mu, logvar = enc(torch.rand(2, c, side, side))
    assert mu.shape == logvar.shape == (2, 100)
    ebm = _build("ebm", table)
    assert ebm.score(torch.rand(2, c, side, side)).shape == (2,)


@pytest.mark.parametrize("table", ["cifar", "celeba", "mnist"])
def test_batch_norm_output_activation_and_parameter_count(table):
    """BN after every hidden layer where the table says so; tanh output; the parameter count
    computed from the tables' channels and kernels (hidden convs without bias, as the code;
    heads with bias; BN gamma and beta)."""
    torch.manual_seed(0)
    c_in = INPUT[table][0]
    for role in ("generator", "encoder", "ebm"):
        net = _build(role, table)
        layers = TABLES[table][role]
        n_heads = 2 if role == "encoder" else 1
        hidden = layers[:-n_heads] if role != "generator" else layers[:-1]
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert n_bn == (len(hidden) if BATCH_NORM[table][role] else 0), role
        expected, c = 0, (100 if role == "generator" else c_in)
        for ch, _, k, _ in hidden:
            expected += c * ch * k * k + (2 * ch if BATCH_NORM[table][role] else 0)
            c = ch
        for ch, _, k, _ in layers[len(hidden):]:
            expected += c * ch * k * k + ch  # output layer / head with bias
        assert sum(p.numel() for p in net.parameters()) == expected, role
    gen = _build("generator", table)
    assert isinstance(list(gen.net)[-1], nn.Tanh)
    out = gen(torch.randn(3, 100) * 10)
    assert out.abs().max() <= 1.0


def test_table4_literal_reading_and_padded_mnist_head():
    """Table 4 written literally (ReLU output, LReLU after the heads) and Table 6's 4x4 head on the
    3x3 map (zero padding at the bottom/right) are options."""
    gen = _build("generator", "celeba", out_activation="relu")
    assert isinstance(list(gen.net)[-1], nn.ReLU) and bool((gen(torch.randn(2, 100)) >= 0).all())
    enc = _build("encoder", "celeba", head_activation="leaky_relu")
    assert isinstance(list(enc.mu)[-1], nn.LeakyReLU)
    ebm = _build("ebm", "mnist", head_kernel=4)
    assert _trace(ebm, torch.zeros(2, 1, 28, 28))[-1] == (1, 1, 4, 1)
    assert any(isinstance(m, nn.ZeroPad2d) for m in ebm.modules())


def test_padding_solver_matches_torch():
    import torch.nn.functional as F

    from coopcore import conv_padding, transposed_conv_padding

    checked = 0
    for size_in in (1, 3, 7, 14, 32):
        x = torch.zeros(1, 1, size_in, size_in)
        for k in (3, 4):
            w = torch.zeros(1, 1, k, k)
            for s in (1, 2):
                for size_out in range(1, 2 * size_in + 3):
                    try:
                        p, op = transposed_conv_padding(size_in, size_out, k, s)
                    except ValueError:
                        continue
                    assert F.conv_transpose2d(x, w, None, s, p, op).shape[-1] == size_out, (size_in, size_out, k, s)
                    checked += 1
                    if size_in >= k and size_out <= size_in:
                        try:
                            p = conv_padding(size_in, size_out, k, s)
                        except ValueError:
                            continue
                        assert F.conv2d(x, w, None, s, p).shape[-1] == size_out, (size_in, size_out, k, s)
    assert checked > 50
    assert transposed_conv_padding(3, 7, 4, 2) == (1, 1) and conv_padding(7, 3, 4, 2) == 1


@pytest.mark.parametrize(("role", "options", "field"), [
    ("generator", {"sizes": [4, 8, 16, 32, 31]}, "sizes"),
    ("generator", {"kernels": [4, 4, 4]}, "kernels"),
    ("encoder", {"head_kernel": 2}, "head_kernel"),
    ("ebm", {"sizes": [32, 16, 8, 9]}, "sizes"),
    ("ebm", {"channels": [64, 128, 256, 256, 8]}, "channels"),
])
def test_impossible_geometry_is_a_config_error_naming_the_field(role, options, field):
    regs = get_registries()
    entry = regs.family(FAMILY[role]).get(f"triangle.{role}.cifar")
    with pytest.raises(ConfigError) as err:
        structure(entry.options, options, f"models.{role}.options")
    assert f"models.{role}.options.{field}" in str(err.value)


def test_biases_keep_pytorchs_initialisation_unless_zero_bias():
    """The public code initialises weights only (N(0, 0.02)): the output layer's and the heads'
    biases keep PyTorch's uniform(+-1/sqrt(fan_in)) draw; zero_bias = true zeroes them."""
    from coopcore.plugin_manager import get_registries

    reg = get_registries()
    for family, name in (("energy", "triangle.ebm.mnist"), ("generator", "triangle.generator.mnist"),
                         ("encoder", "triangle.encoder.mnist")):
        registry = getattr(reg, family)
        torch.manual_seed(0)
        net = registry.create(name)
        biases = {n: p for n, p in net.named_parameters() if n.endswith("bias") and p.dim() == 1}
        convs = {n: m for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
                 and m.bias is not None}
        assert convs, name
        for n, m in convs.items():
            fan_in = m.weight[0].numel()  # PyTorch's rule: weight.size(1) * kernel area, both kinds
            b = m.bias.detach()
            assert b.abs().max() > 0 and b.abs().max() <= 1 / fan_in**0.5, (name, n)
        zeroed = registry.create(name, registry.get(name).options(zero_bias=True))
        for n, m in zeroed.named_modules():
            if n in convs:
                assert torch.equal(m.bias, torch.zeros_like(m.bias)), (name, n)
        assert biases
