"""The CLI from training to sampling and evaluation, on the embedded digits."""
from __future__ import annotations

import json
import time

import pytest
import torch

from conftest import run_cli, train_tiny_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    return train_tiny_run(out, 4, ("--set", "run.checkpoint_every=2", "--set", "run.sample_every=2"))


def test_train_writes_a_complete_run_directory(trained_run):
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["models"]["descriptor"]["options"]["fc_outputs"] == 10  # resolved, defaults filled
    assert cfg["samplers"]["revision"]["options"]["noise"] is True
    prov = json.loads((trained_run / "provenance.json").read_text())
    assert prov["seed"] == 0 and prov["device"] == "cpu" and len(prov["config_hash"]) == 16
    rows = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert {"loss_descriptor", "loss_generator", "energy_obs", "energy_syn", "langevin_grad_norm"} <= set(rows[0])
    assert (trained_run / "samples" / "iter-00000002-revised.png").exists()
    assert (trained_run / "samples" / "iter-00000004-generator.png").exists()
    assert sorted(p.name for p in (trained_run / "checkpoints").glob("*.ckpt")) == [
        "iter-00000002.ckpt", "iter-00000004.ckpt"]


def test_sample_command_writes_grids(trained_run, tmp_path, capsys):
    assert run_cli(["sample", trained_run, "--n", "9", "--out", tmp_path]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[-1] for p in printed)
    assert names == ["sample-iter-00000004-generator-seed0.png", "sample-iter-00000004-revised-seed0.png"]
    from PIL import Image

    img = Image.open(tmp_path / names[0])
    assert img.size[0] > 16 * 3  # a 3x3 grid of 16x16 digits, upscaled


