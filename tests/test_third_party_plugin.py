"""The example third-party plugin, pip-installed as its own distribution, is discovered and works.

CI installs it (`scripts/test.sh` runs ``pip install ./examples/coop-example-plugin``).  Locally
these tests skip when the `coop-example-plugin` distribution is not installed; under
``CI=true`` its absence is a failure, so CI cannot pass without exercising the third-party path.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coopcore import ConfigError, EnergyModel, Sampler, SamplerOutput
from coopcore.config import structure
from coopcore.plugin_manager import get_registries, load_registries, reset_registries
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "examples" / "coop-example-plugin"
RECIPE = PACKAGE_DIR / "recipe.toml"
DIST = "coop-example-plugin"
MODEL, SAMPLER = "example.mlp_descriptor", "example.langevin_annealed"


def _installed_entry_point() -> md.EntryPoint | None:
    """The `example` entry point of the installed distribution (None when not installed)."""
    try:
        dist = md.distribution(DIST)
    except md.PackageNotFoundError:
        return None
    return next((ep for ep in dist.entry_points if ep.group == "coop" and ep.name == "example"), None)


@pytest.fixture
def example_plugin(monkeypatch):
    """The installed plugin module, with freshly discovered registries and no COOP_* switches."""
    for var in ("COOP_DISABLE_PLUGIN_AUTOLOAD", "COOP_PLUGINS", "COOP_BLOCK_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    reset_registries()  # get_registries() caches: discover afresh
    ep = _installed_entry_point()
    if ep is None:
        how = f"the {DIST} distribution is not installed (pip install ./examples/coop-example-plugin)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install the example plugin before running the tests: {how}", pytrace=False)
        pytest.skip(how)
    yield ep.load()
    reset_registries()


def _sampler(**options):
    """The sampler built through the registries, as a recipe would build it."""
    reg = get_registries()
    opts = structure(reg.sampler.get(SAMPLER).options, options, "samplers.test.options")
    return reg.sampler.create(SAMPLER, opts)


# ---------------------------------------------------------------------------------------
# discovery
def test_installed_copy_matches_the_source(example_plugin):
    installed = Path(example_plugin.__file__).read_text()
    source = (PACKAGE_DIR / "coop_example_plugin" / "plugin.py").read_text()
    assert installed == source, (
        f"the installed {DIST} ({example_plugin.__file__}) is stale: "
        "pip install --force-reinstall --no-deps ./examples/coop-example-plugin"
    )


def test_coop_plugins_json_lists_it_as_a_loaded_third_party_plugin(example_plugin, capsys):
    assert run_cli(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)["plugins"]}
    ex = plugins["example"]
    assert ex["status"] == "loaded", ex["error"]
    assert ex["builtin"] is False and ex["error"] == ""
    assert (ex["distribution"], ex["version"], ex["module"]) == (DIST, "0.1.0", "coop_example_plugin.plugin")
    assert ex["registered"] == {"energy": [MODEL], "sampler": [SAMPLER]}
    assert sorted(ex["hooks"]) == ["coop_register_energy_models", "coop_register_samplers"]
    # the built-ins are still there and still built-in
    assert plugins["coopnets"]["status"] == "loaded" and plugins["coopnets"]["builtin"] is True
    reg = get_registries()
    assert reg.energy.get(MODEL).owner == "example" and reg.sampler.get(SAMPLER).owner == "example"


def test_coop_console_script_lists_it(example_plugin):
    script = Path(sys.executable).parent / ("coop.exe" if os.name == "nt" else "coop")
    if not script.exists():
        pytest.skip(f"no `coop` console script next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COOP_")}
    proc = subprocess.run([str(script), "plugins"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"example ({DIST} 0.1.0) [loaded]" in proc.stdout
    assert MODEL in proc.stdout and SAMPLER in proc.stdout


def test_environment_switches_apply_to_it(example_plugin, monkeypatch):
    def status():
        regs = load_registries()
        return next(p.status for p in regs.plugins if p.name == "example"), MODEL in regs.energy

    assert status() == ("loaded", True)
    monkeypatch.setenv("COOP_BLOCK_PLUGINS", "example")
    assert status() == ("blocked", False)
    monkeypatch.delenv("COOP_BLOCK_PLUGINS")
    monkeypatch.setenv("COOP_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert status() == ("disabled", False)
    monkeypatch.setenv("COOP_PLUGINS", "example")
    assert status() == ("loaded", True)


# ---------------------------------------------------------------------------------------
# end to end
def test_trains_from_its_recipe_mixing_third_party_and_builtin_parts(example_plugin, tmp_path):
    out = tmp_path / "run"
    assert run_cli(["train", RECIPE, "--out", out, "--no-progress"]) == 0
    assert (out / "checkpoints" / "iter-00000005.ckpt").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["models"]["descriptor"]["name"] == MODEL
    assert cfg["samplers"]["revision"] == {
        "name": SAMPLER, "options": {"n_steps": 5, "step_size": 0.05, "final_step_size": 0.01, "noise": True},
    }
    # the run can be rebuilt from its config.json (third-party components by name) and sampled
    assert run_cli(["sample", out, "--n", "4", "--out", tmp_path / "samples"]) == 0
    assert sorted(p.name.split("-")[3] for p in (tmp_path / "samples").glob("*.png")) == ["generator", "revised"]


@pytest.mark.parametrize("override, key", [
    ("samplers.revision.options.steps=3", "samplers.revision.options.steps"),
    ("samplers.revision.options.final_step_size=0.5", "samplers.revision.options.final_step_size"),
    ("models.descriptor.options.hidden=[64, 'x']", "models.descriptor.options.hidden[1]"),
    ("models.descriptor.options.activation='tanh'", "models.descriptor.options.activation"),
])
def test_its_options_are_validated_naming_the_key_path(example_plugin, tmp_path, capsys, override, key):
    assert run_cli(["train", RECIPE, "--out", tmp_path / "bad", "--set", override]) == 2
    assert f"'{key}'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------
# the components, against independent references
def test_mlp_descriptor_scores_one_value_per_example(example_plugin):
    reg = get_registries()
    entry = reg.energy.get(MODEL)
    default = entry.options()
    assert (default.input_shape, default.hidden, default.reference_std) == ((1, 28, 28), (256, 256), 0.3)
    opts = structure(entry.options, {"input_shape": [1, 8, 8], "hidden": [16, 8], "reference_std": "none"})
    model = reg.energy.create(MODEL, opts)
    assert isinstance(model, EnergyModel) and isinstance(model, torch.nn.Module)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    f = model.score(x)
    assert f.shape == (5,)
    assert torch.equal(model.energy(x), -f)  # flat reference: E = -f
    # Gaussian reference (eq. 4): E = ||x||^2 / (2 s^2) - f
    model = reg.energy.create(MODEL, structure(entry.options, {"input_shape": [1, 8, 8], "hidden": [16]}))
    expected = x.flatten(1).pow(2).sum(1) / (2 * 0.3**2) - model.score(x)
    assert torch.allclose(model.energy(x), expected)


def test_annealed_sampler_lands_on_a_known_gaussian(example_plugin):
    sampler = _sampler(n_steps=500, step_size=0.6, final_step_size=0.05)
    assert isinstance(sampler, Sampler) and sampler.n_steps == 500
    mu = torch.tensor([2.0, -1.0, 0.5])
    sd = torch.tensor([0.5, 1.0, 2.0])
    n = 10_000
    out = sampler.run(lambda x: -0.5 * ((x - mu) / sd).pow(2).sum(1), torch.zeros(n, 3),
                      torch.Generator().manual_seed(0))
    assert isinstance(out, SamplerOutput) and out.samples.shape == (n, 3)
    # within 4 standard errors of the mean plus a small discretisation allowance
    assert ((out.samples.mean(0) - mu).abs() <= 4 * sd / n**0.5 + 0.02).all(), out.samples.mean(0)
    assert torch.allclose(out.samples.std(0), sd, rtol=0.05), out.samples.std(0)
    assert out.energies.shape == (500,) and out.grad_norms.shape == (500,)


def test_annealed_step_size_decays_geometrically_from_step_size_to_final(example_plugin):
    # Without noise on log p = -x^2 / 2, step t maps x to x * (1 - d_t^2 / 2): the product of
    # the factors tells whether the schedule is d_t = step_size * (final / step_size)^(t / (T - 1)).
    T, s, f = 7, 0.8, 0.1
    sampler = _sampler(n_steps=T, step_size=s, final_step_size=f, noise=False)
    init = torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lp = lambda x: -0.5 * x.pow(2).sum(1)  # noqa: E731
    out = sampler.run(lp, init, torch.Generator().manual_seed(0))
    deltas = [s * (f / s) ** (t / (T - 1)) for t in range(T)]
    factors = torch.tensor([1 - d**2 / 2 for d in deltas], dtype=torch.float64)
    assert torch.allclose(out.samples, init * factors.prod(), rtol=1e-12)
    # diagnostics: per-step batch means of energy (-log p) and gradient norm, before each step,
    # kept as device tensors
    xs = [init * factors[:t].prod() for t in range(T)]
    assert isinstance(out.energies, torch.Tensor) and out.energies.device == init.device
    assert torch.allclose(out.energies, torch.stack([(-lp(x)).mean() for x in xs]))
    assert torch.allclose(out.grad_norms, torch.stack([x.norm(dim=1).mean() for x in xs]))
    assert out.acceptance is None


def test_annealed_sampler_keeps_masked_entries_bit_identical(example_plugin):
    sampler = _sampler(n_steps=20, step_size=0.3, final_step_size=0.05)
    init = torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    lp = lambda x: -0.5 * (x - 1.0).pow(2).flatten(1).sum(1)  # noqa: E731
    # a full-shape mask and one broadcast over the batch (1 = may change, 0 = keep)
    full = (torch.rand(init.shape, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    shared = torch.zeros(1, 1, 6, 6)
    shared[..., 2:4, :] = 1.0
    for mask in (full, shared, full.bool()):
        res = sampler.run(lp, init, torch.Generator().manual_seed(4), mask=mask)
        keep = (mask == 0).expand_as(init)
        assert torch.equal(res.samples[keep], init[keep])
        assert (res.samples[~keep] != init[~keep]).all()
    # and even where log p has a non-finite gradient outside the mask
    bad = lambda x: lp(x) + torch.where(shared > 0, 0.0, x.abs().sqrt()).flatten(1).sum(1)  # noqa: E731
    start = init * shared  # 0 outside the mask, where d sqrt(|x|) / dx is not finite
    res = sampler.run(bad, start, torch.Generator().manual_seed(4), mask=shared)
    keep = (shared == 0).expand_as(init)
    assert torch.equal(res.samples[keep], start[keep]) and torch.isfinite(res.samples).all()


def test_annealed_sampler_draws_noise_from_the_explicit_generator_only(example_plugin):
    sampler = _sampler(n_steps=5)
    lp = lambda x: -0.5 * x.pow(2).sum(1)  # noqa: E731
    init = torch.zeros(4, 3)
    torch.manual_seed(1)
    a = sampler.run(lp, init, torch.Generator().manual_seed(7)).samples
    torch.manual_seed(2)  # the global RNG must not matter
    b = sampler.run(lp, init, torch.Generator().manual_seed(7)).samples
    c = sampler.run(lp, init, torch.Generator().manual_seed(8)).samples
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(init, torch.zeros(4, 3))  # init is not modified in place


def test_option_defaults_and_validation(example_plugin):
    entry = get_registries().sampler.get(SAMPLER)
    default = entry.options()
    assert default.final_step_size <= default.step_size
    with pytest.raises(ConfigError) as err:
        structure(entry.options, {"step_size": 0.01, "final_step_size": 0.1}, "samplers.revision.options")
    assert err.value.path == "samplers.revision.options.final_step_size"
    with pytest.raises(ConfigError) as err:
        structure(entry.options, {"n_steps": -1}, "samplers.revision.options")
    assert err.value.path == "samplers.revision.options.n_steps"
    zero = _sampler(n_steps=0).run(lambda x: -x.pow(2).sum(1), torch.ones(2, 2), torch.Generator().manual_seed(0))
    assert torch.equal(zero.samples, torch.ones(2, 2)) and zero.energies.numel() == 0


def test_protocol_only_sampler_serves_as_coopnets_inference_sampler(example_plugin, tmp_path):
    """l_q > 0 with a third-party sampler: CoopNets must call it through the protocol only."""
    out = tmp_path / "lq"
    code = run_cli(["train", RECIPE, "--out", out, "--no-progress", "--set", "run.iterations=1",
                    "--set", 'samplers.inference={name="example.langevin_annealed", options={n_steps=2}}'])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["samplers"]["inference"]["options"]["n_steps"] == 2
