"""The divergence-triangle recipes resolve against the registries, and the digits recipe trains
end to end through the CLI (shrunk with --set), on occluded digits, and is evaluated with the
Table 3 recovery-error metric."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from coopcore.checkpoint import load_checkpoint
from coopcore.experiment import resolve
from coopcore.plugin_manager import get_registries

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
NAMES = ["triangle-cifar", "triangle-celeba", "triangle-celeba-occluded", "triangle-mnist", "triangle-digits"]


@pytest.mark.parametrize("name", NAMES)
def test_recipe_resolves(name):
    regs = get_registries()
    resolved = resolve(RECIPES / f"{name}.toml", registries=regs)
    assert resolved.objective.name == "triangle"
    assert {resolved.models[r].name.split(".")[1] for r in ("descriptor", "generator", "encoder")} == {
        "ebm", "generator", "encoder"}


def test_occluded_recipe_switches_mask_with_set():
    regs = get_registries()
    resolved = resolve(RECIPES / "triangle-celeba-occluded.toml", ["objective.options.occlusion=\"P.5\""], registries=regs)
    assert resolved.objective.options.occlusion == "P.5"


TINY = [
    "data.batch_size=8",
    "data.options.limit=24",
    "models.descriptor.options={channels=[4, 8, 8]}",
    "models.generator.options={latent_dim=8, channels=[8, 8, 4]}",
    "models.encoder.options={latent_dim=8, channels=[4, 8, 8]}",
    "objective.options={occlusion='B10'}",
    "run.tensorboard=false",
    "run.log_every=1",
    "run.sample_every=0",
    "run.sample_count=4",
    "run.checkpoint_every=0",
    "eval=[]",
]


def test_digits_recipe_trains_end_to_end_on_occluded_digits(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [x for s in TINY for x in ("--set", s)]
    assert run_cli(["train", "triangle-digits", "--out", out, "--no-progress", *sets, "--set", "run.iterations=3"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert {"loss_ebm", "loss_encoder", "loss_generator", "recon", "kl", "latent_nll", "recovery_error"} <= set(rows[0])
    assert 0.0 < rows[-1]["recovery_error"] < 1.0
    ckpt = load_checkpoint(sorted((out / "checkpoints").glob("*.ckpt"))[-1])
    state = ckpt["objective"]["occlusion"]
    assert state["name"] == "B10" and tuple(state["masks"].shape) == (24, 1, 28, 28)
    capsys.readouterr()
    assert run_cli(["eval", out, "--metric", "triangle.recovery_error", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["n_samples"] == 24 and 0.0 < rec["value"] < 1.0 and rec["details"]["occlusion"] == "B10"


def test_resumed_occluded_run_is_bit_exact(tmp_path):
    """Stop after 2 iterations, resume to 3: models and the occlusion state (masks, imputed
    pixels) equal a straight 3-iteration run's."""
    sets = [x for s in TINY for x in ("--set", s)]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli(["train", "triangle-digits", "--out", straight, "--no-progress", *sets, "--set", "run.iterations=3"]) == 0
    assert run_cli(["train", "triangle-digits", "--out", split, "--no-progress", *sets, "--set", "run.iterations=2"]) == 0
    assert run_cli(["train", "triangle-digits", "--out", split, "--no-progress", "--resume", *sets,
                    "--set", "run.iterations=3"]) == 0
    a, b = (load_checkpoint(d / "checkpoints" / "iter-00000003.ckpt") for d in (straight, split))
    for role in ("descriptor", "generator", "encoder"):
        assert all(torch.equal(a["models"][role][k], b["models"][role][k]) for k in a["models"][role])
    occ_a, occ_b = a["objective"]["occlusion"], b["objective"]["occlusion"]
    assert torch.equal(occ_a["masks"], occ_b["masks"]) and torch.equal(occ_a["imputed"], occ_b["imputed"])
