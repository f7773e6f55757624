"""The CLI from training to sampling and evaluation, on the embedded digits."""
from __future__ import annotations

import json

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


def test_bench_runs_both_loops(capsys):
    assert run_cli(["bench", "--batch", "4", "--steps", "2", "--repeats", "1", "--json", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["framework_s_median"] > 0 and res["baseline_s_median"] > 0
    assert res["speedup_baseline_over_framework"] == pytest.approx(res["baseline_s_median"] / res["framework_s_median"])


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
