"""The one resolution: recipe file, packaged name and run directory give the same experiment."""
from __future__ import annotations

import json

import pytest
import torch

from coopcore.build import build_experiment
from coopcore.config import RECIPE_PACKAGE, packaged_file
from coopcore.errors import ConfigError, UsageError
from coopcore.experiment import resolve, resolve_data

from conftest import train_tiny_run

RECIPE = "coopnets-digits"


def test_packaged_name_and_file_path_resolve_alike(registries):
    by_name = resolve(RECIPE, registries=registries)
    by_path = resolve(packaged_file(RECIPE_PACKAGE, f"{RECIPE}.toml"), registries=registries)
    assert by_name.to_data() == by_path.to_data()
    assert by_name.hash() == by_path.hash()


def test_components_keep_their_entry_and_validated_options(registries):
    r = resolve(RECIPE, registries=registries)
    sampler = r.samplers["revision"]
    assert sampler.entry is registries.sampler.get("langevin_revision")
    assert isinstance(sampler.options, sampler.entry.options)
    assert sampler.options.n_steps == 10  # the recipe's value
    assert r.models["descriptor"].family == "energy" and r.models["generator"].family == "generator"
    assert r.models["descriptor"].key == "models.descriptor"


def test_the_factory_receives_the_resolved_options_object_itself(registries, monkeypatch):
    """Nothing is converted twice: building hands the very options object resolution made."""
    r = resolve(RECIPE, ["data.options.limit=32"], registries=registries)
    seen = []
    registry = r.samplers["revision"].registry
    monkeypatch.setattr(registry, "instantiate", lambda e, o, **k: (seen.append(o), e.factory(o, **k))[1])
    build_experiment(r, torch.device("cpu"), registries=registries)
    assert seen and seen[0] is r.samplers["revision"].options


def test_config_json_reads_back_into_the_same_experiment(tmp_path, registries):
    run = train_tiny_run(tmp_path / "run", iterations=1)
    written = json.loads((run / "config.json").read_text())
    again = resolve(run, registries=registries)  # a run directory is a recipe too
    assert again.to_data() == written
    assert resolve_data(written, registries=registries).to_data() == written


def test_overrides_seed_and_device_are_recorded(registries):
    r = resolve(RECIPE, ["run.iterations=5"], seed=11, device="cpu", registries=registries)
    data = r.to_data()
    assert (data["run"]["iterations"], data["run"]["seed"], data["run"]["device"]) == (5, 11, "cpu")


def test_unknown_recipe_lists_the_packaged_ones():
    with pytest.raises(UsageError, match="not a file, a run directory or a packaged recipe.*coopnets-digits"):
        resolve("no-such-recipe")


def test_unknown_component_names_the_key(registries):
    with pytest.raises(ConfigError, match=r"'samplers\.revision\.name'.*unknown sampler 'nope'"):
        resolve(RECIPE, ["samplers.revision.name='nope'"], registries=registries)


def test_train_a_run_directory_resumes_it_in_place(tmp_path, capsys):
    from conftest import run_cli

    run = train_tiny_run(tmp_path / "run", iterations=2)
    capsys.readouterr()
    assert run_cli(["train", run, "--resume", "--no-progress", "--set", "run.iterations=3"]) == 0
    assert "resumed from" in capsys.readouterr().err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert run_cli(["train", run, "--no-progress"]) == 2  # without --resume it is never overwritten
