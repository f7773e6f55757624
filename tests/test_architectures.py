"""Every registered network of the divergence-triangle paper (Appendix Tables 4-6) and of the
TPAMI CoopNets paper (Sections 4.1-4.7) against the paper's description: the output shape
after each layer and the parameter count.

The expectations are written here from the papers, not from the code: each entry lists the
layers as the paper prints them (channels, kernel, output size), and the parameter count is
summed from those numbers with the helpers below.  Where the paper leaves a detail open, the
conventions of the implementation are stated once and applied by hand:

- divergence triangle: hidden convolutions without bias, output layers / heads with bias (the
  public code), BatchNorm (gamma, beta) after every hidden layer the table marks "BN: Yes";
  the inference model's "conv(100) -> mu, sigma" is two parallel heads (mu, log sigma^2);
- TPAMI: every convolution / transposed convolution / fully connected layer has a bias (the
  authors' code), BatchNorm between the generator's layers (Section 4 preamble) with a learned
  shift and no scale (TensorFlow's batch_norm defaults in the authors' code), descriptor
  convolutions with TensorFlow "same" padding (28 -> 14 -> 7 -> 4).

The networks are built on PyTorch's meta device: shapes and parameter counts without compute
(the TPAMI video networks take a 64-frame 128 x 128 clip).  The multigrid networks are tested
in test_repro_multigrid_architectures.py.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from coopcore.config import structure
from coopcore.plugin_manager import get_registries


# -- parameter counts by hand -----------------------------------------------------------------
def conv(c_in: int, c_out: int, *kernel: int, bias: bool = True) -> int:
    """Weights (and biases) of a (transposed) convolution with kernel `kernel` (one size per dim)."""
    n = c_in * c_out
    for k in kernel:
        n *= k
    return n + (c_out if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def bn_shift(c: int) -> int:
    """TensorFlow's batch_norm with its defaults (the TPAMI code): a shift beta, no scale."""
    return c


