"""CUT (PatchNCE) and CoopInit on CUT, and the unpaired two-domain datasets
(plugins/coop_gan/cut.py, plugins/coop_datasets/unpaired.py, docs/cut.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coopcore.contract import check_entry
from coopcore.errors import UsageError
from coopcore.experiment import resolve, resolve_data
from coopcore.run import train as train_run

from conftest import run_cli, straight_and_split_runs_agree

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# ---------------------------------------------------------------------------------------
# PatchNCE
def _reference_nce(q: np.ndarray, k: np.ndarray, batch: int, tau: float) -> np.ndarray:
    """CUT's PatchNCE written out per query with float64 exp/log: for query i of image b the
    classes are the positive q_i.k_i and the negatives q_i.k_j (j != i, same image), plus the
    masked self-pair at -10; the loss is -log softmax of the positive."""
    n = q.shape[0]
    p = n // batch
    out = np.zeros(n)
    for b in range(batch):
        for i in range(p):
            r = b * p + i
            logits = [float(q[r] @ k[r])]
            for j in range(p):
                logits.append(-10.0 if j == i else float(q[r] @ k[b * p + j]))
            z = np.array(logits) / tau
            out[r] = -(z[0] - (z.max() + math.log(np.exp(z - z.max()).sum())))
    return out


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def test_patch_nce_equals_an_independent_cross_entropy():
    from coop_gan.cut import patch_nce_loss

    g = torch.Generator().manual_seed(0)
    batch, p, d = 2, 5, 4
    q = _unit_rows(torch.randn(batch * p, d, generator=g, dtype=torch.float64))
    k = _unit_rows(torch.randn(batch * p, d, generator=g, dtype=torch.float64))
    got = patch_nce_loss(q, k, batch, temperature=0.07)
    want = _reference_nce(q.numpy(), k.numpy(), batch, 0.07)
    assert got.shape == (batch * p,)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)
    # the keys are not trained through: no gradient reaches them
    q.requires_grad_(True)
    k.requires_grad_(True)
    patch_nce_loss(q, k, batch, 0.07).sum().backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0


def test_patch_nce_all_negatives_from_minibatch_treats_the_batch_as_one_image():
    from coop_gan.cut import patch_nce_loss

    g = torch.Generator().manual_seed(1)
    q = _unit_rows(torch.randn(6, 3, generator=g, dtype=torch.float64))
    k = _unit_rows(torch.randn(6, 3, generator=g, dtype=torch.float64))
    got = patch_nce_loss(q, k, batch_size=2, temperature=0.5, all_negatives_from_minibatch=True)
    np.testing.assert_allclose(got.numpy(), _reference_nce(q.numpy(), k.numpy(), 1, 0.5), rtol=1e-10)


def test_patch_nce_vanishes_for_matched_features_with_distinct_negatives():
    from coop_gan.cut import patch_nce_loss

    p = 8
    eye = torch.eye(p, dtype=torch.float64)  # each query equals its key, orthogonal to the others
    matched = patch_nce_loss(eye, eye, 1, 0.07)
    assert matched.max() < 1e-4  # log(1 + 7 exp(-1/0.07)) ~ 4e-6
    # the same features with the keys shuffled: every positive is now orthogonal, the loss large
    shuffled = patch_nce_loss(eye, eye.roll(1, 0), 1, 0.07)
    assert shuffled.min() > 10.0


# ---------------------------------------------------------------------------------------
# networks
def test_generator_maps_images_to_images_of_the_same_shape():
    from coop_gan.cut import CutGenerator, CutGeneratorOptions

    for antialias in (True, False):
        g = CutGenerator(CutGeneratorOptions(input_shape=(3, 16, 16), ngf=4, n_blocks=2, nce_layers=(0, 4, 8),
                                             antialias=antialias, antialias_up=antialias, mlp_dim=8))
        x = torch.rand(2, 3, 16, 16) * 2 - 1
        y = g(x)
        assert y.shape == x.shape and y.abs().max() <= 1.0
        assert g.latent_shape == g.output_shape == (3, 16, 16)


def test_default_generator_picks_the_nce_layers_cut_uses():
    """CUT's nce_layers 0, 4, 8, 12, 16 of resnet_9blocks (ngf 64, anti-aliased): the padded
    input (3 channels), the two downsampling convs (128, 256) and residual blocks 1 and 5 (256)."""
    from coop_gan.cut import BlurDownsample, CutGenerator, ResnetBlock

    g = CutGenerator()
    assert len(g.model) == 4 + 8 + 9 + 8 + 3
    assert [h[0].in_features for h in g.projector.heads] == [3, 128, 256, 256, 256]
    assert all(h[0].out_features == 256 and h[2].out_features == 256 for h in g.projector.heads)
    assert isinstance(g.model[7], BlurDownsample) and isinstance(g.model[12], ResnetBlock)
    assert isinstance(g.model[16], ResnetBlock) and not isinstance(g.model[11], ResnetBlock)
    feats = CutGenerator.encode(g, torch.zeros(1, 3, 32, 32))  # any even size; stops after layer 16
    assert [tuple(f.shape[1:]) for f in feats] == [(3, 38, 38), (128, 32, 32), (256, 16, 16), (256, 8, 8), (256, 8, 8)]


def test_patchgan_is_70x70_with_30x30_patches_and_scores_their_mean():
    from coop_gan.cut import PatchGANDiscriminator, PatchGANOptions, patch_map_side

    assert patch_map_side(256, 3, True) == 30 and patch_map_side(256, 3, False) == 30
    d = PatchGANDiscriminator(PatchGANOptions(input_shape=(3, 64, 64), ndf=8))
    x = torch.rand(3, 3, 64, 64)
    logits = d.patch_logits(x)
    assert logits.shape == (3, 1, patch_map_side(64, 3, True), patch_map_side(64, 3, True))
    assert torch.allclose(d.score(x), logits.mean(dim=(1, 2, 3)))
    # without the blur and the instance norm (which couples every location) one logit sees
    # exactly 70 input columns: logit column j covers 8 j - 23 .. 8 j + 46
    plain = PatchGANDiscriminator(PatchGANOptions(input_shape=(1, 128, 128), ndf=2, norm="none", antialias=False))
    x = torch.rand(1, 1, 128, 128, requires_grad=True)
    plain.patch_logits(x)[0, 0, :, 5].sum().backward()
    cols = (x.grad[0, 0].abs().sum(0) > 0).nonzero().flatten()
    assert (cols.min().item(), cols.max().item(), cols.numel()) == (17, 86, 70)
    with pytest.raises(ValueError, match="too small"):
        PatchGANOptions(input_shape=(3, 8, 8), n_layers=3)


def test_patch_ids_are_shared_by_source_and_translation():
    """One draw of locations per layer serves the keys (source) and the queries (translation)."""
    from coop_gan.cut import Cut, PatchProjector

    exp = _build("cut", {"num_patches": 5})
    obj: Cut = exp.objective
    seen = []
    original = PatchProjector.forward

    def record(self, feats, ids):
        seen.append([i.clone() for i in ids])
        return original(self, feats, ids)

    obj.generator.projector.forward = record.__get__(obj.generator.projector)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    y = obj.generator(x)
    obj.nce_loss(x, y, torch.Generator().manual_seed(0))
    assert len(seen) == 2  # keys, then queries
    for a, b in zip(*seen):
        assert torch.equal(a, b) and a.numel() == 5 and a.unique().numel() == 5
    ids = PatchProjector.draw_ids([torch.zeros(1, 1, 4, 4)], 100, torch.Generator().manual_seed(0))
    assert sorted(ids[0].tolist()) == list(range(16))  # at most H * W distinct locations

# ---------------------------------------------------------------------------------------
# datasets
def _write_tree(root: Path, counts=(3, 2, 2, 2), size=(20, 12)) -> Path:
    """trainA/trainB/testA/testB with reddish A images and bluish B images of `size` (w, h)."""
    rng = np.random.default_rng(0)
    for folder, n in zip(("trainA", "trainB", "testA", "testB"), counts):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8)
            arr[..., 0 if folder.endswith("A") else 2] += 180
            Image.fromarray(arr).save(root / folder / f"{i}.png")
    return root


def test_unpaired_folders_reads_both_domains(tmp_path, registries):
    from coopcore.build import build_dataset

    root = _write_tree(tmp_path / "h2z")
    ds = build_dataset(registries, "unpaired_folders", {"path": "h2z", "size": 8}, tmp_path)
    assert ds.unpaired and len(ds) == 3 and ds.shape == (3, 8, 8)
    assert len(ds.target) == 2 and len(ds.eval_source) == 2 and len(ds.eval_target) == 2
    a, b = ds.get_batch(torch.arange(3)), ds.target.get_batch(torch.arange(2))
    assert a.min() >= -1 and a.max() <= 1
    assert (a[:, 0].mean() > a[:, 2].mean()) and (b[:, 2].mean() > b[:, 0].mean())  # red A, blue B
    # the pixels are the image resized whole, mapped by x / 127.5 - 1
    img = Image.open(root / "trainA" / "0.png").convert("RGB").resize((8, 8), Image.Resampling.BILINEAR)
    want = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(a[0], want)
    swapped = build_dataset(registries, "unpaired_folders", {"path": "h2z", "size": 8, "direction": "BtoA",
                                                            "split": "test", "crop_size": 6}, tmp_path)
    assert len(swapped) == 2 and swapped.shape == (3, 6, 6)
    assert swapped.get_batch(torch.arange(2))[:, 2].mean() > swapped.get_batch(torch.arange(2))[:, 0].mean()
    (root / "trainB" / "0.png").unlink()
    (root / "trainB" / "1.png").unlink()
    with pytest.raises(UsageError, match="trainB"):
        build_dataset(registries, "unpaired_folders", {"path": "h2z", "size": 8}, tmp_path)
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "empty", None):  # the error names the expected layout
        with pytest.raises(UsageError, match="trainA, trainB, testA, testB"):
            build_dataset(registries, "unpaired_folders", {"path": "" if root else "h2z"}, root)


def test_the_objective_finds_the_target_domain_through_parts_dataset(registries):
    """The objective reads the target domain from `Parts.dataset`, also when the training set is
    the device copy the framework makes on a GPU (`DeviceTensorDataset` forwards attributes);
    a dataset without a second domain is refused with a clear error."""
    from coop_gan.cut import _unpaired_dataset

    from coopcore import Parts
    from coopcore.build import build_dataset
    from coopcore.data import DeviceTensorDataset

    ds = build_dataset(registries, "unpaired_digits", {"size": 8, "limit": 4}, None)
    wrapped = DeviceTensorDataset(ds, torch.device("cpu"))
    for given in (ds, wrapped):
        parts = Parts(models={}, samplers={}, optimizers={}, n_train=len(given), device=torch.device("cpu"),
                      data_shape=given.shape, examples=lambda idx: given.get_batch(idx), dataset=given)
        found = _unpaired_dataset(parts)
        assert found is given and found.target is ds.target and found.eval_source is ds.eval_source
    plain = ds.target  # an ordinary dataset without a second domain
    for given in (plain, None):
        bad = Parts(models={}, samplers={}, optimizers={}, n_train=1, device=torch.device("cpu"),
                    data_shape=(1, 8, 8), examples=lambda idx: plain.get_batch(idx), dataset=given)
        with pytest.raises(UsageError, match="unpaired dataset"):
            _unpaired_dataset(bad)


def test_unpaired_digits_are_two_disjoint_domains(registries):
    from coopcore.build import build_dataset

    ds = build_dataset(registries, "unpaired_digits", {"size": 8}, None)
    a, b = ds.get_batch(torch.arange(len(ds))), ds.target.get_batch(torch.arange(len(ds.target)))
    assert len(ds) == len(ds.target) == 750 and ds.shape == (1, 8, 8)
    assert a.mean() < -0.3 and b.mean() > 0.3  # dark background vs inverted (light) background
    inv = (-b).flatten(1)
    assert not any(torch.equal(inv[j], a[i].flatten()) for i in range(20) for j in range(len(inv)))


# ---------------------------------------------------------------------------------------
# objectives
def _tiny_recipe(objective: str, options: dict, data: dict, iterations: int = 4) -> dict:
    size = data.get("model_size", 16)
    c = data.get("channels", 1)
    return {
        "run": {"name": objective.replace(".", "-"), "seed": 5, "iterations": iterations, "log_every": 1,
                "sample_every": 0, "checkpoint_every": 2, "tensorboard": False, "sample_count": 4, "threads": 1},
        "data": {"name": data["name"], "batch_size": 2, "options": data["options"]},
        "models": {
            "descriptor": {"name": "cut.discriminator.patchgan",
                           "options": {"input_shape": [c, size, size], "ndf": 4, "n_layers": 2}},
            "generator": {"name": "cut.generator.resnet",
                          "options": {"input_shape": [c, size, size], "ngf": 4, "n_blocks": 2,
                                      "nce_layers": [0, 4, 8, 12], "mlp_dim": 8}},
        },
        "optimizers": {"descriptor": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]},
                       "generator": {"name": "adam", "lr": 2e-4, "betas": [0.5, 0.999]}},
        "objective": {"name": objective, "options": options},
    }


DIGITS = {"name": "unpaired_digits", "options": {"size": 16, "limit": 8}}


def _build(objective: str, options: dict, data: dict = DIGITS):
    from coopcore.build import build_experiment
    from coopcore.plugin_manager import get_registries

    torch.manual_seed(0)
    return build_experiment(resolve_data(_tiny_recipe(objective, options, data), registries=get_registries()),
                            torch.device("cpu"))


def test_cut_and_coopinit_cut_pass_the_contract(registries):
    for family, name in (("objective", "cut"), ("objective", "coopinit.cut"),
                         ("energy", "cut.discriminator.patchgan")):
        check_entry(registries, family, name)


def test_cut_modes_and_the_objective_settings():
    from coop_gan.cut import CoopInitCutOptions, CutOptions

    cut, fast = CutOptions(), CutOptions(mode="fastcut")
    assert (cut.nce_weight, cut.identity_nce, cut.flip_eq) == (1.0, True, False)
    assert (fast.nce_weight, fast.identity_nce, fast.flip_eq) == (10.0, False, True)
    assert CutOptions(mode="fastcut", lambda_nce=2.0).nce_weight == 2.0
    assert (cut.nce_temperature, cut.num_patches, cut.gan_mode, cut.lambda_gan) == (0.07, 256, "lsgan", 1.0)
    c = CoopInitCutOptions()
    assert (c.eta, c.langevin_steps, c.noise_scale, c.coop_nce) == (1.0, 10, 0.0, True)


def test_identity_nce_and_flip_equivariance_change_the_generator_loss():
    runs = {}
    for name, opts in (("cut", {}), ("no_idt", {"nce_idt": False}), ("fastcut", {"mode": "fastcut"})):
        exp = _build("cut", {"num_patches": 8, **opts})
        x = exp.dataset.get_batch(torch.arange(2))
        from coopcore import Batch

        runs[name] = exp.objective.step(Batch(x, torch.arange(2)), torch.Generator().manual_seed(0)).scalars
    assert "nce_idt" in runs["cut"] and "nce_idt" not in runs["no_idt"] and "nce_idt" not in runs["fastcut"]
    cut = runs["cut"]
    assert torch.allclose(cut["loss_g"], cut["loss_g_gan"] + 0.5 * (cut["nce"] + cut["nce_idt"]), atol=1e-6)
    assert torch.allclose(runs["fastcut"]["loss_g"], runs["fastcut"]["loss_g_gan"] + runs["fastcut"]["nce"], atol=1e-6)


def test_linear_lr_decay_follows_the_image_count():
    from coopcore import Batch

    exp = _build("cut", {"num_patches": 4, "lr_linear_decay": [2, 4]})
    x = exp.dataset.get_batch(torch.arange(2))
    gen = torch.Generator().manual_seed(0)
    lrs = []
    for _ in range(4):
        exp.objective.step(Batch(x, torch.arange(2)), gen)
        lrs.append(exp.parts.optimizers["generator"].param_groups[0]["lr"])
    # lr before the steps at N = 0, 2, 4, 6 images: 1, 1, 0.5, 0 x 2e-4
    assert lrs == pytest.approx([2e-4, 2e-4, 1e-4, 0.0])


def test_coopinit_cut_switches_to_cut_after_n_coop_images():
    from coopcore import Batch

    exp = _build("coopinit.cut", {"num_patches": 4, "n_coop": 2, "eta": 0.1, "langevin_steps": 2})
    x = exp.dataset.get_batch(torch.arange(2))
    gen = torch.Generator().manual_seed(0)
    stages = []
    for _ in range(3):
        r = exp.objective.step(Batch(x, torch.arange(2)), gen).scalars
        stages.append(r["stage"].item())
        if r["stage"].item() == 0:
            assert {"loss_teach", "revision_sq", "nce"} <= set(r)
            assert r["revision_sq"] > 0  # the Langevin steps moved the translations
    assert stages == [0.0, 0.0, 1.0]  # N = 0, 2 <= n_coop: cooperative; N = 4: CUT
    assert exp.objective.state_dict()["switched"] is True


def test_tiny_cut_run_on_a_folder_tree_through_the_cli(tmp_path):
    """`coop train` on a two-folder tree, then `coop sample` from the checkpoint alone."""
    _write_tree(tmp_path / "data" / "h2z", counts=(4, 3, 2, 2), size=(24, 20))
    recipe = _tiny_recipe("cut", {"num_patches": 8, "crop_size": 16},
                          {"name": "unpaired_folders", "options": {"path": "h2z", "size": 20}, "channels": 3})
    out = tmp_path / "run"
    toml = tmp_path / "cut.toml"
    toml.write_text(_to_toml(recipe))
    assert run_cli(["train", toml, "--out", out, "--no-progress", "--data-root", tmp_path / "data",
                    "--set", "run.iterations=3"]) == 0
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all(math.isfinite(r["loss_g"]) for r in log)
    assert run_cli(["sample", out, "--n", "3", "--out", tmp_path / "grids"]) == 0
    names = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert any("translated" in n for n in names) and any("source" in n for n in names)


def test_coopinit_cut_resumes_bit_exactly(tmp_path, registries):
    opts = {"num_patches": 6, "n_coop": 4, "eta": 0.1, "langevin_steps": 2, "crop_size": 12}
    data = {"name": "unpaired_digits", "options": {"size": 16, "limit": 8}, "model_size": 12}

    def train(iterations, out, resume=False):
        r = resolve_data(_tiny_recipe("coopinit.cut", opts, data, iterations), registries=registries)
        return train_run(r, out, resume=resume, progress=False, echo=lambda m: None, registries=registries)

    stages = [row["stage"] for row in straight_and_split_runs_agree(train, tmp_path)]
    assert stages == [0.0, 0.0, 0.0, 1.0, 1.0]



def test_fid_of_translated_test_images_against_the_test_b_reference(tmp_path, registries, monkeypatch):
    """Table 4's evaluation with the existing `fid` metric: samples "translated" (test A through
    G) against a reference `unpaired_folders` set read as test B (direction BtoA).  With a
    stand-in feature network: the real test-B images ("target") against that reference give
    FID 0, the untrained translations a positive FID."""
    import coop_metrics.fid as fid_module
    from coop_metrics import inception as inc
    from coopcore.build import build_experiment, build_metric

    _write_tree(tmp_path / "h2z", counts=(4, 3, 6, 6), size=(24, 20))
    proj = torch.randn(3 * 16 * 16, 16, generator=torch.Generator().manual_seed(0)) / 10

    def forward(u8):
        return (u8.float() / 255).flatten(1) @ proj, None

    backend = inc.InceptionBackend("stand-in", Path("stand-in.pt"), "ab" * 32, False, forward, torch.device("cpu"),
                                   feature_dim=16)
    monkeypatch.setattr(fid_module, "load_backend", lambda *a, **k: backend)
    recipe = _tiny_recipe("cut", {"num_patches": 8, "crop_size": 16},
                          {"name": "unpaired_folders", "options": {"path": "h2z", "size": 20}, "channels": 3})
    torch.manual_seed(0)
    exp = build_experiment(resolve_data(recipe, registries=registries), torch.device("cpu"), data_root=str(tmp_path),
                           registries=registries)
    reference = {"name": "unpaired_folders", "options": {"path": "h2z", "split": "test", "direction": "BtoA",
                                                         "size": 20, "crop_size": 16, "eval_split": "none"}}
    values = {}
    for kind in ("target", "translated"):
        metric = build_metric(registries, "fid", {"samples": kind, "n_samples": 6, "reference": reference,
                                                  "use_cache": False})
        values[kind] = exp.evaluate("fid", metric, torch.Generator().manual_seed(0)).value
    assert abs(values["target"]) < 1e-6 and values["translated"] > 1e-3


@pytest.mark.parametrize("name", ["cut-horse2zebra", "coopinit-cut-horse2zebra", "cut-cat2dog", "coopinit-cut-cat2dog"])
def test_recipes_resolve_with_the_authors_settings(name, registries):
    r = resolve(RECIPES / f"{name}.toml", registries=registries)
    o = r.objective.options
    assert r.batching.batch_size == 1
    for role in ("generator", "descriptor"):
        oc = r.optimizers[role]
        assert (oc.lr, tuple(oc.betas)) == (2e-4, (0.5, 0.999))
    assert (o.mode, o.crop_size, o.num_patches, o.nce_temperature, o.gan_mode) == ("cut", 256, 256, 0.07, "lsgan")
    start, span = o.lr_linear_decay
    assert start == span and r.run.iterations == start + span  # 200 constant + 200 decaying epochs
    assert r.models["generator"].options.n_blocks == 9
    fid = r.metrics[0][1].options
    assert (fid.samples, fid.reference.options["direction"]) == ("translated", "BtoA")
    if name.startswith("coopinit"):
        assert r.objective.name == "coopinit.cut" and o.n_coop == 12 * (r.run.iterations // 400)


def _to_toml(data: dict) -> str:
    """A minimal TOML writer for the nested dicts above (tables, inline values)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    lines = []

    def table(prefix, d):
        simple = {k: v for k, v in d.items() if not (isinstance(v, dict) and k in ("models", "optimizers") or
                                                    (isinstance(v, dict) and prefix in ("models", "optimizers")))}
        nested = {k: v for k, v in d.items() if k not in simple}
        if prefix:
            lines.append(f"[{prefix}]")
        for k, v in simple.items():
            lines.append(f"{k} = {value(v)}")
        for k, v in nested.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    for key, val in data.items():
        table(key, val)
    return "\n".join(lines) + "\n"
