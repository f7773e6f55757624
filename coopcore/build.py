"""From a resolved experiment to live objects: dataset, networks, samplers, optimisers, objective.

`coopcore.experiment.resolve` validates a recipe against the registries; `build_experiment`
constructs everything on a device from the components it resolved (their registry entries and
options objects), after checking that the dataset's example shape fits every model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from . import accel
from .config import ExperimentConfig, OptimizerConfig
from .data import DeviceTensorDataset, ImageDataset, dataset_nbytes, in_memory, resolve_data_root
from .errors import ConfigError, CoopError, UsageError
from .experiment import ResolvedExperiment, default_registries, named_component
from .metrics import EvalContext, Metric, MetricResult
from .protocols import Objective, Parts


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device '{name}' was requested but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device '{name}' was requested but MPS is not available here; use --device cpu")
    return dev


def make_optimizer(params: Any, cfg: OptimizerConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimiser; `fused` (``run.fused_adam``) selects the fused Adam/AdamW kernel.

    Every optimiser here updates the parameters in place, so a captured sampler graph reads
    the new weights at its next replay."""
    # Without the flag torch picks its kernel as before (the default: bit-identical numbers).
    extra = {"fused": True} if fused else {}
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                **extra)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                 **extra)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(params, lr=cfg.lr, eps=cfg.eps, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass
class Experiment:
    """Everything a run needs, built on one device."""

    resolved: ResolvedExperiment
    dataset: ImageDataset
    parts: Parts
    objective: Objective
    metrics: list[tuple[str, Metric]]
    device: torch.device
    data_root: Optional[Path]
    registries: Any

    @property
    def config(self) -> ExperimentConfig:
        return self.resolved.config

    def evaluate(self, label: str, metric: Metric, generator: torch.Generator,
                 progress: Callable[[str], None] = lambda message: None) -> MetricResult:
        """Compute one metric on this experiment; a plugin's exception becomes a `MetricFailure`."""
        # Metrics get the dataset as its plugin made it (host tensors), not the device-held copy.
        train = getattr(self.dataset, "source", self.dataset)
        ctx = EvalContext(
            objective=self.objective, models=self.parts.models, registries=self.registries, data_root=self.data_root,
            device=self.device, generator=generator, train_dataset=train, progress=progress,
        )
        try:
            result = metric.compute(ctx)
        except CoopError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's bug: say which metric, keep the traceback
            raise MetricFailure(label, exc) from exc
        if not isinstance(result, MetricResult):
            raise MetricFailure(label, TypeError(f"compute() returned {type(result).__name__}, not a MetricResult"))
        return result


class MetricFailure(Exception):
    """A metric's `compute` raised or returned something other than a `MetricResult`.

    Not a `CoopError`: like any other plugin bug it is turned into a `RunFailure` by the caller
    (`coopcore.run.train`, `coop eval`), which knows the run directory and checkpoint."""

    def __init__(self, label: str, cause: BaseException) -> None:
        self.label, self.cause = label, cause
        super().__init__(f"metric '{label}' failed: {type(cause).__name__}: {cause}")


def build_dataset(registries: Any, name: str, options: Mapping[str, Any], root: Optional[Path],
                  path: str = "data") -> ImageDataset:
    """A dataset by name and plain options (a metric's reference set, a test's data)."""
    return named_component(registries, "dataset", name, options, path).create(root=root)


def build_metric(registries: Any, name: str, options: Mapping[str, Any], path: str = "eval") -> Metric:
    """A metric by name and plain options (``coop eval --metric NAME --set ...``)."""
    return named_component(registries, "metric", name, options, path).create()


def _shape(value: Any) -> Optional[tuple[int, ...]]:
    return None if value is None else tuple(int(v) for v in value)


def expected_model_shapes(resolved: ResolvedExperiment, data_shape: tuple[int, ...],
                          models: Mapping[str, nn.Module]) -> dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """What each model must fit: role -> (attribute, the model's shape, the shape it must equal).

    By default energy models and encoders take data-shaped inputs and generators produce
    data-shaped outputs.  An objective whose models see other shapes (multigrid's per-grid
    descriptors, a latent-space EBM) declares ``model_shapes(options, data_shape) -> {role:
    shape or None}`` on its factory; None skips that role.
    """
    declared = getattr(resolved.objective.entry.factory, "model_shapes", None)
    overrides = dict(declared(resolved.objective.options, data_shape)) if declared is not None else {}
    out = {}
    for role, model in models.items():
        attr = "output_shape" if resolved.models[role].family == "generator" else "input_shape"
        have = _shape(getattr(model, attr, None))
        want = _shape(overrides[role]) if role in overrides else data_shape
        if have is not None and want is not None:
            out[role] = (attr, have, want)
    return out


def check_shapes(resolved: ResolvedExperiment, dataset: ImageDataset, models: Mapping[str, nn.Module]) -> None:
    """Refuse (exit 2) a dataset whose examples do not fit a model, naming both recipe keys."""
    data_shape = _shape(dataset.shape)
    for role, (attr, have, want) in expected_model_shapes(resolved, data_shape, models).items():
        if have != want:
            comp = resolved.models[role]
            raise ConfigError(
                comp.key,
                f"model '{comp.name}' has {attr} {list(have)}, but {list(want)} is needed: "
                f"'data' (dataset '{resolved.data.name}') yields examples of shape {list(data_shape)}. "
                f"Change the options of '{comp.key}' or of 'data' so they agree.",
            )


def place_dataset(dataset: Any, device: torch.device, requested: str, allowed: bool) -> Any:
    """The training set held on `device` (`DeviceTensorDataset`) when ``run.data_on_device``
    resolved to on and the dataset is in memory; otherwise the dataset as it is, with a notice
    when "on" was asked for and cannot be honoured.  A stand-in without examples (a checkpoint's
    `DatasetInfo`) is left alone."""
    if not allowed or not hasattr(dataset, "get_batch"):
        return dataset
    if not in_memory(dataset):
        if requested == "on":
            accel.notice(f"dataset '{dataset.name}' is decoded batch by batch; it stays on the host")
        return dataset
    size = dataset_nbytes(dataset)
    if requested == "auto" and size > accel.DEVICE_DATA_LIMIT_BYTES:
        return dataset
    return DeviceTensorDataset(dataset, device)


def build_experiment(resolved: ResolvedExperiment, device: torch.device, data_root: Optional[str] = None,
                     dataset: Any = None, registries: Any = None) -> Experiment:
    """Build from a resolved experiment.  Seed the global RNG before calling for a reproducible init.

    `dataset` replaces the recipe's dataset (sampling from a checkpoint needs only its size and shape).
    The speed options of ``[run]`` are resolved for `device` and installed (`coopcore.accel`).
    """
    registries = default_registries(registries)
    cfg = resolved.config
    settings = accel.settings_for_run(cfg.run, device)
    accel.configure(settings)
    accel.sampler_graphs().clear()  # graphs of a previous experiment's models: free their memory
    root = resolve_data_root(cfg.data.root, data_root)
    if dataset is None:
        dataset = resolved.data.create(root=root)
    models: dict[str, nn.Module] = {role: comp.create().to(device) for role, comp in resolved.models.items()}
    check_shapes(resolved, dataset, models)
    accel.prepare_models(models, settings)  # before the optimisers: it may replace parameter storage
    built = dataset  # the factory's object, with its own attributes (Parts.dataset)
    dataset = place_dataset(dataset, device, cfg.run.data_on_device, settings.data_on_device)
    samplers = {role: comp.create() for role, comp in resolved.samplers.items()}
    optimizers = {role: make_optimizer(models[role].parameters(), oc, fused=settings.fused_adam)
                  for role, oc in cfg.optimizers.items()}
    parts = Parts(
        models=models, samplers=samplers, optimizers=optimizers, n_train=len(dataset), device=device,
        data_shape=tuple(dataset.shape), examples=lambda idx: dataset.get_batch(idx).to(device),
        dataset=built,
    )
    objective = resolved.objective.create(parts=parts)
    accel.wrap_objective_step(objective, settings, device)
    metrics = [(label, comp.create()) for label, comp in resolved.metrics]
    return Experiment(
        resolved=resolved, dataset=dataset, parts=parts, objective=objective, metrics=metrics, device=device,
        data_root=root, registries=registries,
    )
