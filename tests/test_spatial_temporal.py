"""Spatial-temporal CoopNets (TPAMI 4.7, Table 6): the nets' geometry at the paper's size, the
exact transposed-convolution cropping against TensorFlow's definition (the adjoint of a padded
convolution), the fast spatially-fully-connected layers against PyTorch's own convolutions, and
a tiny clip trained through the framework."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coop_coopnets.layers import (
    BatchNormShift,
    CroppedConvTranspose,
    SpatiallyFullConv3d,
    SpatiallyFullConvTranspose3d,
    transposed_crop,
)
from coop_coopnets.networks3d import (
    SpatialTemporalDescriptor,
    SpatialTemporalDescriptorOptions,
    SpatialTemporalGenerator,
    SpatialTemporalGeneratorOptions,
)
from coop_coopnets.objectives import _reconstruction_loss
from coop_coopnets.samplers import Langevin, LangevinOptions

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# -- transposed-convolution geometry ------------------------------------------------------
@pytest.mark.parametrize(
    ("size_in", "size_out", "kernel", "stride", "expected"),
    [
        (32, 64, 5, 2, (1, 2, 0)),   # TF 'SAME': 3 rows too many, 1 before and 2 after
        (64, 64, 2, 1, (0, 1, 0)),   # stride 1, even kernel: one row, after
        (14, 32, 5, 2, (0, 0, 1)),   # TF 'VALID' to a larger output_shape: one bias-only row
        (10, 14, 5, 1, (0, 0, 0)),   # the full output
        (7, 14, 5, 2, (1, 2, 0)),    # MatConvNet crop [1, 2] of the texture generator
    ],
)
def test_transposed_crop_hand_values(size_in, size_out, kernel, stride, expected):
    assert transposed_crop(size_in, size_out, kernel, stride) == expected


@pytest.mark.parametrize(("size_in", "size_out", "kernel", "stride"), [(14, 33, 5, 2), (5, 4, 5, 2), (4, 4, 2, 2)])
def test_transposed_crop_rejects_unreachable_sizes(size_in, size_out, kernel, stride):
    with pytest.raises(ValueError):
        transposed_crop(size_in, size_out, kernel, stride)


def _tf_forward_pads(size_out: int, size_in: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding of the forward convolution (size_out -> size_in) TensorFlow uses: SAME if the
    output is size_out / stride, else VALID (rows at the end that no window reaches)."""
    if -(-size_out // stride) == size_in:
        total = max((size_in - 1) * stride + kernel - size_out, 0)
        return total // 2, total - total // 2
    return 0, 0


@pytest.mark.parametrize(
    ("size_in", "size_out", "kernel", "stride"),
    [((14, 1, 1), (32, 1, 1), (5, 1, 1), (2, 1, 1)), ((4, 4, 4), (8, 8, 8), (5, 5, 5), (2, 2, 2)),
     ((8, 8, 8), (8, 16, 16), (2, 5, 5), (1, 2, 2))],
)
def test_cropped_transposed_conv_is_the_adjoint_of_the_tensorflow_convolution(size_in, size_out, kernel, stride):
    """TensorFlow defines conv3d_transpose as the gradient of conv3d with the same padding: so
    <T(u), x> = <u, conv(pad(x))> for all u, x.  Check T(u) = d/dx <u, conv(pad(x))>."""
    torch.manual_seed(0)
    layer = CroppedConvTranspose(3, 2, kernel, stride, size_in, size_out)
    torch.nn.init.zeros_(layer.conv.bias)
    u = torch.randn(2, 3, *size_in)
    x = torch.randn(2, 2, *size_out, requires_grad=True)
    pads = [p for n_out, n_in, k, s in reversed(list(zip(size_out, size_in, kernel, stride)))
            for p in _tf_forward_pads(n_out, n_in, k, s)]
    y = F.conv3d(F.pad(x, pads), layer.conv.weight, stride=stride)
    y = y[(slice(None), slice(None), *(slice(0, n) for n in size_in))]  # VALID windows beyond size_in unused
    assert tuple(y.shape[2:]) == tuple(size_in)
    (adjoint,) = torch.autograd.grad((u * y).sum(), x)
    out = layer(u)
    assert tuple(out.shape) == (2, 2, *size_out)
    torch.testing.assert_close(out, adjoint, rtol=1e-4, atol=1e-5)


def test_spatially_full_conv_equals_conv3d():
    torch.manual_seed(1)
    layer = SpatiallyFullConv3d(4, 3, temporal_kernel=3, temporal_stride=2, temporal_padding=1, spatial=(5, 6))
    x = torch.randn(2, 4, 9, 5, 6, requires_grad=True)
    fast = layer(x)
    ref = F.conv3d(x, layer.weight, layer.bias, stride=(2, 1, 1), padding=(1, 0, 0))
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    g_fast = torch.autograd.grad(fast.pow(2).sum(), (x, layer.weight))
    g_ref = torch.autograd.grad(ref.pow(2).sum(), (x, layer.weight))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_spatially_full_transposed_conv_equals_conv_transpose3d():
    torch.manual_seed(2)
    layer = SpatiallyFullConvTranspose3d(4, 3, temporal_kernel=5, temporal_stride=2, spatial=(3, 4),
                                         temporal_output_padding=1)
    z = torch.randn(2, 4, 6, 1, 1, requires_grad=True)
    fast = layer(z)
    ref = F.conv_transpose3d(z, layer.weight, layer.bias, stride=(2, 1, 1), output_padding=(1, 0, 0))
    assert fast.shape == ref.shape == (2, 3, 16, 3, 4)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    g_fast = torch.autograd.grad(fast.pow(2).sum(), (z, layer.weight))
    g_ref = torch.autograd.grad(ref.pow(2).sum(), (z, layer.weight))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# -- the paper's configuration (128 x 128 pixels x 64 frames), on the meta device ----------
def test_paper_descriptor_sizes():
    """Layer 1 halves pixels and frames; layer 2 is spatially fully connected (1 x 1 maps, its
    filter spans layer 1's 64 x 64 map); layers 2 and 3 halve the frames (kernel 5, pad 2)."""
    # init_std=None: the shapes do not depend on the init, and normal_ on the meta device
    # loads torch's decompositions (seconds).
    with torch.device("meta"):
        d = SpatialTemporalDescriptor(SpatialTemporalDescriptorOptions(init_std=None))
        outs = d.layer_outputs(torch.empty(1, 3, 64, 128, 128))
        f = d.score(torch.empty(1, 3, 64, 128, 128))
    assert [tuple(o.shape[1:]) for o in outs] == [(120, 32, 64, 64), (30, 16, 1, 1), (10, 8, 1, 1)]
    assert tuple(d.conv1.weight.shape) == (120, 3, 5, 5, 5) and d.conv1.stride == (2, 2, 2)
    assert tuple(d.conv2.weight.shape) == (30, 120, 5, 64, 64)
    assert d.conv2.stride == (2, 1, 1) and d.conv2.padding == (2, 0, 0)
    assert tuple(d.conv3.weight.shape) == (10, 30, 5, 1, 1) and d.conv3.padding == (2, 0, 0)
    assert tuple(f.shape) == (1,)
    assert d.input_shape == (3, 64, 128, 128) and d.reference_std == 0.016


def test_paper_generator_sizes():
    """z: 5 channels x 10 frames x 1 x 1 -> 14 frames (1x1x5) -> 32 x 32 x 32 frames (spatially
    full, temporal 5) -> 64^3 (5x5x5 up 2) -> 128 x 128 x 64 frames (5x5x2 up 2,2,1)."""
    with torch.device("meta"):
        g = SpatialTemporalGenerator(SpatialTemporalGeneratorOptions(init_std=None))
        outs = g.layer_outputs(torch.empty(1, *g.latent_shape))
    assert g.latent_shape == (5, 10, 1, 1) and g.output_shape == (3, 64, 128, 128)
    assert [tuple(o.shape[1:]) for o in outs[:4]] == [
        (256, 14, 1, 1), (128, 32, 32, 32), (64, 64, 64, 64), (3, 64, 128, 128)]
    assert tuple(outs[-1].shape) == (1, 3, 64, 128, 128)
    kernels = [tuple(m.conv.kernel_size) for m in g.net if isinstance(m, CroppedConvTranspose)]
    assert kernels == [(5, 1, 1), (5, 32, 32), (5, 5, 5), (2, 5, 5)]  # (frames, pixels, pixels)
    strides = [tuple(m.conv.stride) for m in g.net if isinstance(m, CroppedConvTranspose)]
    assert strides == [(1, 1, 1), (2, 1, 1), (2, 2, 2), (1, 2, 2)]
    assert sum(isinstance(m, BatchNormShift) for m in g.net) == 3
    assert isinstance(g.net[-1], torch.nn.Tanh)


def test_generator_rejects_sizes_it_cannot_reach():
    with pytest.raises(ValueError, match="'size'"):
        SpatialTemporalGeneratorOptions(size=126)
    with pytest.raises(ValueError, match="'latent_frames'"):
        SpatialTemporalGeneratorOptions(frames=8, size=16, latent_frames=1)
    with pytest.raises(ValueError, match="'temporal_paddings'"):
        SpatialTemporalDescriptorOptions(temporal_paddings=(-1, 2))


def _tiny_descriptor() -> SpatialTemporalDescriptor:
    return SpatialTemporalDescriptor(SpatialTemporalDescriptorOptions(
        input_shape=(3, 8, 16, 16), channels=(4, 3, 2), reference_std=0.5, init_std=None))


def test_layer2_sees_every_pixel_layer1_a_5x5x5_window():
    """'Spatially fully connected': a layer-2 unit depends on every pixel of the clip; a layer-1
    unit on a 5 x 5 x 5 window only.  Positive weights and inputs keep every ReLU open."""
    torch.manual_seed(0)
    d = _tiny_descriptor()
    with torch.no_grad():
        for p in d.parameters():
            p.abs_().add_(0.01)
    x = torch.rand(1, 3, 8, 16, 16, requires_grad=True)
    h1, h2, _ = d.layer_outputs(x)
    (g1,) = torch.autograd.grad(h1[0, 0, 1, 3, 3], x, retain_graph=True)
    support = g1[0].abs().sum(0).nonzero()
    extent = (support.max(0).values - support.min(0).values + 1).tolist()
    assert extent == [5, 5, 5]
    # TF 'SAME' padding 1 before: layer-1 unit (t, i, j) = 1, 3, 3 starts at input 2*1-1, 2*3-1.
    assert support.min(0).values.tolist() == [1, 5, 5]
    (g2,) = torch.autograd.grad(h2[0, 0, 0].sum(), x)
    assert bool((g2[0].abs().sum((0, 1)) > 0).all())  # every pixel


def test_langevin_runs_on_video_batches():
    """Without noise, Langevin on the reference N(0, s^2) alone shrinks x by (1 - d^2/(2 s^2))
    per step, for 5-D clips as for images; the mask keeps frames fixed."""
    s, d, n = 0.5, 0.1, 3
    x0 = torch.randn(2, 3, 4, 6, 6)
    sampler = Langevin(LangevinOptions(n_steps=n, step_size=d, noise=False))
    out = sampler.run(lambda x: -x.flatten(1).pow(2).sum(1) / (2 * s**2), x0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.samples, x0 * (1 - d**2 / (2 * s**2)) ** n)
    mask = torch.zeros_like(x0)
    mask[:, :, :2] = 1
    masked = sampler.run(lambda x: -x.flatten(1).pow(2).sum(1), x0, torch.Generator(), mask=mask)
    assert torch.equal(masked.samples[:, :, 2:], x0[:, :, 2:])


def test_generator_loss_mean_is_the_mean_squared_error():
    """Table 6's code: reduce_mean((Y - g)^2) / (2 sigma^2) over every element."""
    y, r = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 3, 4, 5, 5)
    torch.testing.assert_close(_reconstruction_loss(y, r, 1.0, "mean"), F.mse_loss(r, y) / 2)
    torch.testing.assert_close(_reconstruction_loss(y, r, 0.3, "sum"),
                               F.mse_loss(r, y, reduction="sum") / (2 * 0.3**2 * 2))


