"""Meta-test: every hook is specified with a docstring, documented in docs/plugins.md and
exercised by a built-in plugin or a test (datasette enforces the same)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from coopcore import hookimpl
from coopcore.hookspecs import HOOK_FOR_FAMILY, CoopHookSpecs
from coopcore.plugin_manager import load_registries

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hook", sorted(HOOK_FOR_FAMILY.values()))
def test_hook_is_specified_documented_and_exercised(hook):
    assert (getattr(CoopHookSpecs, hook).__doc__ or "").strip(), f"{hook} has no docstring"
    assert f"`{hook}`" in (ROOT / "docs" / "plugins.md").read_text(), f"{hook} is not in docs/plugins.md"
    users = [p for folder in ("plugins", "tests") for p in (ROOT / folder).rglob("*.py")
             if f"def {hook}(" in p.read_text()]
    assert users, f"no built-in plugin or test implements {hook}"


class _TinyEncoder(torch.nn.Module):
    latent_shape = (3,)

    def __init__(self, options=None) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 6)

    def forward(self, x):
        h = self.lin(x.flatten(1))
        return h[:, :3], h[:, 3:]


class _EncoderPlugin:
    @hookimpl
    def coop_register_encoders(self, registry):
        registry.add("test.tiny_encoder", _TinyEncoder)


def test_encoder_hook_registers_and_builds():
    regs = load_registries([("encoders", _EncoderPlugin())], entry_points=False)
    info = next(p for p in regs.plugins if p.name == "encoders")
    assert info.status == "loaded" and info.registered == {"encoder": ["test.tiny_encoder"]}
    enc = regs.encoder.create("test.tiny_encoder")
    mu, logvar = enc(torch.zeros(5, 4))
    assert mu.shape == (5, 3) and logvar.shape == (5, 3)
