"""Class conditioning (CoopInit Table 8's "+Cond"): labels from the datasets through the trainer
to the objectives, the conditional StyleGAN2 pair, sampling given labels, and the usage errors.

Every check compares with something computed independently: the digits' labels straight from
scikit-learn, the mapping and projection formulas written out with plain tensor operations, a
run resumed from a checkpoint against the same run uninterrupted.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coopcore import Batch, StepResult, hookimpl
from coopcore.conditioning import (
    balanced_labels,
    check_dataset_labels,
    draw_labels,
    is_conditional,
    n_classes,
    require_labels,
    run_classes,
)
from coopcore.data import BatchSchedule, TensorImageDataset, prefetch_batches
from coopcore.errors import UsageError
from coopcore.experiment import resolve_data
from coopcore.registry import NoOptions
from coopcore.run import train as train_run

from conftest import run_cli, straight_and_split_runs_agree

pytestmark = pytest.mark.usefixtures("one_thread")

SQRT2 = math.sqrt(2.0)
# Tiny 16x16 one-channel conditional StyleGAN2 pair: 8 channels at 4x4, 4 at 8x8 and 16x16.
SG2 = {"resolution": 16, "img_channels": 1, "channel_base": 32, "channel_max": 8, "n_classes": 10}
G_OPTS = {**SG2, "z_dim": 8, "w_dim": 8, "mapping_layers": 2}
D_OPTS = {**SG2, "mbstd_group_size": 4, "mapping_layers": 2}


def _generator(**kw):
    from coop_gan.stylegan2 import StyleGAN2Generator, StyleGAN2GeneratorOptions

    return StyleGAN2Generator(StyleGAN2GeneratorOptions(**{**G_OPTS, **kw}))


def _discriminator(**kw):
    from coop_gan.stylegan2 import StyleGAN2Discriminator, StyleGAN2DiscriminatorOptions

    return StyleGAN2Discriminator(StyleGAN2DiscriminatorOptions(**{**D_OPTS, **kw}))


def _digit_labels(limit: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().target[:limit]


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, 0.2 * x) * SQRT2


def _fc(layer, x: torch.Tensor) -> torch.Tensor:
    """An equalised-lr fully connected layer written out: x (W lr_mul / sqrt(in))^T + b lr_mul."""
    w = layer.weight * (layer.lr_mul / math.sqrt(layer.weight.shape[1]))
    return x @ w.t() + layer.bias * layer.lr_mul


def _unit_second_moment(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)


# --- the helpers of coopcore.conditioning ---------------------------------------------------
def test_n_classes_and_is_conditional_read_the_attribute():
    class A:
        n_classes = 4

    class B:
        pass

    assert n_classes(A()) == 4 and is_conditional(A())
    assert n_classes(B()) == 0 and not is_conditional(B())
    assert run_classes([A(), B()]) == 4 and run_classes([B()]) == 0
    other = A()
    other.n_classes = 5
    with pytest.raises(UsageError, match="different numbers of classes"):
        run_classes([A(), other])


def test_draw_labels_uniform_and_real():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    y = draw_labels(2000, 7, g1, torch.device("cpu"))
    assert y.dtype == torch.long and y.shape == (2000,)
    assert torch.equal(y, torch.randint(7, (2000,), generator=g2))  # from the given stream
    counts = torch.bincount(y, minlength=7).float()
    assert counts.min() > 2000 / 7 * 0.75 and counts.max() < 2000 / 7 * 1.25  # every class, about equally
    real = torch.tensor([4, 4, 1])
    g = torch.Generator().manual_seed(0)
    before = g.get_state().clone()
    assert draw_labels(3, 7, g, torch.device("cpu"), "real", real) is real
    assert torch.equal(g.get_state(), before)  # "real" draws no random numbers
    assert balanced_labels(7, 3, torch.device("cpu")).tolist() == [0, 1, 2, 0, 1, 2, 0]


def test_require_labels_both_ways():
    g, u = _generator(), _generator(n_classes=0)
    assert require_labels(u, None) is None
    with pytest.raises(ValueError, match="conditional on 10 classes"):
        require_labels(g, None)
    with pytest.raises(ValueError, match="unconditional"):
        require_labels(u, torch.tensor([1]))
    with pytest.raises(ValueError, match="int64"):
        require_labels(g, torch.tensor([1.0]))


# --- the conditional StyleGAN2 pair ---------------------------------------------------------
def test_conditional_models_need_labels_and_unconditional_ones_refuse_them():
    torch.manual_seed(0)
    g, d = _generator(), _discriminator()
    z = g.sample_latent(2, torch.Generator().manual_seed(1))
    x = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match="pass the labels"):
        g(z)
    with pytest.raises(ValueError, match="pass the labels"):
        d.score(x)
    with pytest.raises(ValueError, match="pass the labels"):
        d.energy(x)
    with pytest.raises(ValueError, match="unconditional"):
        _generator(n_classes=0)(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        _discriminator(n_classes=0).score(x, torch.tensor([0, 1]))


def test_zero_classes_builds_todays_networks():
    """n_classes = 0 adds no parameter: the unconditional networks' names (and so their
    checkpoints) are those of a network built without the option."""
    torch.manual_seed(0)
    plain_g = _generator(n_classes=0)
    cond_g = _generator()
    plain_d, cond_d = _discriminator(n_classes=0), _discriminator()
    assert not any("embed" in k for k in plain_g.state_dict())
    assert not any("label" in k for k in plain_d.state_dict())
    assert plain_d.out.weight.shape[0] == 1 and cond_d.out.weight.shape[0] == cond_d.cmap_dim == 8
    assert set(cond_g.state_dict()) - set(plain_g.state_dict()) == {"embed.weight", "embed.bias"}
    assert plain_g.mapping[0].weight.shape[1] == 8 and cond_g.mapping[0].weight.shape[1] == 8 + 8


def test_generator_label_embedding_follows_the_formula():
    """w = mapping([z / rms(z), e / rms(e)]), e = onehot(y) W^T / sqrt(C) + b (StyleGAN2-ADA)."""
    torch.manual_seed(1)
    g = _generator()
    with torch.no_grad():
        g.embed.bias.normal_()  # a non-zero bias, so the formula's bias term is tested too
        z = torch.randn(5, 8)
        y = torch.tensor([0, 3, 9, 3, 7])
        onehot = F.one_hot(y, 10).float()
        e = onehot @ (g.embed.weight / math.sqrt(10)).t() + g.embed.bias
        assert torch.allclose(g.embed_labels(y), _unit_second_moment(e), atol=1e-6)
        h = torch.cat([_unit_second_moment(z), _unit_second_moment(e)], dim=1)
        for layer in g.mapping:
            h = _lrelu(_fc(layer, h))
        assert torch.allclose(g.map(z, y), h, atol=1e-5)


def test_conditional_generator_images_depend_on_the_label_only_through_it():
    torch.manual_seed(2)
    g = _generator()
    with torch.no_grad():
        z = g.sample_latent(4, torch.Generator().manual_seed(5))
        a = g(z, torch.tensor([1, 1, 1, 1]))
        b = g(z, torch.tensor([1, 1, 1, 1]))
        c = g(z, torch.tensor([2, 2, 2, 2]))
        mixed = g(z, torch.tensor([1, 2, 1, 2]))
    assert torch.equal(a, b)
    assert bool(((a - c).flatten(1).abs().sum(1) > 1e-4).all())  # every image changes with its label
    assert torch.allclose(mixed[0::2], a[0::2], atol=1e-6) and torch.allclose(mixed[1::2], c[1::2], atol=1e-6)


def test_projection_discriminator_equals_the_projection_of_its_features():
    """D(x, y) = sum(phi(x) * cmap(y)) / sqrt(cmap_dim), cmap(y) = label mapping of the
    normalised embedding, recomputed here from the layers' parameters."""
    torch.manual_seed(3)
    d = _discriminator()
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    y = torch.tensor([0, 5, 5, 9])
    with torch.no_grad():
        d.label_embed.bias.normal_()
        c = _unit_second_moment(_fc(d.label_embed, F.one_hot(y, 10).float()))
        for layer in d.label_mapping:
            c = _lrelu(_fc(layer, c))
        assert torch.allclose(d.cmap(y), c, atol=1e-5)
        phi = d.features(x)
        assert phi.shape == (4, d.cmap_dim)
        expected = (phi * c).sum(1) / math.sqrt(d.cmap_dim)
        assert torch.allclose(d.score(x, y), expected, atol=1e-5)
        assert torch.allclose(d.energy(x, y), -expected, atol=1e-5)
        assert not torch.allclose(d.score(x, y), d.score(x, (y + 1) % 10))