# -- a tiny clip through the framework ----------------------------------------------------
def _tiny_clip_config(registries) -> dict:
    if "video" in registries.dataset:
        data = {"name": "video", "batch_size": 1, "options": {"frames": 8, "size": 16}}
    else:
        data = {"name": "synthetic", "batch_size": 1, "options": {"shape": [3, 8, 16, 16], "n": 1}}
    return {
        "run": {"name": "tiny-clip", "seed": 0, "iterations": 3, "tensorboard": False},
        "data": data,
        "models": {
            "descriptor": {"name": "coopnets.descriptor.spatial_temporal", "options": {
                "input_shape": [3, 8, 16, 16], "channels": [6, 4, 2]}},
            "generator": {"name": "coopnets.generator.spatial_temporal", "options": {
                "frames": 8, "size": 16, "latent_frames": 2, "temporal_kernels": [1, 5, 5, 2],
                "channels": [8, 6, 4]}},
        },
        "samplers": {"revision": {"name": "langevin_revision", "options": {"n_steps": 3}}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 0.01, "betas": [0.5, 0.999]},
                       "generator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}},
        "objective": {"name": "coopnets", "options": {"n_chains": 2, "generator_loss": "mean"}},
    }


def test_tiny_clip_trains_through_the_framework(registries):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve_data
    from coopcore.protocols import Batch

    resolved = resolve_data(_tiny_clip_config(registries), registries=registries)
    torch.manual_seed(0)
    exp = build_experiment(resolved, torch.device("cpu"), registries=registries)
    assert tuple(exp.dataset.shape) == (3, 8, 16, 16)
    models = exp.parts.models
    before = {r: [p.detach().clone() for p in m.parameters()] for r, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    x = exp.dataset.get_batch(torch.tensor([0]))
    for _ in range(3):
        result = exp.objective.step(Batch(x, torch.tensor([0])), gen)
        assert all(bool(torch.isfinite(v)) for v in result.scalars.values()), result.scalars
    for role, m in models.items():
        assert any(not torch.equal(p, b) for p, b in zip(m.parameters(), before[role])), role
    samples = exp.objective.samples(2, gen)
    assert {k: tuple(v.shape) for k, v in samples.items()} == {
        "generator": (2, 3, 8, 16, 16), "revised": (2, 3, 8, 16, 16)}
    # the G2 loss is the mean over elements / 2 (sigma = 1): below 2 for tanh outputs and
    # revised samples near [-1, 1]
    assert 0 <= float(result.scalars["loss_generator"]) < 2


def test_dyntex_recipe_resolves_and_agrees_with_its_data(registries):
    from coopcore.experiment import resolve

    r = resolve(RECIPES / "coopnets-dyntex.toml", registries=registries)
    data, d, g = r.data.options, r.models["descriptor"].options, r.models["generator"].options
    assert d.input_shape == (3, data.frames, data.size, data.size)
    assert (g.frames, g.size, g.out_channels) == (data.frames, data.size, 3)
    assert r.samplers["revision"].options.n_steps == 10
    assert r.samplers["revision"].options.step_size == 0.002 and d.reference_std == 0.016
    assert r.objective.options.n_chains == 2 and r.objective.options.generator_loss == "mean"
    assert g.sigma == 1.0


def test_dyntex_recipe_trains_a_tiny_clip_through_the_cli(registries, tmp_path):
    """The Table 6 recipe shrunk to an 8-frame 16x16 clip: trains, writes sample grids of the
    5-D samples and evaluates PSNR / SSIM."""
    from conftest import run_cli

    out = tmp_path / "run"
    sets = ["run.iterations=2", "run.tensorboard=false", "run.sample_every=2", "run.checkpoint_every=2",
            "data.options.frames=8", "data.options.size=16", "models.descriptor.options.input_shape=[3,8,16,16]",
            "models.descriptor.options.channels=[6,4,2]", "models.generator.options.frames=8",
            "models.generator.options.size=16", "models.generator.options.latent_frames=2",
            "models.generator.options.temporal_kernels=[1,5,5,2]", "models.generator.options.channels=[8,6,4]"]
    args = ["train", RECIPES / "coopnets-dyntex.toml", "--out", out, "--no-progress"]
    assert run_cli([*args, *[x for s in sets for x in ("--set", s)]]) == 0
    assert (out / "samples" / "iter-00000002-revised.png").exists()
    assert "psnr_ssim_revised" in (out / "evaluations.jsonl").read_text()


@pytest.mark.parametrize(("family", "name"), [("energy", "coopnets.descriptor.spatial_temporal"),
                                              ("generator", "coopnets.generator.spatial_temporal")])
def test_small_contract_configurations_pass_the_contract(registries, family, name):
    """`contract_options` (the same nets on an 8-frame 16x16 clip) satisfy the protocol checks."""
    from coopcore.config import structure
    from coopcore.contract import check_energy_model, check_generator

    entry = registries.family(family).get(name)
    model = entry.factory(structure(entry.options, entry.factory.contract_options))
    (check_energy_model if family == "energy" else check_generator)(model, name)
