"""One resolution: a recipe plus overrides -> a typed, validated `ResolvedExperiment`.

Every way of starting or reopening an experiment goes through `resolve` (a recipe file, a
packaged recipe name or an existing run directory) or `resolve_data` (plain data, e.g. a
test's recipe): `coop train`, `coop repro`, `coop sample`, `coop eval`, `coopcore.contract`.
Each component is looked up in its registry once and its options table is validated into the
plugin's options object once; both are kept (`Component.entry`, `Component.options`) and
used to build the live objects.  `ResolvedExperiment.to_data()` is what ``config.json``
holds, and reading ``config.json`` back through `resolve` gives the same experiment.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from .config import (
    DataConfig,
    ExperimentConfig,
    OptimizerConfig,
    RunConfig,
    apply_overrides,
    config_hash,
    read_recipe_data,
    recipe_path,
    structure,
    unstructure,
)
from .errors import ConfigError, RegistryError
from .families import MODEL_FAMILIES
from .registry import Entry, Registry

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Component:
    """A registered component chosen by a recipe, with its validated options object.

    Attributes:
        key: where the recipe names it, e.g. ``models.descriptor`` or ``eval[0]``.
        family: the registry family (``energy``, ``sampler``, ``dataset``, ...).
        entry: the registry entry (factory, options class, owning plugin).
        options: an instance of ``entry.options`` with every default filled in.
        registry: the registry the entry came from (validates what the factory builds).
    """

    key: str
    family: str
    entry: Entry
    options: Any
    registry: Registry = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.entry.name

    def create(self, **kwargs: Any) -> Any:
        """Build the component from its options (plus the family's keyword arguments)."""
        return self.registry.instantiate(self.entry, self.options, **kwargs)

    def to_data(self) -> dict[str, Any]:
        return {"name": self.entry.name, "options": unstructure(self.options)}


@dataclass(frozen=True)
class ResolvedExperiment:
    """A whole recipe, resolved against the registries.

    Attributes:
        config: the recipe as validated (run, data batching, optimisers; options tables as written).
        data: the dataset component.
        models: model components by role (``descriptor``, ``generator``, ...).
        samplers: sampler components by role.
        objective: the objective component.
        metrics: (label, component) per ``[[eval]]`` entry.
        source: where the recipe came from (a file, a run directory or a description).
    """

    config: ExperimentConfig
    data: Component
    models: dict[str, Component]
    samplers: dict[str, Component]
    objective: Component
    metrics: tuple[tuple[str, Component], ...]
    source: str

    @property
    def run(self) -> RunConfig:
        return self.config.run

    @property
    def batching(self) -> DataConfig:
        return self.config.data

    @property
    def optimizers(self) -> dict[str, OptimizerConfig]:
        return self.config.optimizers

    def to_data(self) -> dict[str, Any]:
        """The resolved recipe as plain data, every default filled in (``config.json``)."""
        data = unstructure(self.config)
        data["data"]["options"] = unstructure(self.data.options)
        data["models"] = {role: c.to_data() for role, c in self.models.items()}
        data["samplers"] = {role: c.to_data() for role, c in self.samplers.items()}
        data["objective"] = self.objective.to_data()
        data["eval"] = [{"name": c.name, "label": spec.label, "options": unstructure(c.options)}
                        for (_, c), spec in zip(self.metrics, self.config.eval)]
        return data

    def hash(self) -> str:
        """A short stable hash of the resolved recipe (provenance, results tables)."""
        return config_hash(self.to_data())


def default_registries(registries: Any) -> Any:
    """`registries`, or the process-wide ones the CLI uses when None."""
    if registries is not None:
        return registries
    from .plugin_manager import get_registries

    return get_registries()


def _lookup(registry: Registry, name: str, key: str) -> Entry:
    try:
        return registry.get(name)
    except RegistryError as exc:
        raise ConfigError(f"{key}.name", str(exc)) from None


def _component(registry: Registry, family: str, entry: Entry, options: Mapping[str, Any], key: str,
               source: Optional[str]) -> Component:
    opts = structure(entry.options, options, f"{key}.options", source)
    return Component(key=key, family=family, entry=entry, options=opts, registry=registry)


def model_component(registries: Any, name: str, options: Mapping[str, Any], key: str,
                    source: Optional[str] = None) -> Component:
    """A model (energy model, generator or encoder) by name; its family is found by the name."""
    found = [fam for fam in MODEL_FAMILIES if name in registries.family(fam)]
    if not found:
        known = sorted(n for fam in MODEL_FAMILIES for n in registries.family(fam))
        raise ConfigError(
            f"{key}.name",
            f"unknown model '{name}'. Registered models: {', '.join(known) or '(none)'}. "
            "Run `coop plugins` to see which plugins provide them.", source,
        )
    registry = registries.family(found[0])
    return _component(registry, found[0], registry.get(name), options, key, source)


def named_component(registries: Any, family: str, name: str, options: Mapping[str, Any], key: str,
                    source: Optional[str] = None) -> Component:
    """A component of one family (sampler, objective, dataset, metric) by name."""
    registry = registries.family(family)
    return _component(registry, family, _lookup(registry, name, key), options, key, source)


def _check_roles(cfg: ExperimentConfig, objective: Component) -> None:
    for role in cfg.optimizers:
        if role not in cfg.models:
            raise ConfigError(
                f"optimizers.{role}", f"no model with role '{role}' under [models] (roles: {', '.join(cfg.models)})"
            )
    factory = objective.entry.factory
    name = objective.name
    for role in getattr(factory, "required_models", ()):
        if role not in cfg.models:
            raise ConfigError("models", f"objective '{name}' needs a model with role '{role}' ([models.{role}])")
        if role not in cfg.optimizers:
            raise ConfigError("optimizers", f"objective '{name}' trains '{role}' and needs [optimizers.{role}]")
    for role in getattr(factory, "required_samplers", ()):
        if role not in cfg.samplers:
            raise ConfigError("samplers", f"objective '{name}' needs a sampler with role '{role}' ([samplers.{role}])")


def resolve_data(data: Mapping[str, Any], source: str = "<recipe>", registries: Any = None) -> ResolvedExperiment:
    """Resolve plain recipe data (as read from TOML or ``config.json``)."""
    registries = default_registries(registries)
    cfg = structure(ExperimentConfig, data, "", source)
    models = {role: model_component(registries, c.name, c.options, f"models.{role}", source)
              for role, c in cfg.models.items()}
    samplers = {role: named_component(registries, "sampler", c.name, c.options, f"samplers.{role}", source)
                for role, c in cfg.samplers.items()}
    objective = named_component(registries, "objective", cfg.objective.name, cfg.objective.options, "objective", source)
    dataset = named_component(registries, "dataset", cfg.data.name, cfg.data.options, "data", source)
    metrics = tuple(
        (m.label or m.name, named_component(registries, "metric", m.name, m.options, f"eval[{i}]", source))
        for i, m in enumerate(cfg.eval)
    )
    _check_roles(cfg, objective)
    return ResolvedExperiment(config=cfg, data=dataset, models=models, samplers=samplers, objective=objective,
                              metrics=metrics, source=source)


def recipe_overrides(overrides: Sequence[str] = (), seed: Optional[int] = None,
                     device: Optional[str] = None) -> list[str]:
    """``--set`` overrides plus the ``--seed``/``--device`` shorthands, as recorded in config.json."""
    sets = list(overrides)
    if seed is not None:
        sets.append(f"run.seed={seed}")
    if device is not None:
        sets.append(f"run.device={json.dumps(device)}")
    return sets


def recipe_source(recipe: str | Path) -> Path:
    """The file behind a recipe argument: a run directory's config.json, a TOML path or a packaged name."""
    path = Path(recipe)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        return path / CONFIG_FILE
    return recipe_path(recipe)


def resolve(recipe: str | Path, overrides: Sequence[str] = (), *, seed: Optional[int] = None,
            device: Optional[str] = None, registries: Any = None) -> ResolvedExperiment:
    """Resolve a recipe file, packaged recipe name or run directory plus ``--set`` overrides."""
    path = recipe_source(recipe)
    data = apply_overrides(read_recipe_data(path), recipe_overrides(overrides, seed, device))
    return resolve_data(data, str(path), registries)