# --- datasets and the trainer ---------------------------------------------------------------
def test_batch_to_moves_the_labels():
    b = Batch(torch.zeros(2, 1), torch.arange(2), torch.tensor([3, 4]))
    moved = b.to(torch.device("cpu"))
    assert torch.equal(moved.y, torch.tensor([3, 4]))
    assert Batch(torch.zeros(2, 1), torch.arange(2)).to(torch.device("cpu")).y is None


def test_prefetch_gives_the_share_of_labels():
    labels = torch.arange(12) * 10
    ds = TensorImageDataset(torch.arange(12.0).view(12, 1), "t", labels=labels)
    sched = BatchSchedule(12, 4, seed=1)
    for part in ((0, 1), (1, 2)):
        for images, idx, y in prefetch_batches(ds, sched, 0, 3, workers=0, part=part, labels=True):
            mine = idx if part[1] == 1 else idx.tensor_split(2)[1]
            assert torch.equal(y, labels[mine]) and torch.equal(images[:, 0], mine.float())
    plain = next(iter(prefetch_batches(ds, sched, 0, 1, workers=0)))
    assert len(plain) == 2  # without labels the items are as before


class _Recorder:
    """A conditional objective that records the batches the trainer hands it."""

    required_models = ("generator",)
    required_samplers = ()
    seen: list[tuple[list[int], object]] = []

    def __init__(self, options, parts) -> None:
        self.generator = parts.models["generator"]

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult:
        _Recorder.seen.append((batch.index.tolist(), None if batch.y is None else batch.y.tolist()))
        return StepResult(scalars={"n": torch.tensor(float(batch.x.shape[0]))})

    def samples(self, n: int, generator: torch.Generator):
        z = self.generator.sample_latent(n, generator)
        y = balanced_labels(n, 10, z.device) if is_conditional(self.generator) else None
        with torch.no_grad():
            return {"generator": self.generator(z) if y is None else self.generator(z, y)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        pass


class _RecorderPlugin:
    @hookimpl
    def coop_register_objectives(self, registry) -> None:
        registry.add("test.recorder", _Recorder, NoOptions, "records batches (conditioning tests)")


def _recorder_config(n_cls: int, workers: int, data: str = "digits") -> dict:
    data_cfg = ({"name": "digits", "batch_size": 5, "options": {"size": 16, "limit": 20}, "workers": workers}
                if data == "digits" else  # one bundled texture image: no labels
                {"name": "texture", "batch_size": 1, "options": {"image": "brick", "size": 16, "color": "gray"}})
    return {
        "run": {"name": "rec", "seed": 4, "iterations": 6, "log_every": 1, "sample_every": 0, "checkpoint_every": 0,
                "tensorboard": False, "sample_count": 2, "threads": 1},
        "data": data_cfg,
        "models": {"generator": {"name": "coopinit.generator.stylegan2", "options": {**G_OPTS, "n_classes": n_cls}}},
        "optimizers": {"generator": {"name": "adam", "lr": 1e-3}},
        "objective": {"name": "test.recorder"},
    }


@pytest.mark.parametrize("workers", [0, 1])
def test_trainer_hands_the_datasets_labels_to_the_objective(tmp_path, workers, monkeypatch):
    import coopcore.trainer
    from coopcore.plugin_manager import load_registries

    reg = load_registries([("recorder", _RecorderPlugin())])
    truth = _digit_labels(20)
    read_ahead: list[bool] = []

    def counting(*args, **kwargs):
        read_ahead.append(kwargs.get("labels", False))
        return prefetch_batches(*args, **kwargs)

    monkeypatch.setattr(coopcore.trainer, "prefetch_batches", counting)
    _Recorder.seen = []
    train_run(resolve_data(_recorder_config(10, workers), registries=reg), tmp_path / "c", progress=False,
              echo=lambda m: None, registries=reg)
    assert read_ahead == ([True] if workers else [])  # the DataLoader path when asked for, with labels
    assert len(_Recorder.seen) == 6
    for index, labels in _Recorder.seen:
        assert labels == truth[index].tolist()
    assert len({tuple(i) for i, _ in _Recorder.seen}) > 1  # shuffled batches, not one repeated
    # An unconditional run never asks for labels.
    _Recorder.seen = []
    train_run(resolve_data(_recorder_config(0, workers), registries=reg), tmp_path / "u", progress=False,
              echo=lambda m: None, registries=reg)
    assert [y for _, y in _Recorder.seen] == [None] * 6


def test_each_process_gets_the_labels_of_its_share(tmp_path):
    """The in-loop path under torchrun: rank 1 of 2 reads the labels of its half of the batch."""
    from coopcore.build import build_experiment
    from coopcore.plugin_manager import load_registries
    from coopcore.rundir import RunDir
    from coopcore.trainer import Trainer

    reg = load_registries([("recorder", _RecorderPlugin())])
    exp = build_experiment(resolve_data(_recorder_config(10, 0), registries=reg), torch.device("cpu"), registries=reg)
    trainer = Trainer(exp, RunDir(tmp_path / "r", 1), progress=False, echo=lambda m: None)
    trainer.rank, trainer.world_size = 1, 2
    truth = torch.from_numpy(_digit_labels(20))
    for images, y, mine, idx in trainer._batches(0, 3):
        assert torch.equal(mine, idx.tensor_split(2)[1]) and len(mine) < len(idx)
        assert torch.equal(y, truth[mine]) and torch.equal(images, exp.dataset.get_batch(mine))


def test_a_conditional_model_on_a_dataset_without_labels_is_a_usage_error(tmp_path, capsys):
    from coopcore.plugin_manager import load_registries

    reg = load_registries([("recorder", _RecorderPlugin())])
    with pytest.raises(UsageError) as err:
        train_run(resolve_data(_recorder_config(10, 0, data="texture"), registries=reg), tmp_path / "r",
                  progress=False, echo=lambda m: None, registries=reg)
    text = str(err.value)
    assert "dataset 'texture-brick'" in text and "coopinit.generator.stylegan2" in text and "n_classes = 10" in text


def test_the_cli_exits_2_for_a_dataset_without_labels(tmp_path, capsys):
    recipe = _recipe_file(tmp_path, "gan", extra_data='name = "texture"\nbatch_size = 1\n'
                                                     'options = { image = "brick", size = 16, color = "gray" }\n')
    assert run_cli(["train", recipe, "--out", tmp_path / "run", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dataset 'texture-brick'" in err and "coopinit.discriminator.stylegan2" in err and "Traceback" not in err


def test_labels_outside_the_models_classes_are_refused():
    ds = TensorImageDataset(torch.zeros(4, 1), "few", labels=torch.tensor([0, 1, 2, 11]))
    with pytest.raises(UsageError, match=r"labels 0\.\.11, outside 0\.\.9"):
        check_dataset_labels(ds, {"generator": _generator()})
    declared = TensorImageDataset(torch.zeros(2, 1), "many", labels=torch.tensor([0, 1]), n_classes=100)
    with pytest.raises(UsageError, match="100 classes"):
        check_dataset_labels(declared, {"generator": _generator()})
    assert check_dataset_labels(ds, {"generator": _generator(n_classes=0)}) == 0


def test_labelled_datasets_declare_their_classes(registries):
    ds = registries.dataset.create("digits", registries.dataset.get("digits").options(size=8, limit=30))
    assert n_classes(ds) == 10
    assert ds.get_labels(torch.arange(30)).tolist() == _digit_labels(30).tolist()


# --- whole runs -----------------------------------------------------------------------------
def _recipe_file(tmp_path: Path, objective: str, options: str = "", iterations: int = 4,
                 extra_data: str = "") -> Path:
    """A tiny conditional StyleGAN2 recipe on the 16x16 digits."""
    def table(d: dict) -> str:
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"

    data = extra_data or 'name = "digits"\nbatch_size = 8\noptions = { size = 16, limit = 40 }\n'
    text = f"""
[run]
name = "cond-{objective}"
seed = 2
iterations = {iterations}
log_every = 1
sample_every = 0
checkpoint_every = 2
sample_count = 10
tensorboard = false
threads = 1

[data]
{data}
[models.descriptor]
name = "coopinit.discriminator.stylegan2"
options = {table(D_OPTS)}

[models.generator]
name = "coopinit.generator.stylegan2"
options = {table(G_OPTS)}

[optimizers.descriptor]
name = "adam"
lr = 2e-3
betas = [0.0, 0.99]

[optimizers.generator]
name = "adam"
lr = 2e-3
betas = [0.0, 0.99]

[objective]
name = "{objective}"
options = {{ {options} }}
"""
    path = tmp_path / f"{objective}.toml"
    path.write_text(text)
    return path


def test_tiny_conditional_gan_trains_and_samples_given_labels(tmp_path, capsys):
    from coopcore.metrics import draw_samples
    from coopcore.run import open_run

    recipe = _recipe_file(tmp_path, "gan", 'loss = "ns", r1_gamma = 0.1, g_ema_kimg = 1.0')
    run = tmp_path / "gan"
    assert run_cli(["train", recipe, "--out", run, "--no-progress"]) == 0
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 4 and all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in log)
    capsys.readouterr()
    assert run_cli(["sample", run, "--n", "4", "--label", "3", "--out", tmp_path / "s"]) == 0
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "sample-iter-00000004-generator-label3-seed0.png", "sample-iter-00000004-generator_raw-label3-seed0.png"]
    capsys.readouterr()
    assert run_cli(["sample", run, "--n", "4", "--label", "10", "--out", tmp_path / "s"]) == 2
    assert "conditioned on 10 classes" in capsys.readouterr().err

    opened = open_run(run, echo=lambda m: None)
    obj, device = opened.experiment.objective, opened.experiment.device
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    default = obj.samples(10, gen())
    given = obj.samples(10, gen(), labels=torch.arange(10) % 10)
    assert all(torch.equal(default[k], given[k]) for k in default)  # default: classes i % n_classes
    threes = obj.samples(10, gen(), labels=torch.full((10,), 3))
    g_ema = obj.tracker.ema.module
    with torch.no_grad():
        z = g_ema.sample_latent(10, gen())
        assert torch.equal(threes["generator"], g_ema(z, torch.full((10,), 3, device=device)))
    assert not torch.equal(threes["generator"], default["generator"])
    # What FID draws: samples(k, generator) in chunks works for a conditional run.
    assert draw_samples(obj, "generator", 7, gen(), batch=3).shape == (7, 1, 16, 16)


def test_gan_objective_conditions_every_discriminator_call():
    """Reals are scored with their labels and fakes with drawn ones: a D that records its labels."""
    from coopcore.build import build_experiment
    from coopcore.plugin_manager import load_registries

    reg = load_registries()
    cfg = {
        "run": {"name": "t", "seed": 0, "iterations": 1, "tensorboard": False},
        "data": {"name": "digits", "batch_size": 4, "options": {"size": 16, "limit": 8}},
        "models": {"descriptor": {"name": "coopinit.discriminator.stylegan2", "options": D_OPTS},
                   "generator": {"name": "coopinit.generator.stylegan2", "options": G_OPTS}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3}, "generator": {"name": "adam", "lr": 1e-3}},
        "objective": {"name": "gan", "options": {"r1_gamma": 1.0, "gp_lambda": 1.0, "fake_labels": "real",
                                                  "zcr": {"weight_dis": 1.0}}},
    }
    exp = build_experiment(resolve_data(cfg, registries=reg), torch.device("cpu"), registries=reg)
    d = exp.parts.models["descriptor"]
    seen: list[list[int]] = []
    original = d.score

    def recording(x, y=None):
        seen.append(y.tolist())
        return original(x, y)

    d.score = recording
    x, y = exp.dataset.get_batch(torch.arange(4)), torch.tensor([3, 1, 4, 1])
    exp.objective.step(Batch(x, torch.arange(4), y), torch.Generator().manual_seed(0))
    # fake_labels "real": every D call (reals, fakes, zCR, GP, R1, the G step) sees the real labels
    assert len(seen) == 6 and all(s == [3, 1, 4, 1] for s in seen)
    with pytest.raises(ValueError, match="no labels"):
        exp.objective.step(Batch(x, torch.arange(4)), torch.Generator().manual_seed(0))


