"""BigGAN generator and discriminator (plugins/coop_gan/biggan.py), each property checked against
an independent computation: output shapes at 32 and 64 px, spectral norm against
torch.linalg.svdvals, conditional BN against a hand-written batch norm fed by the shared
embedding (and the z chunks), the projection term against sum(embed(y) * h), the CIFAR preset's
parameter count against the architecture's formula, the conditioning convention, the plugin
contract for the registered entries, the four recipes, and short training runs with the hinge
`gan` objective and the `coopinit` objective on the embedded digits."""
from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from coop_gan.biggan import (
    BigGANDiscriminator,
    BigGANDiscriminatorOptions,
    BigGANGenerator,
    BigGANGeneratorOptions,
    SpectralNorm,
    parameter_count,
)

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are small: on a busy machine a second torch thread makes building and
    running them many times slower (thread contention), never faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _g(**kw) -> BigGANGenerator:
    torch.manual_seed(0)
    return BigGANGenerator(BigGANGeneratorOptions(**kw))


def _d(**kw) -> BigGANDiscriminator:
    torch.manual_seed(0)
    return BigGANDiscriminator(BigGANDiscriminatorOptions(**kw))


def _labels(n: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


# --- shapes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("res, attention", [(32, (16,)), (64, (32,))])
def test_output_shapes(res, attention):
    g = _g(resolution=res, ch=8, attention=attention, hier=True, shared=True, n_classes=5, dim_z=20)
    d = _d(resolution=res, ch=8, attention=attention, n_classes=5)
    z = g.sample_latent(3, torch.Generator().manual_seed(0))
    n_slots = {32: 4, 64: 5}[res]  # hierarchical z: one chunk per block plus the first
    assert z.shape == (3, (20 // n_slots) * n_slots)
    y = _labels(3, 5)
    x = g(z, y)
    assert x.shape == (3, 3, res, res) and x.abs().max() <= 1.0
    assert d.input_shape == (3, res, res)
    assert d.score(x, y).shape == (3,)
    assert len(g.attn) == 1 and len(d.attn) == 1


def test_width_follows_the_authors_layout():
    """G_arch/D_arch: 32 px 4ch everywhere; 64 px G 16-16-8-4 -> 16-8-4-2, D ch..16ch."""
    g32, g64 = _g(resolution=32, ch=8), _g(resolution=64, ch=8)
    assert [b.conv1.in_channels for b in g32.blocks] == [32, 32, 32]
    assert [b.conv2.out_channels for b in g64.blocks] == [128, 64, 32, 16]
    assert g64.linear.out_features == 128 * 16
    d32, d64 = _d(resolution=32, ch=8), _d(resolution=64, ch=8)
    assert [b.conv2.out_channels for b in d32.blocks] == [32] * 4
    assert [b.downsample for b in d32.blocks] == [True, True, False, False]
    assert [b.conv2.out_channels for b in d64.blocks] == [8, 16, 32, 64, 128]
    assert [b.conv_sc is None for b in d32.blocks] == [False, False, True, True]


# --- spectral norm ----------------------------------------------------------------------------
def _sn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if parametrize.is_parametrized(m, "weight")]


def test_spectral_norm_constrains_every_layer():
    g = _g(resolution=32, ch=8, attention=(16,), hier=True, shared=True, n_classes=5, dim_z=20)
    d = _d(resolution=32, ch=8, attention=(16,), n_classes=5)
    # Which layers: every conv and linear of G (not its class embedding), every conv, linear and
    # the class embedding of D.
    g_expected = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    d_expected = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert {id(m) for m in _sn_layers(g)} == {id(m) for m in g_expected}
    assert {id(m) for m in _sn_layers(d)} == {id(m) for m in d_expected}
    assert not parametrize.is_parametrized(g.shared, "weight")
    gen = torch.Generator().manual_seed(3)
    for model in (g, d):
        model.train()
        layers = _sn_layers(model)
        with torch.no_grad():  # weights far from norm 1, so the check is not trivially met
            for m in layers:
                w = m.parametrizations.weight.original
                w.copy_(torch.randn(w.shape, generator=gen) * 3.0)
        for _ in range(300):  # power iterations: one per training access of the weight
            for m in layers:
                m.weight  # noqa: B018
        for m in layers:
            w = m.weight.detach()
            top = torch.linalg.svdvals(w.reshape(w.shape[0], -1))[0].item()
            assert top == pytest.approx(1.0, abs=2e-3), m
            orig = m.parametrizations.weight.original.detach()
            sigma = torch.linalg.svdvals(orig.reshape(orig.shape[0], -1))[0]
            assert torch.allclose(w, orig / sigma, rtol=3e-3, atol=1e-6)


def test_spectral_norm_iterates_only_in_training_forwards():
    """Deterministic outside training forwards: eval mode, no_grad and frozen parameters leave
    u, v alone; a training forward with gradients updates them."""
    lin = nn.Linear(6, 4)
    parametrize.register_parametrization(lin, "weight", SpectralNorm(lin.weight, 1, 1e-8, warmup=0))
    sn = lin.parametrizations.weight[0]
    u0 = sn._u.clone()
    lin.eval()
    lin.weight  # noqa: B018
    assert torch.equal(sn._u, u0)
    lin.train()
    with torch.no_grad():
        lin.weight  # noqa: B018
    assert torch.equal(sn._u, u0)
    lin.parametrizations.weight.original.requires_grad_(False)
    lin.weight  # noqa: B018
    assert torch.equal(sn._u, u0)
    lin.parametrizations.weight.original.requires_grad_(True)
    lin.weight  # noqa: B018
    assert not torch.equal(sn._u, u0)


def test_score_is_per_example_and_deterministic():
    d = _d(resolution=32, ch=8, attention=(16,), n_classes=4).train()
    x = torch.rand((5, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = _labels(5, 4)
    with torch.no_grad():
        whole = d.score(x, y)
        single = torch.cat([d.score(x[i:i + 1], y[i:i + 1]) for i in range(5)])
        again = d.score(x, y)
        energy = d.energy(x, y)
    assert torch.allclose(whole, single, atol=1e-5)
    assert torch.equal(whole, again)
    assert torch.equal(energy, -whole)  # flat reference
    # A training forward with parameter gradients takes one power-iteration step; after it the
    # score is again a fixed function of x.
    d.score(x, y).sum().backward()
    with torch.no_grad():
        assert torch.equal(d.score(x, y), d.score(x, y))
    assert d.reference_std is None


# --- conditional batch norm -------------------------------------------------------------------
def _capture(module: nn.Module) -> dict:
    seen: dict = {}

    def hook(mod, args, out):
        seen["x"], seen["out"] = args[0].detach(), out.detach()

    module.register_forward_hook(hook)
    return seen


def _batch_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)  # biased, as BN normalises
    return (x - mean) / torch.sqrt(var + eps)


@pytest.mark.parametrize("hier", [False, True])
def test_conditional_bn_gains_and_biases_come_from_the_shared_embedding(hier):
    g = _g(resolution=32, ch=4, hier=hier, shared=True, shared_dim=6, n_classes=7, dim_z=16).train()
    z = g.sample_latent(4, torch.Generator().manual_seed(5))
    y = torch.tensor([3, 0, 6, 3])
    with torch.no_grad():  # make the embedding's influence visible
        g.shared.weight.copy_(torch.randn(g.shared.weight.shape, generator=torch.Generator().manual_seed(1)))
    block = 1
    bn = g.blocks[block].bn2
    seen = _capture(bn)
    g(z, y)
    emb = g.shared.weight.detach()[y]  # table lookup, not the module's call
    if hier:
        c = 16 // 4
        chunk = z[:, (block + 1) * c:(block + 2) * c]  # chunk 0 feeds the linear layer
        cond = torch.cat([emb, chunk], dim=1)
    else:
        cond = emb
    wg, wb = bn.gain.weight.detach(), bn.bias.weight.detach()
    assert wg.shape == (bn.bn.num_features, cond.shape[1])
    gain = 1.0 + cond @ wg.t()
    bias = cond @ wb.t()
    expected = _batch_norm(seen["x"], 1e-5) * gain[:, :, None, None] + bias[:, :, None, None]
    assert torch.allclose(seen["out"], expected, atol=1e-5)
    # Same input, another class: another output (the labels reach the BN).
    out_y = g(z, y)
    out_other = g(z, (y + 1) % 7)
    assert not torch.allclose(out_y, out_other)


def test_conditional_bn_without_shared_embedding_uses_per_layer_class_embeddings():
    """The authors' CIFAR layout: gain = 1 + E_g[y], bias = E_b[y] in each BN layer."""
    g = _g(resolution=32, ch=4, shared=False, n_classes=5, init="N02").train()
    assert g.shared is None
    bn = g.blocks[0].bn1
    seen = _capture(bn)
    z, y = g.sample_latent(3, torch.Generator().manual_seed(2)), torch.tensor([4, 1, 1])
    g(z, y)
    gain = 1.0 + bn.gain.weight.detach()[y]
    bias = bn.bias.weight.detach()[y]
    expected = _batch_norm(seen["x"], 1e-5) * gain[:, :, None, None] + bias[:, :, None, None]
    assert torch.allclose(seen["out"], expected, atol=1e-5)


# --- projection discriminator -----------------------------------------------------------------
def test_projection_term_is_sum_of_embedding_times_features():
    d = _d(resolution=32, ch=4, n_classes=7).eval()
    with torch.no_grad():  # embeddings and output weights of visible size
        d.embed.parametrizations.weight.original.normal_(0, 1, generator=torch.Generator().manual_seed(4))
    seen: dict = {}
    d.linear.register_forward_pre_hook(lambda mod, args: seen.__setitem__("h", args[0].detach()))
    x = torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.tensor([0, 6, 2, 2])
    with torch.no_grad():
        f = d.score(x, y)
        h = seen["h"]
        # h is ReLU then sum over space of the last block's output: recompute it independently.
        feat = x
        for block in d.blocks:
            feat = block(feat)
        assert torch.allclose(h, F.relu(feat).sum(dim=(2, 3)), atol=1e-5)
        e = d.embed.weight[y]
        w, b = d.linear.weight, d.linear.bias
        expected = h @ w[0] + b[0] + (e * h).sum(dim=1)
    assert torch.allclose(f, expected, rtol=1e-5, atol=1e-4)
    assert (e * h).sum(dim=1).abs().min() > 1e-3  # the projection is not negligible here


# --- parameter count --------------------------------------------------------------------------
def _g32_formula(ch: int, n_classes: int, dim_z: int, img: int = 3) -> int:
    """BigGAN-PyTorch G at 32 px, per-layer class embeddings (the CIFAR script), no attention."""
    c = 4 * ch
    linear = dim_z * c * 16 + c * 16
    conv3 = c * c * 9 + c
    block = 2 * conv3 + (c * c + c)  # conv1, conv2, 1x1 shortcut (the block upsamples)
    bn = 2 * n_classes * c if n_classes else 2 * c  # gain + bias embeddings, or BN's own affine
    out = 2 * c + (c * img * 9 + img)  # output BN affine + conv to RGB
    return linear + 3 * (block + 2 * bn) + out


def _d32_formula(ch: int, n_classes: int, img: int = 3) -> int:
    c = 4 * ch
    first = (img * c * 9 + c) + (c * c * 9 + c) + (img * c + c)
    second = 2 * (c * c * 9 + c) + (c * c + c)  # downsamples: 1x1 shortcut
    plain = 2 * (c * c * 9 + c)  # same width, no downsampling: identity shortcut
    return first + second + 2 * plain + (c + 1) + n_classes * c


def test_parameter_count_of_the_cifar_preset(registries):
    g = registries.family("generator").create("coopinit.generator.biggan32",
                                    registries.family("generator").get("coopinit.generator.biggan32").options(n_classes=10))
    d = registries.family("energy").create("coopinit.discriminator.biggan32",
                                 registries.family("energy").get("coopinit.discriminator.biggan32").options(n_classes=10))
    assert parameter_count(g) == _g32_formula(64, 10, 128) == 4_304_387
    assert parameter_count(d) == _d32_formula(64, 10) == 4_207_361
    # unconditional: plain BN affine, no projection embedding
    assert parameter_count(_g(resolution=32, ch=64, shared=False)) == _g32_formula(64, 0, 128)
    assert parameter_count(_d(resolution=32, ch=64)) == _d32_formula(64, 0)


# --- conditioning convention ------------------------------------------------------------------
def test_unconditional_mode_and_the_labels_convention():
    g, d = _g(resolution=32, ch=4, n_classes=0), _d(resolution=32, ch=4, n_classes=0)
    assert g.n_classes == 0 and d.n_classes == 0 and d.embed is None
    assert all(type(b.bn1.bn) is nn.BatchNorm2d and b.bn1.bn.affine for b in g.blocks)
    x = g(g.sample_latent(2))
    assert d.score(x).shape == (2,)
    with pytest.raises(ValueError, match="unconditional"):
        g(g.sample_latent(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        d.score(x, torch.tensor([0, 1]))
    gc, dc = _g(resolution=32, ch=4, n_classes=3), _d(resolution=32, ch=4, n_classes=3)
    with pytest.raises(ValueError, match="pass the labels"):
        gc(gc.sample_latent(2))
    with pytest.raises(ValueError, match="pass the labels"):
        dc.energy(x)
    with pytest.raises(ValueError, match="int64"):
        dc.score(x, torch.tensor([0.0, 1.0]))
    # unconditional hierarchical z: each block's BN is conditioned on its z chunk alone
    gh = _g(resolution=32, ch=4, n_classes=0, hier=True, dim_z=16)
    assert gh.blocks[0].bn1.gain.in_features == 4
    assert gh(gh.sample_latent(2)).shape == (2, 3, 32, 32)


def test_options_are_validated():
    with pytest.raises(ValueError, match="resolution"):
        BigGANGeneratorOptions(resolution=48)
    with pytest.raises(ValueError, match="attention"):
        BigGANGeneratorOptions(resolution=32, attention=(64,))
    with pytest.raises(ValueError, match="attention"):
        BigGANDiscriminatorOptions(resolution=64, attention=(64,))
    with pytest.raises(ValueError, match="shared"):
        BigGANGeneratorOptions(hier=True, shared=False, n_classes=10)


# --- registry and contract --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["biggan", "biggan32"])
def test_contract_of_the_registered_networks(registries, name):
    """The plugin contract (unconditional defaults and the contract's conditional variant), as
    tests/test_contract.py runs it for every registered entry."""
    from coopcore.contract import check_entry

    check_entry(registries, "generator", f"coopinit.generator.{name}")
    check_entry(registries, "energy", f"coopinit.discriminator.{name}")


def test_contract_of_the_64px_layout_at_small_width(registries):
    """The biggan64 presets' layout (hierarchical z, shared embedding, attention at 32) through
    the contract checks, conditional and not, at width 8 (tests/test_contract.py checks the
    full width)."""
    from coopcore.contract import check_energy_model, check_generator

    for k in (0, 5):
        go = attrs.evolve(registries.family("generator").get("coopinit.generator.biggan64").options(), ch=8, n_classes=k)
        do = attrs.evolve(registries.family("energy").get("coopinit.discriminator.biggan64").options(), ch=8, n_classes=k)
        torch.manual_seed(0)
        check_generator(BigGANGenerator(go), f"biggan64 G (n_classes {k})")
        check_energy_model(BigGANDiscriminator(do), f"biggan64 D (n_classes {k})")


def test_presets_hold_the_reference_configurations(registries):
    g32 = registries.family("generator").get("coopinit.generator.biggan32").options()
    d32 = registries.family("energy").get("coopinit.discriminator.biggan32").options()
    assert (g32.ch, g32.dim_z, g32.attention, g32.hier, g32.shared, g32.init) == (64, 128, (), False, False, "N02")
    assert (d32.ch, d32.attention, d32.init, d32.wide) == (64, (), "N02", True)
    g64 = registries.family("generator").get("coopinit.generator.biggan64").options()
    d64 = registries.family("energy").get("coopinit.discriminator.biggan64").options()
    assert (g64.resolution, g64.dim_z, g64.hier, g64.shared, g64.shared_dim, g64.attention) == (64, 120, True, True, 128, (32,))
    assert (d64.resolution, d64.attention, d64.init) == (64, (32,), "ortho")


# --- recipes ----------------------------------------------------------------------------------
PAIRS = [("biggan-cifar10", "coopinit-biggan-cifar10", 10, 32), ("biggan-imagenet64", "coopinit-biggan-imagenet64", 1000, 64)]


@pytest.mark.parametrize("gan, coop, n_classes, res", PAIRS)
def test_recipes_build_conditional_networks(registries, gan, coop, n_classes, res):
    from coopcore.experiment import resolve

    a = resolve(RECIPES / f"{coop}.toml", registries=registries)
    b = resolve(RECIPES / f"{gan}.toml", registries=registries)
    assert (a.objective.name, b.objective.name) == ("coopinit", "gan")
    da, db = a.to_data(), b.to_data()
    for cfg in (da, db):
        cfg["run"].pop("name")
    same = set(da) - {"objective", "description"}
    assert {k: da[k] for k in same} == {k: db[k] for k in same}  # the pair differs only in the objective
    shared = set(da["objective"]["options"]) & set(db["objective"]["options"])
    assert {k: da["objective"]["options"][k] for k in shared} == {k: db["objective"]["options"][k] for k in shared}
    o = da["objective"]["options"]
    assert (o["loss"], o["n_coop"], o["eta"], o["langevin_steps"], o["noise_scale"]) == ("hinge", 750_000, 1.0, 10, 0.0)
    # Built as the recipe says; the 64-px pair at width 8 instead of 64 (the full width is built
    # by the registry-wide contract test), everything else as written.
    go, do = b.models["generator"].options, b.models["descriptor"].options
    if res == 64:
        go, do = attrs.evolve(go, ch=8), attrs.evolve(do, ch=8)
    torch.manual_seed(0)
    g, d = BigGANGenerator(go), BigGANDiscriminator(do)
    assert (b.models["generator"].entry.factory, b.models["descriptor"].entry.factory) == (BigGANGenerator, BigGANDiscriminator)
    assert g.n_classes == d.n_classes == n_classes
    y = torch.tensor([0, n_classes - 1])
    x = g(g.sample_latent(2), y)
    assert x.shape == (2, 3, res, res) and d.score(x, y).shape == (2,)


def test_cifar_recipe_has_the_authors_settings(registries):
    from coopcore.experiment import resolve

    cfg = resolve(RECIPES / "biggan-cifar10.toml", registries=registries).to_data()
    # 4 D steps per G step, each on its own 50 real images: 200 per iteration, split
    assert cfg["data"]["batch_size"] == 200
    assert {o["lr"] for o in cfg["optimizers"].values()} == {2e-4}
    assert {tuple(o["betas"]) for o in cfg["optimizers"].values()} == {(0.0, 0.999)}
    o = cfg["objective"]["options"]
    assert (o["loss"], o["d_steps"], o["d_batches"]) == ("hinge", 4, "split")
    # EMA decay 0.9999 per generator step (200 images consumed), a copy for the first 1,000 steps
    assert 0.5 ** (200 / (o["g_ema_kimg"] * 1000)) == pytest.approx(0.9999, abs=1e-9)
    assert o["g_ema_start_kimg"] * 1000 == 1000 * 200
    # 500 epochs of 50,000 images at 200 real images per generator step
    assert cfg["run"]["iterations"] == 500 * 50_000 // 200


# --- short training runs on the digits --------------------------------------------------------
def _tiny_overrides(recipe: str, n_classes: int) -> list[str]:
    return [
        "run.iterations=3", "run.threads=1", "run.log_every=1", "run.sample_every=0", "run.sample_count=4",
        "run.eval_every=0", "run.checkpoint_every=3", "eval=[]",
        "data.name='digits'", "data.batch_size=8", "data.options={size=32, split='train'}",
        f"models.descriptor.options={{resolution=32, img_channels=1, ch=4, n_classes={n_classes}}}",
        f"models.generator.options={{resolution=32, img_channels=1, ch=4, dim_z=16, n_classes={n_classes}}}",
        "optimizers.descriptor.lr=1e-3", "optimizers.generator.lr=1e-3",
    ] + (["objective.options.n_coop=8", "objective.options.langevin_steps=2"] if recipe.startswith("coopinit") else [])


@pytest.mark.parametrize("n_classes", [0, 10], ids=["unconditional", "conditional"])
@pytest.mark.parametrize("recipe", ["biggan-cifar10", "coopinit-biggan-cifar10"])
def test_tiny_biggan_trains_on_the_digits(tmp_path, recipe, n_classes):
    """The CIFAR-10 recipes at width 4 on the 32x32 digits (with their labels when conditional):
    3 iterations of the hinge GAN, or 2 cooperative iterations (Langevin on D) then 1 adversarial."""
    from conftest import run_cli

    out = tmp_path / "run"
    args = ["train", recipe, "--out", out, "--no-progress"]
    for kv in _tiny_overrides(recipe, n_classes):
        args += ["--set", kv]
    assert run_cli(args) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for r in rows:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
    if recipe.startswith("coopinit"):
        assert [r["stage"] for r in rows] == [0.0, 0.0, 1.0]  # cooperative, then hinge GAN
        assert "langevin_grad_norm" in rows[0]
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(rows[-1])
    assert (out / "checkpoints" / "iter-00000003.ckpt").exists()
    assert list((out / "samples").glob("*generator*.png"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["models"]["generator"]["name"] == "coopinit.generator.biggan32"
    assert cfg["models"]["descriptor"]["options"]["n_classes"] == n_classes
