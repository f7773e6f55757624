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

from .registry import ScopedRegistry

PROJECT = "coop"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: family name -> hook name; the meta-test checks every hook is documented and tested.
HOOK_FOR_FAMILY: dict[str, str] = {
    "energy": "coop_register_energy_models",
    "generator": "coop_register_generators",
    "encoder": "coop_register_encoders",
    "sampler": "coop_register_samplers",
    "objective": "coop_register_objectives",
    "dataset": "coop_register_datasets",
    "metric": "coop_register_metrics",
    "table": "coop_register_tables",
}


class CoopHookSpecs:
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
