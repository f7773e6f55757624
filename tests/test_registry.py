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
