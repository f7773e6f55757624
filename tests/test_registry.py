"""Registries and plugin discovery: duplicates, wrong types, broken plugins, block lists."""
from __future__ import annotations

import importlib.metadata as md
import json
import types

import attrs
import pytest
import torch

from coopcore import EnergyModelBase, RegistryError, hookimpl
from coopcore import plugin_manager as pmod
from coopcore.registry import Registry

from conftest import run_cli


class TinyDescriptor(EnergyModelBase):
    def __init__(self, options=None) -> None:
        super().__init__((2,), 1.0)
        self.lin = torch.nn.Linear(2, 1)

    def score(self, x):
        return self.lin(x).squeeze(1)


def _plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: hookimpl(v) for k, v in hooks.items()})


def test_builtin_plugins_load_through_entry_points(registries):
    names = {p.name: p for p in registries.plugins}
    for builtin in ("coopnets", "datasets", "metrics"):
        assert names[builtin].status == "loaded" and names[builtin].builtin
        assert names[builtin].distribution == "coopnets"
    assert "coopnets" in registries.objective and "digits" in registries.dataset


def test_duplicate_name_rejected_naming_both_owners():
    first = _plugin(coop_register_energy_models=lambda registry: registry.add("dup", TinyDescriptor))
    second = _plugin(coop_register_energy_models=lambda registry: registry.add("dup", TinyDescriptor))
    regs = pmod.load_registries([("alpha", first), ("beta", second)], entry_points=False)
    status = {p.name: p for p in regs.plugins}
    assert status["alpha"].status == "loaded"
    assert status["beta"].status == "failed"
    assert "'alpha'" in status["beta"].error and "'beta'" in status["beta"].error
    assert regs.energy.get("dup").owner == "alpha"
    reg = Registry("energy")
    reg.add("x", TinyDescriptor, owner="one")
    with pytest.raises(RegistryError, match="registered by 'one' and again by 'two'"):
        reg.add("x", TinyDescriptor, owner="two")


def test_model_name_reused_across_model_families_fails_the_later_plugin_naming_both():
    """Recipes name a model without its family, so energy/generator/encoder names must not
    collide: the plugin that reuses a name fails to load, the first owner keeps it."""
    first = _plugin(coop_register_energy_models=lambda registry: registry.add("alpha.net", TinyDescriptor))

    def reuse(registry):
        registry.add("beta.fine", TinyDescriptor)  # rolled back with the failing registration

    second = _plugin(coop_register_energy_models=reuse,
                     coop_register_generators=lambda registry: registry.add("alpha.net", lambda o: None))
    regs = pmod.load_registries([("alpha", first), ("beta", second)], entry_points=False)
    status = {p.name: p for p in regs.plugins}
    assert status["alpha"].status == "loaded"
    beta = status["beta"]
    assert beta.status == "failed" and beta.error.startswith("RegistryError")
    assert "'alpha'" in beta.error and "'beta'" in beta.error and "alpha.net" in beta.error
    assert "energy" in beta.error and "generator" in beta.error
    assert regs.energy.get("alpha.net").owner == "alpha"
    assert "alpha.net" not in regs.generator and "beta.fine" not in regs.energy
    # the same holds in the other order, and for encoders
    regs = pmod.load_registries([
        ("enc", _plugin(coop_register_encoders=lambda registry: registry.add("m", lambda o: None))),
        ("ebm", _plugin(coop_register_energy_models=lambda registry: registry.add("m", TinyDescriptor))),
    ], entry_points=False)
    assert [(p.name, p.status) for p in regs.plugins] == [("enc", "loaded"), ("ebm", "failed")]
    assert "'enc'" in regs.plugins[1].error and "'ebm'" in regs.plugins[1].error
    # other families keep their own namespaces: a sampler may share a model's name
    regs = pmod.load_registries([("both", _plugin(
        coop_register_energy_models=lambda registry: registry.add("same", TinyDescriptor),
        coop_register_samplers=lambda registry: registry.add("same", lambda o: None),
    ))], entry_points=False)
    assert regs.plugins[0].status == "loaded", regs.plugins[0].error


def test_third_party_model_reusing_a_builtin_name_fails_and_builtin_recipes_keep_working(registries):
    builtin = next(iter(registries.energy))  # a built-in descriptor name
    owner = registries.energy.get(builtin).owner
    clash = _plugin(coop_register_generators=lambda registry: registry.add(builtin, lambda o: None))
    regs = pmod.load_registries([("clash", clash)])
    info = next(p for p in regs.plugins if p.name == "clash")
    assert info.status == "failed" and f"'{owner}'" in info.error and "'clash'" in info.error
    assert builtin not in regs.generator and regs.energy.get(builtin).owner == owner
    assert all(p.status == "loaded" for p in regs.plugins if p.builtin)


