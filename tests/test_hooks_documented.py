"""Every family's plugin hook works and is documented.

For every family of `coopcore.families.FAMILIES`: loading the registries calls that family's
hook in a shipped plugin (a built-in one, or the example third-party plugin when installed),
the hook registers at least one entry, and one of those entries passes the family's check (its
`coopcore.contract` contract where it has one, otherwise built from its defaults and checked
against the family's protocol); docs/plugins.md documents the hook with its family.  That the
declared hookspecs match the table is checked when `coopcore.hookspecs` is imported.
Below: the encoder hook from in-process plugins (an object and a module) and its rollback.
"""
from __future__ import annotations

import types
from pathlib import Path

import attrs
import pytest
import torch

from coopcore import Encoder, hookimpl, positive
from coopcore.contract import check_entry
from coopcore.families import FAMILIES, Family
from coopcore.plugin_manager import load_registries

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
SHIPPED_THIRD_PARTY = {"example"}  # examples/coop-example-plugin


@pytest.fixture(scope="module")
def loaded():
    return load_registries()


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_each_familys_hook_is_called_and_registers_working_entries(loaded, fam: Family):
    providers = [
        p for p in loaded.plugins
        if p.status == "loaded" and (p.builtin or p.name in SHIPPED_THIRD_PARTY) and fam.hook in p.hooks
    ]
    assert providers, f"no built-in or example plugin implements {fam.hook}"
    registry = loaded.family(fam.name)
    names = [n for p in providers for n in p.registered.get(fam.name, [])]
    assert names, f"{fam.hook} was implemented by {[p.name for p in providers]} but registered nothing"
    assert all(registry.get(n).owner in {p.name for p in providers} for n in names)
    problems = []
    for name in names:
        try:
            if fam.contract is not None:
                check_entry(loaded, fam.name, name)
            else:
                obj = registry.create(name)  # from its defaults; the registry checks the protocol
                assert fam.check_object(obj) is None
        except Exception as exc:  # noqa: BLE001 - e.g. a dataset that needs files under a root
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        return  # one working entry is enough
    pytest.fail(f"no {fam.name} registered through {fam.hook} passes its check:\n" + "\n".join(problems))


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_hook_is_documented_in_the_plugin_guide(fam: Family):
    text = GUIDE.read_text(encoding="utf-8")
    where = GUIDE.relative_to(ROOT)
    assert f"| `{fam.hook}` | `{fam.name}` |" in text, f"{where}: the hook table has no row for {fam.hook}"
    assert f"### `{fam.hook}`" in text, f"{where}: no section on {fam.hook}"


# ---------------------------------------------------------------------------------------
# coop_register_encoders from in-process plugins (object and module forms).
@attrs.frozen(kw_only=True)
class TinyEncoderOptions:
    """A linear encoder q(z | x) = N(mu(x), diag(exp(logvar(x))))."""

    in_features: int = attrs.field(default=4, validator=positive)
    latent_dim: int = attrs.field(default=3, validator=positive)


class TinyEncoder(torch.nn.Module):
    """A tiny linear inference network returning (mu, logvar)."""

    def __init__(self, options: TinyEncoderOptions = TinyEncoderOptions()) -> None:
        super().__init__()
        self.input_shape = (options.in_features,)
        self.latent_shape = (options.latent_dim,)
        self.lin = torch.nn.Linear(options.in_features, 2 * options.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.lin(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar


class EncoderPlugin:
    """An in-process plugin object (pluggy accepts any object with hookimpl methods)."""

    @hookimpl
    def coop_register_encoders(self, registry):
        registry.add("test.tiny_encoder", TinyEncoder, TinyEncoderOptions)


def _module_plugin() -> types.ModuleType:
    """The same as a module, which is what an entry point loads."""
    mod = types.ModuleType("coop_test_encoder_module")

    @hookimpl
    def coop_register_encoders(registry):
        registry.add("test.module_encoder", TinyEncoder, TinyEncoderOptions)

    mod.coop_register_encoders = coop_register_encoders
    return mod


def test_encoder_hook_registers_and_builds():
    regs = load_registries(extra_plugins=[("encoders", EncoderPlugin())], entry_points=False)
    info = next(p for p in regs.plugins if p.name == "encoders")
    assert info.status == "loaded", info.error
    assert info.builtin is False and info.hooks == ["coop_register_encoders"]
    assert info.registered == {"encoder": ["test.tiny_encoder"]}
    assert regs.encoder.get("test.tiny_encoder").owner == "encoders"

    enc = regs.encoder.create("test.tiny_encoder")  # default options
    assert isinstance(enc, Encoder) and isinstance(enc, torch.nn.Module)
    mu, logvar = enc(torch.zeros(5, 4))
    assert mu.shape == (5, *enc.latent_shape) == (5, 3) and logvar.shape == (5, 3)

    enc = regs.encoder.create("test.tiny_encoder", TinyEncoderOptions(in_features=8, latent_dim=2))
    mu, logvar = enc(torch.zeros(7, 2, 2, 2))
    assert mu.shape == (7, 2) and logvar.shape == (7, 2)


def test_encoder_hook_from_a_module_alongside_the_builtin_plugins():
    regs = load_registries(extra_plugins=[("encoder-module", _module_plugin())])
    status = {p.name: p.status for p in regs.plugins}
    assert status["encoder-module"] == "loaded" and status["coopnets"] == "loaded"
    assert "test.module_encoder" in regs.encoder and "coopnets" in regs.objective
    mu, logvar = regs.encoder.create("test.module_encoder")(torch.ones(2, 4))
    assert mu.shape == logvar.shape == (2, 3)


def test_encoder_that_is_not_a_module_is_rejected_and_rolled_back():
    class NotAModule:
        latent_shape = (3,)

        def forward(self, x):
            return x, x

    class Bad:
        @hookimpl
        def coop_register_encoders(self, registry):
            registry.add("test.fine_encoder", TinyEncoder, TinyEncoderOptions)
            registry.add("test.bad_encoder", NotAModule)

    regs = load_registries(extra_plugins=[("bad", Bad())], entry_points=False)
    info = next(p for p in regs.plugins if p.name == "bad")
    assert info.status == "failed" and "not a torch.nn.Module" in info.error
    assert len(regs.encoder) == 0  # its first registration was rolled back too
