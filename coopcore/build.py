"""From a validated recipe to live objects: dataset, networks, samplers, optimisers, objective.

`resolve_experiment` validates every component name and options table against the
registries and returns the config with all defaults filled in (what is written to
config.json); `build_experiment` then constructs everything on a device.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
from torch import nn

from .config import ComponentConfig, ExperimentConfig, OptimizerConfig, structure, unstructure
from .data import ImageDataset, resolve_data_root
from .errors import ConfigError, RegistryError, UsageError
from .metrics import Metric
from .protocols import Objective, Parts
from .registry import Entry

MODEL_FAMILIES = ("energy", "generator", "encoder")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' was requested but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device '{name}' was requested but MPS is not available here; use --device cpu")
    return dev


def model_entry(registries: Any, name: str, path: str) -> tuple[str, Entry]:
    found = [(fam, registries.family(fam).get(name)) for fam in MODEL_FAMILIES if name in registries.family(fam)]
    if not found:
        known = sorted(n for fam in MODEL_FAMILIES for n in registries.family(fam))
        raise ConfigError(
            path,
            f"unknown model '{name}'. Registered models: {', '.join(known) or '(none)'}. "
            "Run `coop plugins` to see which plugins provide them.",
        )
    if len(found) > 1:
        raise ConfigError(path, f"model name '{name}' is registered in several families: {[f for f, _ in found]}")
    return found[0]


def _resolve_component(entry: Entry, comp: ComponentConfig, path: str) -> ComponentConfig:
    opts = structure(entry.options, comp.options, f"{path}.options")
    return ComponentConfig(name=comp.name, options=unstructure(opts))


def _lookup(registry: Any, name: str, path: str) -> Entry:
    try:
        return registry.get(name)
    except RegistryError as exc:
        raise ConfigError(path, str(exc)) from None


def resolve_experiment(cfg: ExperimentConfig, registries: Any) -> ExperimentConfig:
    """Validate names and options against the registries; fill every default."""
    models = {}
    for role, comp in cfg.models.items():
        _, entry = model_entry(registries, comp.name, f"models.{role}.name")
        models[role] = _resolve_component(entry, comp, f"models.{role}")
    samplers = {
        role: _resolve_component(_lookup(registries.sampler, comp.name, f"samplers.{role}.name"), comp, f"samplers.{role}")
        for role, comp in cfg.samplers.items()
    }
    obj_entry = _lookup(registries.objective, cfg.objective.name, "objective.name")
    objective = _resolve_component(obj_entry, cfg.objective, "objective")
    data_entry = _lookup(registries.dataset, cfg.data.name, "data.name")
    data = attrs.evolve(cfg.data, options=unstructure(structure(data_entry.options, cfg.data.options, "data.options")))
    evals = []
    for i, m in enumerate(cfg.eval):
        entry = _lookup(registries.metric, m.name, f"eval[{i}].name")
        evals.append(attrs.evolve(m, options=unstructure(structure(entry.options, m.options, f"eval[{i}].options"))))
    for role in cfg.optimizers:
        if role not in cfg.models:
            raise ConfigError(
                f"optimizers.{role}", f"no model with role '{role}' under [models] (roles: {', '.join(cfg.models)})"
            )
    factory = obj_entry.factory
    for role in getattr(factory, "required_models", ()):
        if role not in cfg.models:
            raise ConfigError(
                "models", f"objective '{cfg.objective.name}' needs a model with role '{role}' ([models.{role}])"
            )
        if role not in cfg.optimizers:
            raise ConfigError(
                "optimizers", f"objective '{cfg.objective.name}' trains '{role}' and needs [optimizers.{role}]"
            )
    for role in getattr(factory, "required_samplers", ()):
        if role not in cfg.samplers:
            raise ConfigError(
                "samplers", f"objective '{cfg.objective.name}' needs a sampler with role '{role}' ([samplers.{role}])"
            )
    return attrs.evolve(cfg, models=models, samplers=samplers, objective=objective, data=data, eval=evals)


def make_optimizer(params: Any, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, eps=cfg.eps, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass
class Experiment:
    """Everything a run needs, built on one device."""

    config: ExperimentConfig
    dataset: ImageDataset
    parts: Parts
    objective: Objective
    metrics: list[tuple[str, Metric]]
    device: torch.device
    data_root: Optional[Path]
    registries: Any


def build_dataset(registries: Any, name: str, options: dict[str, Any], root: Optional[Path], path: str = "data") -> ImageDataset:
    entry = _lookup(registries.dataset, name, f"{path}.name")
    opts = structure(entry.options, options, f"{path}.options")
    return registries.dataset.create(name, opts, root=root)


def build_metric(registries: Any, name: str, options: dict[str, Any], path: str = "eval") -> Metric:
    entry = _lookup(registries.metric, name, f"{path}.name")
    return registries.metric.create(name, structure(entry.options, options, f"{path}.options"))


def build_experiment(
    cfg: ExperimentConfig, registries: Any, device: torch.device, data_root: Optional[str] = None,
    dataset: Any = None,
) -> Experiment:
    """Build from a resolved config.  Seed the global RNG before calling for a reproducible init.

    `dataset` replaces the recipe's dataset (sampling from a checkpoint needs only its size).
    """
    root = resolve_data_root(cfg.data.root, data_root)
    if dataset is None:
        dataset = build_dataset(registries, cfg.data.name, cfg.data.options, root)
    models: dict[str, nn.Module] = {}
    for role, comp in cfg.models.items():
        fam, entry = model_entry(registries, comp.name, f"models.{role}.name")
        opts = structure(entry.options, comp.options, f"models.{role}.options")
        models[role] = registries.family(fam).create(comp.name, opts).to(device)
    samplers = {}
    for role, comp in cfg.samplers.items():
        entry = registries.sampler.get(comp.name)
        samplers[role] = registries.sampler.create(comp.name, structure(entry.options, comp.options, f"samplers.{role}.options"))
    optimizers = {role: make_optimizer(models[role].parameters(), oc) for role, oc in cfg.optimizers.items()}
    parts = Parts(
        models=models, samplers=samplers, optimizers=optimizers, n_train=len(dataset), device=device,
        data_shape=tuple(dataset.shape),
    )
    entry = registries.objective.get(cfg.objective.name)
    objective = registries.objective.create(
        cfg.objective.name, structure(entry.options, cfg.objective.options, "objective.options"), parts=parts
    )
    metrics = [
        (m.label or m.name, build_metric(registries, m.name, m.options, f"eval[{i}]")) for i, m in enumerate(cfg.eval)
    ]
    return Experiment(
        config=cfg, dataset=dataset, parts=parts, objective=objective, metrics=metrics, device=device,
        data_root=root, registries=registries,
    )