def test_wrong_types_rejected_at_registration():
    regs = pmod.Registries()
    with pytest.raises(RegistryError, match="not a torch.nn.Module"):
        regs.energy.add("bad", dict, owner="p")
    with pytest.raises(RegistryError, match="options must be an attrs class"):
        regs.energy.add("bad2", TinyDescriptor, options=dict, owner="p")
    with pytest.raises(RegistryError, match="not callable"):
        regs.sampler.add("bad3", 42, owner="p")

    @attrs.frozen
    class NeedsValue:
        x: int

    with pytest.raises(RegistryError, match="constructible with defaults"):
        regs.sampler.add("bad4", lambda o: None, options=NeedsValue, owner="p")


def test_factory_result_checked_against_protocol():
    regs = pmod.Registries()
    regs.sampler.add("not_a_sampler", lambda options: object(), owner="p")
    with pytest.raises(RegistryError, match="does not satisfy the sampler protocol"):
        regs.sampler.create("not_a_sampler")


def test_plugin_failing_in_hook_is_rolled_back_and_others_keep_working():
    def broken(registry):
        registry.add("half_done", TinyDescriptor)
        raise RuntimeError("boom")

    regs = pmod.load_registries(
        [("broken", _plugin(coop_register_energy_models=broken)),
         ("fine", _plugin(coop_register_energy_models=lambda registry: registry.add("ok", TinyDescriptor)))],
        entry_points=False,
    )
    status = {p.name: p for p in regs.plugins}
    assert status["broken"].status == "failed" and "boom" in status["broken"].error
    assert "half_done" not in regs.energy  # partial registration rolled back
    assert "ok" in regs.energy


class _FakeDist:
    def __init__(self, name):
        self.metadata = {"Name": name}
        self.version = "9.9"


def _fake_entry_point(name: str, value: str, dist: str) -> md.EntryPoint:
    ep = md.EntryPoint(name=name, value=value, group="coop")
    object.__setattr__(ep, "dist", _FakeDist(dist))
    return ep


def test_plugin_that_raises_on_import_is_reported(monkeypatch, tmp_path, capsys):
    (tmp_path / "coop_broken_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = pmod._entry_points()
    monkeypatch.setattr(pmod, "_entry_points", lambda: real + [_fake_entry_point("broken", "coop_broken_plugin", "coop-broken")])
    regs = pmod.load_registries()
    status = {p.name: p for p in regs.plugins}
    assert status["broken"].status == "failed"
    assert "missing dependency xyz" in status["broken"].error and "coop_broken_plugin" in status["broken"].error
    assert status["coopnets"].status == "loaded" and "coopnets" in regs.objective
    # and `coop plugins` shows it with its package and error, exit 0
    assert run_cli(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    broken = next(p for p in data["plugins"] if p["name"] == "broken")
    assert broken["status"] == "failed" and broken["distribution"] == "coop-broken"
    assert "missing dependency xyz" in broken["error"]


def test_block_list_and_autoload_switch(monkeypatch, tmp_path):
    (tmp_path / "coop_third.py").write_text(
        "from coopcore import hookimpl\n"
        "@hookimpl\n"
        "def coop_register_metrics(registry):\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    real = pmod._entry_points()
    monkeypatch.setattr(pmod, "_entry_points", lambda: real + [_fake_entry_point("third", "coop_third", "coop-third")])
    assert {p.name: p.status for p in pmod.load_registries().plugins}["third"] == "loaded"
    monkeypatch.setenv("COOP_BLOCK_PLUGINS", "third")
    assert {p.name: p.status for p in pmod.load_registries().plugins}["third"] == "blocked"
    monkeypatch.delenv("COOP_BLOCK_PLUGINS")
    monkeypatch.setenv("COOP_DISABLE_PLUGIN_AUTOLOAD", "1")
    statuses = {p.name: p.status for p in pmod.load_registries().plugins}
    assert statuses["third"] == "disabled" and statuses["coopnets"] == "loaded"
    monkeypatch.setenv("COOP_PLUGINS", "third")
    assert {p.name: p.status for p in pmod.load_registries().plugins}["third"] == "loaded"
