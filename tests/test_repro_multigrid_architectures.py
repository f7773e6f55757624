"""The multigrid paper's three per-grid descriptors (Gao et al., CVPR 2018, Section 7.1) against
the paper's text: layer by layer (kernel, stride, channels, the feature-map size each layer
produces, batch normalisation + ReLU after every convolution, a fully connected layer to one
output) and in parameter counts derived by hand below, and what the Table 2 probe concatenates.

Section 7.1: "grid1 has a 3-layer network with 5x5 stride 2 filters at the first layer and 3x3
stride 1 filters at the next two layers; grid2 has a 4-layer network with 5x5 stride 2 filters
at the first layer and 3x3 stride 1 filters at the next three layers; grid3 has a 3-layer network
with 5x5 stride 2 filters at the first layer, 3x3 stride 2 filters at the second layer, and 3x3
stride 1 filters at the third layer.  Numbers of channels are 96-128-256 at grid1 and grid3, and
96-128-256-512 at grid2.  A fully-connected layer with 1 channel output is added on top of every
grid [...].  Batch normalization and ReLU activations are applied after every convolution."
Grids: 4x4, 16x16, 64x64 colour images.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from coopcore.plugin_manager import load_registries

# name -> input, then per conv: (out channels, kernel, stride, output side), then the fc input size.
PAPER = {
    "multigrid.descriptor.grid1": ((3, 4, 4), [(96, 5, 2, 2), (128, 3, 1, 2), (256, 3, 1, 2)], 256 * 2 * 2),
    "multigrid.descriptor.grid2": ((3, 16, 16), [(96, 5, 2, 8), (128, 3, 1, 8), (256, 3, 1, 8), (512, 3, 1, 8)],
                                   512 * 8 * 8),
    "multigrid.descriptor.grid3": ((3, 64, 64), [(96, 5, 2, 32), (128, 3, 2, 16), (256, 3, 1, 16)], 256 * 16 * 16),
}

# Parameter counts by hand.  A conv followed by batch normalisation carries no bias (BN's shift
# replaces it), BN has a scale and a shift per channel, and the fc layer to 1 output has no bias
# (a constant in f cancels against log Z).
#   grid1: convs 96*3*25 + 128*96*9 + 256*128*9 = 7,200 + 110,592 + 294,912 = 412,704;
#          BN 2*(96+128+256) = 960; fc 1,024                                   -> 414,688
#   grid2: convs 7,200 + 110,592 + 294,912 + 512*256*9 (1,179,648) = 1,592,352;
#          BN 2*(96+128+256+512) = 1,984; fc 512*8*8 = 32,768                  -> 1,627,104
#   grid3: convs 412,704 (as grid1); BN 960; fc 256*16*16 = 65,536            -> 479,200
PARAMETERS = {"multigrid.descriptor.grid1": 414_688, "multigrid.descriptor.grid2": 1_627_104,
              "multigrid.descriptor.grid3": 479_200}


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _layer_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [c.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:]))) for c in _convs(model)]
    with torch.no_grad():
        model.score(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.fixture(scope="module")
def reg():
    return load_registries()


@pytest.mark.parametrize("name", sorted(PAPER))
def test_layers_follow_section_7_1(reg, name):
    shape, layers, fc_in = PAPER[name]
    model = reg.energy.create(name)
    assert model.input_shape == shape
    convs = _convs(model)
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (ch, (k, k), (s, s)) for ch, k, s, _ in layers]
    assert convs[0].in_channels == 3
    x = 255.0 * torch.rand(4, *shape, generator=torch.Generator().manual_seed(0))
    assert _layer_outputs(model, x) == [(ch, side, side) for ch, _, _, side in layers]
    # after every convolution: batch normalisation of its channels, then ReLU
    seq = list(model.features)
    for conv_wrapper, ch in zip([m for m in seq if any(isinstance(c, nn.Conv2d) for c in m.modules())],
                                [ch for ch, *_ in layers]):
        i = seq.index(conv_wrapper)
        assert isinstance(seq[i + 1], nn.BatchNorm2d) and seq[i + 1].num_features == ch
        assert isinstance(seq[i + 2], nn.ReLU)
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == fc_in and model.fc.out_features == 1
    assert model.score(x).shape == (4,)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_parameter_counts(reg, name):
    model = reg.energy.create(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]


def test_three_grids_chain_4_16_64(reg):
    """The three grids' inputs are 4x4, 16x16 and 64x64 (d = 4 from the 1x1 start), and the
    multigrid recipe wires exactly these descriptors into roles grid1..grid3."""
    from coopcore.config import read_recipe_data
    from coopcore.recipes import __file__ as recipes_init
    from pathlib import Path

    sides = [reg.energy.create(f"multigrid.descriptor.grid{k}").input_shape[-1] for k in (1, 2, 3)]
    assert sides == [4, 16, 64] and all(b == 4 * a for a, b in zip([1, *sides], sides))
    recipe = read_recipe_data(Path(recipes_init).parent / "multigrid-celeba.toml")
    assert {role: m["name"] for role, m in recipe["models"].items()} == {
        f"grid{k}": f"multigrid.descriptor.grid{k}" for k in (1, 2, 3)}
    assert recipe["objective"]["options"]["n_grids"] == 3 and recipe["objective"]["options"]["factor"] == 4


def test_table2_probe_concatenates_the_three_top_maps(reg):
    """SVHN at 32x32 (multigrid-svhn): top maps 256x2x2 (grid1), 512x8x8 (grid2) and 256x8x8
    (grid3 on 32x32); 64 probe channels each give 64 * (4 + 64 + 64) = 8,448 features."""
    from coop_metrics.probe import ProbeHead, _Extractor

    grid3 = reg.energy.create("multigrid.descriptor.grid3", reg.energy.get("multigrid.descriptor.grid3").options(
        input_shape=(3, 32, 32)))
    models = [reg.energy.create("multigrid.descriptor.grid1"), reg.energy.create("multigrid.descriptor.grid2"), grid3]
    extractor = _Extractor(models, [(4, 4), (16, 16), (32, 32)])
    maps = extractor(255.0 * torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    assert [tuple(f.shape[1:]) for f in maps] == [(256, 2, 2), (512, 8, 8), (256, 8, 8)]
    head = ProbeHead([tuple(f.shape[1:]) for f in maps], 64, 10, torch.Generator().manual_seed(0))
    assert head.dim == 8_448 and head.fc.in_features == 8_448
    assert [c.kernel_size + c.stride + (c.out_channels,) for c in head.convs] == [(3, 3, 1, 1, 64)] * 3
    assert head(maps).shape == (3, 10)
