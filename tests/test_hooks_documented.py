"""Meta-test: every plugin hook is specified with a docstring, documented in docs/plugins.md and
exercised by a built-in plugin or a test.

Adding a hook to `coopcore.hookspecs.HOOK_FOR_FAMILY` without documenting it, or without any
implementation under plugins/ or tests/, fails here.  `coop_register_encoders` has no built-in
implementation yet, so the in-process plugin below exercises it.
"""
from __future__ import annotations

import types
from pathlib import Path

import attrs
import pytest
import torch

from coopcore import Encoder, hookimpl, positive
from coopcore.hookspecs import HOOK_FOR_FAMILY, PROJECT, CoopHookSpecs
from coopcore.plugin_manager import load_registries
from coopcore.registry import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugins.md"
HOOKS = sorted(HOOK_FOR_FAMILY.values())


def _hookspec_names() -> set[str]:
    return {
        name for name, fn in vars(CoopHookSpecs).items()
        if callable(fn) and hasattr(fn, f"{PROJECT}_spec")  # set by pluggy's HookspecMarker
    }


def test_every_family_has_exactly_one_specified_hook():
    assert set(HOOK_FOR_FAMILY) == set(FAMILIES)
    assert len(set(HOOK_FOR_FAMILY.values())) == len(HOOK_FOR_FAMILY)
    assert _hookspec_names() == set(HOOK_FOR_FAMILY.values())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook):
    assert (getattr(CoopHookSpecs, hook).__doc__ or "").strip(), f"CoopHookSpecs.{hook} has no docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_the_plugin_guide(hook):
    text = GUIDE.read_text(encoding="utf-8")
    # as a code span, which also covers the ``### `hook` `` headings
    assert f"`{hook}`" in text, f"{hook} is not documented in {GUIDE.relative_to(ROOT)}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_builtin_plugin_or_a_test(hook):
    users = [
        p.relative_to(ROOT) for folder in ("plugins", "tests") for p in sorted((ROOT / folder).rglob("*.py"))
        if f"def {hook}(" in p.read_text(encoding="utf-8")
    ]
    assert users, f"no built-in plugin (plugins/) or test (tests/) implements {hook}"


# ---------------------------------------------------------------------------------------
# coop_register_encoders: exercised with in-process plugins (object and module forms).
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