def fc(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# -- the networks, as the papers describe them ----------------------------------------------
# name -> (family, options, input shape without batch, [output shape after each layer], parameters)
NETWORKS: dict[str, tuple[str, dict[str, Any], tuple[int, ...], list[tuple[int, ...]], int]] = {
    # Divergence triangle Table 4 (CelebA 64x64).  The table prints ReLU after the generator's
    # last layer and LReLU after the heads: read as tanh / none (networks.py); no parameters.
    "triangle.generator.celeba": ("generator", {}, (100,),
        [(512, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 64, 64)],
        conv(100, 512, 4, 4, bias=False) + bn(512) + conv(512, 512, 4, 4, bias=False) + bn(512)
        + conv(512, 256, 4, 4, bias=False) + bn(256) + conv(256, 128, 4, 4, bias=False) + bn(128)
        + conv(128, 3, 4, 4)),
    "triangle.encoder.celeba": ("encoder", {}, (3, 64, 64),
        [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (100, 1, 1), (100, 1, 1)],
        conv(3, 64, 4, 4, bias=False) + bn(64) + conv(64, 128, 4, 4, bias=False) + bn(128)
        + conv(128, 256, 4, 4, bias=False) + bn(256) + conv(256, 512, 4, 4, bias=False) + bn(512)
        + 2 * conv(512, 100, 4, 4)),
    "triangle.ebm.celeba": ("energy", {}, (3, 64, 64),
        [(64, 32, 32), (128, 16, 16), (256, 8, 8), (256, 4, 4), (1, 1, 1)],
        conv(3, 64, 4, 4, bias=False) + bn(64) + conv(64, 128, 4, 4, bias=False) + bn(128)
        + conv(128, 256, 4, 4, bias=False) + bn(256) + conv(256, 256, 4, 4, bias=False) + bn(256)
        + conv(256, 1, 4, 4)),
    # Table 5 (CIFAR-10 32x32): BN only in the generator.
    "triangle.generator.cifar": ("generator", {}, (100,),
        [(512, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 32, 32)],
        conv(100, 512, 4, 4, bias=False) + bn(512) + conv(512, 512, 4, 4, bias=False) + bn(512)
        + conv(512, 256, 4, 4, bias=False) + bn(256) + conv(256, 128, 4, 4, bias=False) + bn(128)
        + conv(128, 3, 3, 3)),
    "triangle.encoder.cifar": ("encoder", {}, (3, 32, 32),
        [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (100, 1, 1), (100, 1, 1)],
        conv(3, 64, 3, 3, bias=False) + conv(64, 128, 4, 4, bias=False) + conv(128, 256, 4, 4, bias=False)
        + conv(256, 512, 4, 4, bias=False) + 2 * conv(512, 100, 4, 4)),
    "triangle.ebm.cifar": ("energy", {}, (3, 32, 32),
        [(64, 32, 32), (128, 16, 16), (256, 8, 8), (256, 4, 4), (1, 1, 1)],
        conv(3, 64, 3, 3, bias=False) + conv(64, 128, 4, 4, bias=False) + conv(128, 256, 4, 4, bias=False)
        + conv(256, 256, 4, 4, bias=False) + conv(256, 1, 4, 4)),
    # Table 6 (MNIST 28x28).  Its last layers are "4x4 conv" from a 3x3 map to 1x1; the presets
    # read them as 3x3 convolutions over the whole map (head_kernel = 3; the literal 4x4 with
    # zero padding is tested below).
    "triangle.generator.mnist": ("generator", {}, (100,),
        [(1024, 3, 3), (512, 7, 7), (256, 14, 14), (1, 28, 28)],
        conv(100, 1024, 3, 3, bias=False) + bn(1024) + conv(1024, 512, 4, 4, bias=False) + bn(512)
        + conv(512, 256, 4, 4, bias=False) + bn(256) + conv(256, 1, 4, 4)),
    "triangle.encoder.mnist": ("encoder", {}, (1, 28, 28),
        [(128, 14, 14), (256, 7, 7), (512, 3, 3), (100, 1, 1), (100, 1, 1)],
        conv(1, 128, 4, 4, bias=False) + conv(128, 256, 4, 4, bias=False) + conv(256, 512, 4, 4, bias=False)
        + 2 * conv(512, 100, 3, 3)),
    "triangle.ebm.mnist": ("energy", {}, (1, 28, 28),
        [(128, 14, 14), (256, 7, 7), (512, 3, 3), (1, 1, 1)],
        conv(1, 128, 4, 4, bias=False) + conv(128, 256, 4, 4, bias=False) + conv(256, 512, 4, 4, bias=False)
        + conv(512, 1, 3, 3)),
    # TPAMI 4.4 (MNIST): descriptor 64-128-256 4x4 s2 + fc 100.  Generator: four 4x4 transposed
    # convs, up-sampling {1, 2, 2, 2}, channels 512, 256, 128 and the image's 1 (the paper prints
    # 3, a slip for grey digits); 4 -> 7 is the code's step to reach 28.
    "coopnets.descriptor.mnist": ("energy", {}, (1, 28, 28),
        [(64, 14, 14), (128, 7, 7), (256, 4, 4), (100,)],
        conv(1, 64, 4, 4) + conv(64, 128, 4, 4) + conv(128, 256, 4, 4) + fc(256 * 4 * 4, 100)),
    "coopnets.generator.mnist": ("generator", {}, (100,),
        [(512, 4, 4), (256, 7, 7), (128, 14, 14), (1, 28, 28)],
        conv(100, 512, 4, 4) + bn_shift(512) + conv(512, 256, 4, 4) + bn_shift(256) + conv(256, 128, 4, 4) + bn_shift(128)
        + conv(128, 1, 4, 4)),
    # TPAMI 4.2-4.3 (objects and scenes 64x64): 64 5x5 s2, 128 3x3 s2, 256 3x3 s1, fc 100; the
    # generator is DCGAN's ("the same as [21]"): 4x4x512 -> 256 -> 128 -> 64 -> 3, 5x5 up 2.
    "coopnets.descriptor.scene": ("energy", {}, (3, 64, 64),
        [(64, 32, 32), (128, 16, 16), (256, 16, 16), (100,)],
        conv(3, 64, 5, 5) + conv(64, 128, 3, 3) + conv(128, 256, 3, 3) + fc(256 * 16 * 16, 100)),
    "coopnets.generator.scene": ("generator", {}, (100,),
        [(512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32), (3, 64, 64)],
        conv(100, 512, 4, 4) + bn_shift(512) + conv(512, 256, 5, 5) + bn_shift(256) + conv(256, 128, 5, 5) + bn_shift(128)
        + conv(128, 64, 5, 5) + bn_shift(64) + conv(64, 3, 5, 5)),
    # TPAMI 4.2 (aligned objects): 100 4x4 s2, 64 2x2 s1, fc with one output.
    "coopnets.descriptor.aligned_object": ("energy", {}, (3, 64, 64),
        [(100, 32, 32), (64, 32, 32), (1,)],
        conv(3, 100, 4, 4) + conv(100, 64, 2, 2) + fc(64 * 32 * 32, 1)),
    # TPAMI 4.5 CIFAR-10: descriptor {64, 128, 256}, filters {5, 3, 3}; the paper prints
    # sub-sampling {2, 2, 2}, the preset follows the authors' code {2, 2, 1} (both tested);
    # fc 100.  Generator {256, 128, 64, 3}, kernels {4, 5, 5, 5}, up-sampling {1, 2, 2, 2}; the
    # FC under z (width not printed) is the option fc_units, off in the preset.
    "coopnets.descriptor.cifar": ("energy", {}, (3, 32, 32),
        [(64, 16, 16), (128, 8, 8), (256, 8, 8), (100,)],
        conv(3, 64, 5, 5) + conv(64, 128, 3, 3) + conv(128, 256, 3, 3) + fc(256 * 8 * 8, 100)),
    "coopnets.descriptor.cifar[paper strides]": ("energy", {"strides": [2, 2, 2]}, (3, 32, 32),
        [(64, 16, 16), (128, 8, 8), (256, 4, 4), (100,)],
        conv(3, 64, 5, 5) + conv(64, 128, 3, 3) + conv(128, 256, 3, 3) + fc(256 * 4 * 4, 100)),
    "coopnets.generator.cifar": ("generator", {}, (100,),
        [(256, 4, 4), (128, 8, 8), (64, 16, 16), (3, 32, 32)],
        conv(100, 256, 4, 4) + bn_shift(256) + conv(256, 128, 5, 5) + bn_shift(128) + conv(128, 64, 5, 5) + bn_shift(64)
        + conv(64, 3, 5, 5)),
    # TPAMI 4.5 CelebA 128x128: descriptor {64, 128, 256}, filters {5, 3, 3}, sub-sampling
    # {2, 2, 1}, fc 100; generator {512, 256, 128, 64, 3}, kernels {4, 5, 5, 5, 5},
    # up-sampling {1, 2, 4, 2, 2}.
    "coopnets.descriptor.celeba128": ("energy", {}, (3, 128, 128),
        [(64, 64, 64), (128, 32, 32), (256, 32, 32), (100,)],
        conv(3, 64, 5, 5) + conv(64, 128, 3, 3) + conv(128, 256, 3, 3) + fc(256 * 32 * 32, 100)),
    "coopnets.generator.celeba128": ("generator", {}, (100,),
        [(512, 4, 4), (256, 8, 8), (128, 32, 32), (64, 64, 64), (3, 128, 128)],
        conv(100, 512, 4, 4) + bn_shift(512) + conv(512, 256, 5, 5) + bn_shift(256) + conv(256, 128, 5, 5) + bn_shift(128)
        + conv(128, 64, 5, 5) + bn_shift(64) + conv(64, 3, 5, 5)),
    # TPAMI 4.5 LSUN bedroom 256x256: descriptor {64, 128, 256, 512, 512}, filters
    # {5, 5, 5, 5, 3}, sub-sampling 2, fc 10; generator: FC under z (width not printed: 100 in
    # the preset), {512, 256, 128, 64, 3}, kernels {16, 5, 5, 5, 5}, up-sampling {1, 2, 2, 2, 2}.
    "coopnets.descriptor.lsun256": ("energy", {}, (3, 256, 256),
        [(64, 128, 128), (128, 64, 64), (256, 32, 32), (512, 16, 16), (512, 8, 8), (10,)],
        conv(3, 64, 5, 5) + conv(64, 128, 5, 5) + conv(128, 256, 5, 5) + conv(256, 512, 5, 5)
        + conv(512, 512, 3, 3) + fc(512 * 8 * 8, 10)),
    "coopnets.generator.lsun256": ("generator", {}, (100,),
        [(100,), (512, 16, 16), (256, 32, 32), (128, 64, 64), (64, 128, 128), (3, 256, 256)],
        fc(100, 100) + conv(100, 512, 16, 16) + bn_shift(512) + conv(512, 256, 5, 5) + bn_shift(256)
        + conv(256, 128, 5, 5) + bn_shift(128) + conv(128, 64, 5, 5) + bn_shift(64) + conv(64, 3, 5, 5)),
    # TPAMI 4.6 face completion 64x64: 96 5x5 s2, 128 5x5 s2, 256 5x5 s2, fc 50.
    "coopnets.descriptor.inpainting": ("energy", {}, (3, 64, 64),
        [(96, 32, 32), (128, 16, 16), (256, 8, 8), (50,)],
        conv(3, 96, 5, 5) + conv(96, 128, 5, 5) + conv(128, 256, 5, 5) + fc(256 * 8 * 8, 50)),
    # TPAMI 4.1 textures 224x224: 100 15x15 sub-sampling 3, 70 9x9, 30 7x7 (f = sum over the
    # top layer; padding (k - 1) / 2 from the code, so all maps are 75x75).  Generator: 7x7
    # latent map (one channel), five 5x5 transposed convs with up-sampling 2 (channels
    # 512-256-128-64-3 from the code; the paper does not print them).
    "coopnets.descriptor.texture": ("energy", {}, (3, 224, 224),
        [(100, 75, 75), (70, 75, 75), (30, 75, 75)],
        conv(3, 100, 15, 15) + conv(100, 70, 9, 9) + conv(70, 30, 7, 7)),
    "coopnets.generator.texture": ("generator", {}, (1, 7, 7),
        [(512, 14, 14), (256, 28, 28), (128, 56, 56), (64, 112, 112), (3, 224, 224)],
        conv(1, 512, 5, 5) + bn_shift(512) + conv(512, 256, 5, 5) + bn_shift(256) + conv(256, 128, 5, 5) + bn_shift(128)
        + conv(128, 64, 5, 5) + bn_shift(64) + conv(64, 3, 5, 5)),
    # TPAMI 4.7 dynamic textures, clips [3 colours, 64 frames, 128, 128].  Descriptor: 120
    # 5x5x5 filters sub-sampling 2; 30 spatially fully connected filters of temporal size 5
    # (sub-sampling 2); 10 1x1x5 filters (sub-sampling 2).  Generator: latent 5 channels x 10
    # frames x 1 x 1; 256 1x1x5; 128 spatially fully connected (temporal 5); 64 5x5x5 up 2;
    # 3 channels 5x5x2 up 2x2x1, BN between layers.  Shapes are [C, T, H, W].
    "coopnets.descriptor.spatial_temporal": ("energy", {}, (3, 64, 128, 128),
        [(120, 32, 64, 64), (30, 16, 1, 1), (10, 8, 1, 1)],
        conv(3, 120, 5, 5, 5) + conv(120, 30, 5, 64, 64) + conv(30, 10, 5, 1, 1)),
    "coopnets.generator.spatial_temporal": ("generator", {}, (5, 10, 1, 1),
        [(256, 14, 1, 1), (128, 32, 32, 32), (64, 64, 64, 64), (3, 64, 128, 128)],
        conv(5, 256, 5, 1, 1) + bn_shift(256) + conv(256, 128, 5, 32, 32) + bn_shift(128) + conv(128, 64, 5, 5, 5) + bn_shift(64)
        + conv(64, 3, 2, 5, 5)),
}


def _layer_types() -> tuple[type, ...]:
    from coop_coopnets.layers import CroppedConvTranspose, SpatiallyFullConv3d

    return (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear, CroppedConvTranspose,
            SpatiallyFullConv3d)


def _build(family: str, name: str, options: dict[str, Any]) -> nn.Module:
    regs = get_registries()
    fam = regs.family(family)
    with torch.device("meta"):
        return fam.create(name, structure(fam.get(name).options, options, "options"))


def _layer_shapes(net: nn.Module, x: torch.Tensor, run) -> list[tuple[int, ...]]:
    """Output shape (without the batch) of every outermost weight layer, in call order."""
    kinds = _layer_types()
    layers = dict(net.named_modules())
    outer = [m for n, m in layers.items() if isinstance(m, kinds)
             and not any(isinstance(layers[".".join(n.split(".")[:i])], kinds) for i in range(1, n.count(".") + 1))]
    seen: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:]))) for m in outer]
    try:
        run(net, x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _run(family: str):
    if family == "energy":
        return lambda net, x: net.score(x)
    return lambda net, x: net(x)


@pytest.mark.parametrize("key", list(NETWORKS))
def test_layer_shapes_and_parameter_count_match_the_paper(key):
    family, options, shape, layers, params = NETWORKS[key]
    name = key.split("[")[0]
    net = _build(family, name, options)
    x = torch.empty((2, *shape), device="meta")
    assert _layer_shapes(net, x, _run(family)) == layers
    assert sum(p.numel() for p in net.parameters()) == params
    if family == "energy":
        assert tuple(net.score(x).shape) == (2,)


def test_every_paper_network_is_covered():
    """Every triangle.* and coopnets.* preset is in the table above (a new preset needs its
    paper description here)."""
    regs = get_registries()
    names = set()
    for family in ("energy", "generator", "encoder"):
        names |= {e.name for e in regs.family(family).entries() if e.name.split(".")[0] in ("triangle", "coopnets")
                  and e.name.count(".") >= 2}
    assert names == {k.split("[")[0] for k in NETWORKS}


def test_triangle_table6_literal_4x4_head():
    """Table 6 printed literally: a 4x4 head on the 3x3 map (zero padding at the bottom/right)."""
    for family, role, out, c_out in (("encoder", "encoder", [(100, 1, 1), (100, 1, 1)], 100),
                                     ("energy", "ebm", [(1, 1, 1)], 1)):
        net = _build(family, f"triangle.{role}.mnist", {"head_kernel": 4})
        shapes = _layer_shapes(net, torch.empty((2, 1, 28, 28), device="meta"), _run(family))
        assert shapes == [(128, 14, 14), (256, 7, 7), (512, 3, 3), *out]
        heads = 2 if role == "encoder" else 1
        assert sum(p.numel() for p in net.parameters()) == (
            conv(1, 128, 4, 4, bias=False) + conv(128, 256, 4, 4, bias=False) + conv(256, 512, 4, 4, bias=False)
            + heads * conv(512, c_out, 4, 4))


def test_coopnets_generator_crops_and_normalises_as_the_tensorflow_code():
    """The MNIST generator's 4 -> 7 layer (4x4 kernel, stride 2: 10 full rows, 3 too many) keeps
    rows 1..7 as TensorFlow's 'SAME' does (1 dropped before, 2 after), and its batch norm is
    TensorFlow's default: batch statistics, eps 1e-3, a shift and no scale."""
    import torch.nn.functional as F

    from coop_coopnets.layers import BatchNormShift, CroppedConvTranspose

    torch.manual_seed(0)
    g = get_registries().generator.create("coopnets.generator.mnist")
    convs = [m for m in g.net if isinstance(m, CroppedConvTranspose)]
    norms = [m for m in g.net if isinstance(m, BatchNormShift)]
    assert len(convs) == 4 and len(norms) == 3
    layer = convs[1]
    x = torch.randn(3, 512, 4, 4)
    full = F.conv_transpose2d(x, layer.conv.weight, layer.conv.bias, stride=2)
    assert full.shape[-2:] == (10, 10)
    assert torch.allclose(layer(x), full[..., 1:8, 1:8], atol=1e-6)
    bn = norms[0]
    assert [n for n, _ in bn.named_parameters()] == ["bias"]
    with torch.no_grad():
        bn.bias.copy_(torch.linspace(-1, 1, bn.bias.numel()))
    h = torch.randn(5, bn.bias.numel(), 4, 4) * 3 + 1
    mean = h.mean(dim=(0, 2, 3), keepdim=True)
    var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (h - mean) / torch.sqrt(var + 1e-3) + bn.bias.view(1, -1, 1, 1)
    assert torch.allclose(bn(h), expected, atol=1e-5)
    entry = get_registries().generator.get("coopnets.generator.mnist")
    scaled = get_registries().generator.create(
        "coopnets.generator.mnist", entry.options(batch_norm_scale=True, batch_norm_eps=1e-5))
    assert [n.split(".")[-1] for n, _ in scaled.net[1].named_parameters()] == ["bias", "weight"]
