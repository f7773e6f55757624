"""Texture CoopNets (TPAMI 4.1, Experiment 1): the nets' geometry at the paper's size, the
receptive-field arithmetic of the descriptor measured by back-propagation, f as the sum of the
top layer's responses against a separate implementation, the generator's MatConvNet crop, and
the CPU recipe end to end through the CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coop_coopnets.layers import CroppedConvTranspose
from coop_coopnets.texture import (
    TextureDescriptor,
    TextureDescriptorOptions,
    TextureGenerator,
    TextureGeneratorOptions,
    texture_descriptor_sizes,
)
from conftest import run_cli

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_paper_descriptor_geometry():
    """224 x 224: 15 x 15 filters with sub-sampling 3 and padding 7 give (224 + 14 - 15) // 3 + 1
    = 75; the 9 x 9 and 7 x 7 layers (sub-sampling 1, padding 4 and 3) keep 75."""
    o = TextureDescriptorOptions()
    assert texture_descriptor_sizes(o) == [75, 75, 75]
    with torch.device("meta"):  # init_std=None: normal_ on meta loads torch's decompositions
        d = TextureDescriptor(TextureDescriptorOptions(init_std=None))
        outs = d.layer_outputs(torch.empty(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in outs] == [(100, 75, 75), (70, 75, 75), (30, 75, 75)]
    convs = [b[0] for b in d.blocks]
    assert [(c.kernel_size, c.stride) for c in convs] == [((15, 15), (3, 3)), ((9, 9), (1, 1)), ((7, 7), (1, 1))]
    assert d.reference_std == 0.012


def test_receptive_field_measured_by_backpropagation():
    """With positive weights and inputs every ReLU is open, so the input gradient of one top-layer
    unit covers exactly its receptive field: 57 x 57 pixels, and the next unit's is 3 pixels on."""
    torch.manual_seed(0)
    d = TextureDescriptor(TextureDescriptorOptions(input_shape=(1, 96, 96), channels=(2, 2, 2), padding="valid"))
    with torch.no_grad():
        for p in d.parameters():
            p.abs_().add_(1e-3)
    x = torch.rand(1, 1, 96, 96, requires_grad=True)
    top = d.layer_outputs(x)[-1]
    assert tuple(top.shape[2:]) == ((96 - 15) // 3 + 1 - 8 - 6,) * 2  # 28 - 8 - 6 = 14
    boxes = []
    for j in (4, 5):
        (g,) = torch.autograd.grad(top[0, 0, 4, j], x, retain_graph=True)
        nz = g[0, 0].nonzero()
        lo, hi = nz.min(0).values, nz.max(0).values
        boxes.append((lo.tolist(), (hi - lo + 1).tolist()))
    assert boxes[0] == ([12, 12], [57, 57])  # unit (4, 4) starts at 3 * 4
    assert boxes[1] == ([12, 15], [57, 57])


def test_score_is_the_sum_of_top_layer_responses():
    """A separate implementation with F.conv2d: f = sum over channels and positions of
    ReLU(conv3(ReLU(conv2(ReLU(conv1(Y)))))) with paddings 7, 4, 3."""
    torch.manual_seed(1)
    d = TextureDescriptor(TextureDescriptorOptions(input_shape=(1, 40, 40), channels=(4, 3, 2), init_std=0.05))
    x = torch.randn(3, 1, 40, 40)
    (c1, c2, c3) = (b[0] for b in d.blocks)
    h = F.relu(F.conv2d(x, c1.weight, c1.bias, stride=3, padding=7))
    h = F.relu(F.conv2d(h, c2.weight, c2.bias, padding=4))
    h = F.relu(F.conv2d(h, c3.weight, c3.bias, padding=3))
    torch.testing.assert_close(d.score(x), h.sum((1, 2, 3)))
    linear_top = TextureDescriptor(TextureDescriptorOptions(input_shape=(1, 40, 40), channels=(4, 3, 2),
                                                            top_activation=False))
    linear_top.load_state_dict(d.state_dict())
    h_lin = F.conv2d(F.relu(F.conv2d(F.relu(F.conv2d(x, c1.weight, c1.bias, stride=3, padding=7)),
                                     c2.weight, c2.bias, padding=4)), c3.weight, c3.bias, padding=3)
    torch.testing.assert_close(linear_top.score(x), h_lin.sum((1, 2, 3)))


def test_paper_generator_geometry():
    """7 x 7 latent map, five 5 x 5 transposed convolutions with up-sampling 2: 7 -> 224."""
    with torch.device("meta"):
        g = TextureGenerator(TextureGeneratorOptions(init_std=None))
    assert g.latent_shape == (1, 7, 7) and g.output_shape == (3, 224, 224) and g.sigma == 0.3
    layers = [m for m in g.net if isinstance(m, CroppedConvTranspose)]
    assert [m.size_out for m in layers] == [(14, 14), (28, 28), (56, 56), (112, 112), (224, 224)]
    assert all(m.conv.kernel_size == (5, 5) and m.conv.stride == (2, 2) for m in layers)
    assert all(m.crops == ((1, 2), (1, 2)) for m in layers)  # MatConvNet crop [1, 2, 1, 2]
    assert isinstance(g.net[-1], torch.nn.Tanh)


def test_generator_crop_is_the_matconvnet_crop():
    """MatConvNet's convt with crop [1, 2, 1, 2]: the full transposed output without its first
    row/column and its last two."""
    torch.manual_seed(2)
    g = TextureGenerator(TextureGeneratorOptions(latent_size=3, channels=(4,), out_channels=1, batch_norm=False,
                                                 output="none"))
    z = torch.randn(2, *g.latent_shape)
    l1, act, l2 = g.net
    full1 = F.conv_transpose2d(z, l1.conv.weight, l1.conv.bias, stride=2)[:, :, 1:-2, 1:-2]
    full2 = F.conv_transpose2d(act(full1), l2.conv.weight, l2.conv.bias, stride=2)[:, :, 1:-2, 1:-2]
    assert tuple(full2.shape) == (2, 1, 12, 12)
    torch.testing.assert_close(g(z), full2)


@pytest.mark.parametrize("recipe", ["coopnets-texture.toml", "coopnets-texture-small.toml"])
def test_texture_recipes_resolve_and_agree_with_their_data(registries, recipe):
    from coopcore.experiment import resolve

    r = resolve(RECIPES / recipe, registries=registries)
    size = r.data.options.size
    d, g = r.models["descriptor"].options, r.models["generator"].options
    assert isinstance(g, TextureGeneratorOptions)
    assert d.input_shape == (g.out_channels, size, size)
    assert g.size == size


def test_texture_small_recipe_trains_through_the_cli(registries, tmp_path):
    out = tmp_path / "run"
    sets = ["run.iterations=2", "run.tensorboard=false", "run.sample_every=2", "run.checkpoint_every=2",
            "run.sample_count=2", "data.options.size=32", "models.descriptor.options.input_shape=[1,32,32]",
            "models.descriptor.options.channels=[4,4,2]", "models.generator.options.latent_size=2",
            "models.generator.options.channels=[8,4,4]", "samplers.revision.options.n_steps=2",
            "objective.options.n_chains=2"]
    args = ["train", RECIPES / "coopnets-texture-small.toml", "--out", out, "--no-progress"]
    assert run_cli([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [
        "iter-00000002-generator.png", "iter-00000002-revised.png"]
    assert (out / "checkpoints" / "iter-00000002.ckpt").exists()
