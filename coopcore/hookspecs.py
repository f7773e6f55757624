"""Plugin hook specifications (pluggy project ``coop``).

A plugin is a module, found through the ``coop`` entry-point group, that defines any of these
functions decorated with ``coopcore.hookimpl``.  Each hook receives the registry of one family,
scoped to the plugin so that it is recorded as the owner of what it adds::

    from coopcore import hookimpl

    @hookimpl
    def coop_register_samplers(registry):
        registry.add("my_sampler", MySampler, MySamplerOptions)
"""
from __future__ import annotations

import pluggy

from .families import FAMILIES
from .registry import ScopedRegistry

PROJECT = "coop"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class CoopHookSpecs:
    """One hook per family of `coopcore.families.FAMILIES` (checked when this module is imported)."""

    @hookspec
    def coop_register_energy_models(self, registry: ScopedRegistry) -> None:
        """Add energy models (descriptors): factories returning an `EnergyModel` nn.Module."""

    @hookspec
    def coop_register_generators(self, registry: ScopedRegistry) -> None:
        """Add generator networks: factories returning a `Generator` nn.Module."""

    @hookspec
    def coop_register_encoders(self, registry: ScopedRegistry) -> None:
        """Add inference networks: factories returning an `Encoder` nn.Module."""

    @hookspec
    def coop_register_samplers(self, registry: ScopedRegistry) -> None:
        """Add samplers: factories returning a `Sampler`."""

    @hookspec
    def coop_register_objectives(self, registry: ScopedRegistry) -> None:
        """Add learning algorithms: factories ``(options, parts) -> Objective``."""

    @hookspec
    def coop_register_datasets(self, registry: ScopedRegistry) -> None:
        """Add datasets: factories ``(options, root) -> ImageDataset``."""

    @hookspec
    def coop_register_metrics(self, registry: ScopedRegistry) -> None:
        """Add metrics: factories ``(options) -> Metric``."""

    @hookspec
    def coop_register_tables(self, registry: ScopedRegistry) -> None:
        """Add paper tables for `coop repro`: factories ``(options) -> TableSpec``."""


def _check_against_the_family_table() -> None:
    """The declared hooks are exactly the table's, each with a docstring and ``(registry)``."""
    declared = {name for name, fn in vars(CoopHookSpecs).items() if hasattr(fn, f"{PROJECT}_spec")}
    expected = {f.hook for f in FAMILIES}
    if declared != expected:
        raise RuntimeError(
            "coopcore.hookspecs: CoopHookSpecs and coopcore.families.FAMILIES disagree: "
            f"declared only {sorted(declared - expected)}, in the table only {sorted(expected - declared)}"
        )
    for hook in sorted(declared):
        fn = vars(CoopHookSpecs)[hook]
        if not (fn.__doc__ or "").strip():
            raise RuntimeError(f"coopcore.hookspecs: CoopHookSpecs.{hook} has no docstring")
        if fn.__code__.co_varnames[: fn.__code__.co_argcount] != ("self", "registry"):
            raise RuntimeError(f"coopcore.hookspecs: CoopHookSpecs.{hook} must take (self, registry)")


_check_against_the_family_table()