def _coopinit_config(iterations: int) -> dict:
    return {
        "run": {"name": "cond-coopinit", "seed": 6, "iterations": iterations, "log_every": 1, "sample_every": 0,
                "checkpoint_every": 2, "tensorboard": False, "sample_count": 4, "threads": 1},
        "data": {"name": "digits", "batch_size": 8, "options": {"size": 16, "limit": 24}},
        "models": {"descriptor": {"name": "coopinit.discriminator.stylegan2", "options": D_OPTS},
                   "generator": {"name": "coopinit.generator.stylegan2", "options": G_OPTS}},
        "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3, "betas": [0.0, 0.99]},
                       "generator": {"name": "adam", "lr": 1e-3, "betas": [0.0, 0.99]}},
        # iterations at N = 0, 8, 16 are cooperative, from N = 24 adversarial (a resume crosses the switch)
        "objective": {"name": "coopinit", "options": {"n_coop": 16, "eta": 0.05, "langevin_steps": 2,
                                                       "noise_scale": 0.0, "g_ema_kimg": 1.0, "r1_gamma": 0.1}},
    }


def test_tiny_conditional_coopinit_runs_both_stages_and_resumes_bit_exactly(tmp_path, registries):
    def train(iterations: int, out: Path, resume: bool = False):
        return train_run(resolve_data(_coopinit_config(iterations), registries=registries), out, resume=resume,
                         progress=False, echo=lambda m: None, registries=registries)

    log = straight_and_split_runs_agree(train, tmp_path)
    assert [r["stage"] for r in log] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert log == [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(v) for r in log for v in r.values())


def test_coop_stage_revises_with_the_synthesised_labels():
    """Algorithm 1 with labels: the Langevin chain runs on D(x, y^) with y^ the labels of x^."""
    from coop_gan.coopinit import CoopStage

    torch.manual_seed(4)
    d, g = _discriminator(), _generator()
    opt_d, opt_g = torch.optim.Adam(d.parameters(), 1e-3), torch.optim.Adam(g.parameters(), 1e-3)
    stage = CoopStage(0.1, 1, 0.0, d, g, opt_d, opt_g, fake_labels="real")
    x_init = torch.rand(3, 1, 16, 16) * 2 - 1
    y = torch.tensor([2, 2, 8])
    revised = stage.revise(x_init, torch.Generator().manual_seed(0), y)[0]
    x = x_init.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(d.score(x, y).sum(), x)
    assert torch.allclose(revised, x_init + 0.1 * grad, atol=1e-6)  # one noise-free step of eq. 4
    other = stage.revise(x_init, torch.Generator().manual_seed(0), torch.tensor([5, 5, 5]))[0]
    assert not torch.allclose(revised, other)
