"""Plugin discovery and loading.

Every plugin, built-in or third-party, is an entry point in the ``coop`` group.  Each plugin
is imported and registered on its own: one that fails to import, or whose hook raises (a
duplicate name, a model name that another model family already holds, a wrong type), is
recorded as failed with its package and error, its partial registrations are rolled back, and
the others load normally.  Built-in plugins load first, so a third-party plugin that reuses a
built-in name is the one that fails.

Environment (as pytest and tox do it):
- ``COOP_DISABLE_PLUGIN_AUTOLOAD=1``: load only the plugins shipped in the ``coopnets``
  distribution, plus those named in ``COOP_PLUGINS`` (comma separated entry-point names).
- ``COOP_BLOCK_PLUGINS=a,b``: never load these (shown as blocked by `coop plugins`).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from types import ModuleType
from typing import Any, Iterable, Optional

import attrs
import pluggy

from .families import FAMILIES, family as family_spec
from .hookspecs import PROJECT, CoopHookSpecs
from .registry import Registry

BUILTIN_DISTRIBUTION = "coopnets"


@attrs.define
class PluginInfo:
    """What `coop plugins` reports for one plugin."""

    name: str
    module: str
    distribution: str
    version: str
    status: str  # "loaded" | "failed" | "blocked" | "disabled"
    builtin: bool
    error: str = ""
    registered: dict[str, list[str]] = attrs.field(factory=dict)
    hooks: list[str] = attrs.field(factory=list)


class Registries:
    """All family registries (``registries.energy``, ``registries.sampler``, ... one per
    `coopcore.families.FAMILIES` entry) plus the report of which plugins loaded."""

    def __init__(self) -> None:
        models: list[Registry] = []  # the model families share one namespace
        self._registries: dict[str, Registry] = {
            fam.name: Registry(fam.name, fam.check_factory, fam.check_object,
                               namespace=models if fam.is_model else None)
            for fam in FAMILIES
        }
        self.plugins: list[PluginInfo] = []

    def __getattr__(self, name: str) -> Registry:
        registries = self.__dict__.get("_registries", {})
        if name in registries:
            return registries[name]
        raise AttributeError(f"{type(self).__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._registries))

    def family(self, name: str) -> Registry:
        """The registry of family `name` (KeyError for an unknown family)."""
        return self._registries[family_spec(name).name]

    def remove_owner(self, owner: str) -> None:
        for reg in self._registries.values():
            reg.remove_owner(owner)


def _split_env(name: str) -> set[str]:
    return {p.strip() for p in os.environ.get(name, "").split(",") if p.strip()}


def _entry_points() -> list[md.EntryPoint]:
    eps = md.entry_points(group=PROJECT)
    # Sort for a deterministic load order: built-ins first, then by name.
    return sorted(eps, key=lambda ep: (_dist_name(ep) != BUILTIN_DISTRIBUTION, ep.name))


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "?"


def _dist_version(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else "?"


def register_plugin(
    registries: Registries, pm: pluggy.PluginManager, name: str, module: ModuleType | Any, info: PluginInfo
) -> PluginInfo:
    """Call each of `module`'s hooks with registries scoped to `name`; roll back on failure."""
    try:
        pm.register(module, name=name)
    except Exception as exc:  # noqa: BLE001 - a bad hookimpl signature etc.
        info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
        return info
    try:
        for fam in FAMILIES:
            registry = registries.family(fam.name)
            for impl in getattr(pm.hook, fam.hook).get_hookimpls():
                if impl.plugin_name != name:
                    continue
                info.hooks.append(fam.hook)
                before = set(registry)
                impl.function(registry=registry.scoped(name))
                added = sorted(set(registry) - before)
                if added:
                    info.registered[fam.name] = added
        info.status = "loaded"
    except Exception as exc:  # noqa: BLE001 - isolate every plugin's failure
        registries.remove_owner(name)
        pm.unregister(module)
        info.status = "failed"
        info.error = f"{type(exc).__name__}: {exc}"
        info.registered = {}
        info.hooks = []
    return info


def load_registries(
    extra_plugins: Iterable[tuple[str, Any]] = (), *, entry_points: bool = True
) -> Registries:
    """Discover plugins and fill fresh registries.

    `extra_plugins` are (name, module-or-object) pairs registered after the entry points;
    tests use it to load a plugin without installing a package.
    """
    registries = Registries()
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(CoopHookSpecs)
    blocked = _split_env("COOP_BLOCK_PLUGINS")
    autoload = os.environ.get("COOP_DISABLE_PLUGIN_AUTOLOAD", "").strip() in ("", "0", "false", "no")
    explicitly_enabled = _split_env("COOP_PLUGINS")
    if entry_points:
        for ep in _entry_points():
            dist = _dist_name(ep)
            builtin = dist == BUILTIN_DISTRIBUTION
            info = PluginInfo(
                name=ep.name, module=ep.value, distribution=dist, version=_dist_version(ep),
                status="pending", builtin=builtin,
            )
            registries.plugins.append(info)
            if ep.name in blocked:
                info.status = "blocked"
                continue
            if not (builtin or autoload or ep.name in explicitly_enabled):
                info.status = "disabled"
                continue
            if pm.has_plugin(ep.name):
                info.status, info.error = "failed", f"another plugin is already named '{ep.name}'"
                continue
            try:
                module = ep.load()
            except BaseException as exc:  # noqa: BLE001 - even SystemExit must not kill discovery
                if isinstance(exc, KeyboardInterrupt):
                    raise
                info.status = "failed"
                last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
                where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
                info.error = f"import of {ep.value} failed: {type(exc).__name__}: {exc}{where}"
                continue
            register_plugin(registries, pm, ep.name, module, info)
    for name, module in extra_plugins:
        info = PluginInfo(
            name=name, module=getattr(module, "__name__", repr(module)), distribution="(in-process)",
            version="", status="pending", builtin=False,
        )
        registries.plugins.append(info)
        register_plugin(registries, pm, name, module, info)
    return registries


_DEFAULT: Optional[Registries] = None


def get_registries() -> Registries:
    """The process-wide registries, loaded on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_registries()
    return _DEFAULT


def reset_registries() -> None:
    """Forget the cached registries (tests that change the environment use this)."""
    global _DEFAULT
    _DEFAULT = None


__all__ = ["PluginInfo", "Registries", "get_registries", "load_registries", "reset_registries"]