def test_eval_parzen_on_trained_run(trained_run, capsys):
    code = run_cli(["eval", trained_run, "--metric", "parzen", "--json",
                    "--set", "samples='generator'", "--set", "n_samples=64",
                    "--set", "test={name='digits', options={split='test', size=16}}",
                    "--set", "validation={name='digits', options={split='validation', size=16, validation_size=50}}"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["n_samples"] == 64 and rec["backend"].startswith("parzen")
    assert rec["details"]["n_test"] == 297 and rec["std_error"] > 0
    assert (trained_run / "evaluations.jsonl").exists()


def test_eval_unknown_metric_exits_2(trained_run, capsys):
    assert run_cli(["eval", trained_run, "--metric", "nope"]) == 2
    assert "unknown metric 'nope'" in capsys.readouterr().err


def test_plugins_json_and_repro_list(capsys):
    assert run_cli(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    coop = next(p for p in data["plugins"] if p["name"] == "coopnets")
    assert coop["version"] and "coopnets" in coop["registered"]["objective"]
    assert run_cli(["repro", "--list"]) == 0
    assert "coopnets:table2" in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "sample", "eval", "repro", "plugins"):
        assert cmd in out


@pytest.mark.shared_data
def test_mnist_reader_on_real_files(shared_mnist):
    from coop_datasets.mnist import MnistOptions, mnist_dataset

    ds = mnist_dataset(MnistOptions(split="validation1k"), shared_mnist)
    assert len(ds) == 1000 and ds.shape == (1, 28, 28)
    x = ds.get_batch(torch.arange(1000))
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    test = mnist_dataset(MnistOptions(split="test", limit=10), shared_mnist)
    assert test.labels.tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first test labels
    assert len(mnist_dataset(MnistOptions(split="train55k"), shared_mnist)) == 55000


class _SlowSampler:
    """The bench's sampler with a fixed delay added to every run."""

    def __init__(self, sampler, delay: float) -> None:
        self.sampler, self.delay, self.n_steps = sampler, delay, sampler.n_steps

    def run(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.sampler.run(*args, **kwargs)


def test_bench_times_each_loop_on_its_own_side(monkeypatch, capsys):
    """`coop bench --json` reports the run it was asked for, and a loop slowed down on purpose
    is the one reported slower: the eager baseline first, then the framework's sampler.  A tiny
    descriptor keeps both loops far below the added delay even on a loaded machine."""
    from coopcore import EnergyModelBase, bench, hookimpl
    from coopcore import plugin_manager as pmod

    class Tiny(EnergyModelBase):
        def __init__(self, options=None) -> None:
            super().__init__((1, 4, 4), 1.0)
            self.lin = torch.nn.Linear(16, 1)

        def score(self, x):
            return self.lin(x.flatten(1)).squeeze(1)

    class TinyPlugin:
        @hookimpl
        def coop_register_energy_models(self, registry):
            registry.add("test.tiny_descriptor", Tiny)

    regs = pmod.load_registries([("tiny", TinyPlugin())])
    monkeypatch.setattr(pmod, "_DEFAULT", regs)  # what `coop bench` and the bench look up
    delay = 0.2
    args = ["bench", "--batch", "4", "--steps", "2", "--repeats", "3", "--json", "--device", "cpu",
            "--descriptor", "test.tiny_descriptor"]

    def run() -> dict:
        assert run_cli(args) == 0
        res = json.loads(capsys.readouterr().out)
        assert {"benchmark", "device_name", "torch", "threads", "framework_s_median", "baseline_s_median",
                "speedup_baseline_over_framework"} <= set(res)
        assert (res["descriptor"], res["batch"], res["steps"], res["repeats"], res["device"]) == (
            "test.tiny_descriptor", 4, 2, 3, "cpu")
        return res

    eager = bench.eager_langevin
    with monkeypatch.context() as m:
        m.setattr(bench, "eager_langevin", lambda *a, **k: (time.sleep(delay), eager(*a, **k))[1])
        res = run()
    assert res["baseline_s_median"] >= delay > res["framework_s_median"]
    assert res["speedup_baseline_over_framework"] > 1

    create = regs.sampler.create
    monkeypatch.setattr(regs.sampler, "create", lambda *a, **k: _SlowSampler(create(*a, **k), delay))
    res = run()
    assert res["framework_s_median"] >= delay > res["baseline_s_median"]
    assert res["speedup_baseline_over_framework"] < 1


def test_eager_baseline_and_sampler_follow_the_same_dynamics():
    """Without noise the bench's baseline loop and the Langevin sampler are the same map."""
    from coop_coopnets.samplers import Langevin, LangevinOptions
    from coopcore.bench import eager_langevin
    from coopcore.plugin_manager import get_registries

    torch.manual_seed(0)
    d = get_registries().energy.create("coopnets.descriptor.mnist")
    y0 = torch.randn(3, 1, 28, 28) * 0.1
    ours = Langevin(LangevinOptions(n_steps=3, step_size=0.002, noise=False)).run(
        lambda y: -d.energy(y), y0, torch.Generator()).samples
    s2 = d.reference_std**2
    y = y0.clone()
    for _ in range(3):
        y = y.detach().requires_grad_(True)
        (y.pow(2).sum() / (2 * s2) - d.score(y).sum()).backward()
        y = y - 0.5 * 0.002**2 * y.grad
    assert torch.allclose(ours, y.detach(), atol=1e-6)
    eager_langevin(d, y0, 2, 0.002)  # the baseline itself runs and leaves no gradients behind
    assert all(p.grad is None for p in d.parameters())


NAMELESS_METRIC_PLUGIN = '''
from coopcore import MetricResult, NoOptions, hookimpl

class Nameless:
    name = "nameless"

    def compute(self, context):
        return MetricResult(value=1.0, n_samples=1, backend="test")  # forgets `name`

@hookimpl
def coop_register_metrics(registry):
    registry.add("nameless", lambda options: Nameless(), NoOptions, "a metric with a bug")
'''


def _add_plugin(monkeypatch, tmp_path, module: str, source: str) -> None:
    import importlib.metadata as md

    import coopcore.plugin_manager as pmod

    class Dist:
        metadata = {"Name": f"{module}-dist"}
        version = "0.0"

    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = pmod._entry_points()
    ep = md.EntryPoint(name=module, value=module, group="coop")
    object.__setattr__(ep, "dist", Dist())
    monkeypatch.setattr(pmod, "_entry_points", lambda: [*real, ep])
    pmod.reset_registries()


def test_eval_reports_a_metric_plugins_exception_without_traceback(trained_run, monkeypatch, tmp_path, capsys):
    _add_plugin(monkeypatch, tmp_path, "coop_nameless_metric", NAMELESS_METRIC_PLUGIN)
    assert run_cli(["eval", trained_run, "--metric", "nameless"]) == 1
    err = capsys.readouterr().err
    assert "metric 'nameless' failed: TypeError" in err and "name" in err
    assert "plugin 'coop_nameless_metric'" in err and "Traceback" not in err
    assert "Traceback" in (trained_run / "error.log").read_text()


def test_train_says_in_one_line_that_a_plugin_failed_to_load(monkeypatch, tmp_path, capsys):
    _add_plugin(monkeypatch, tmp_path, "coop_broken_dep", "raise ImportError('needs libfoo')\n")
    assert run_cli(["train", "coopnets-digits", "--out", tmp_path / "r", "--set", "run.iterations=0"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if "failed to load" in x]
    assert lines == ["warning: 1 plugin(s) failed to load and are skipped: coop_broken_dep (see `coop plugins`)"]
