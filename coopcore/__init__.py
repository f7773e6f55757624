"""coopcore: the small, stable core of coopnets.

Public API for plugin authors: the protocols (`EnergyModel`, `Generator`, `Encoder`,
`Sampler`, `Objective`), the base classes, `hookimpl`, the value types exchanged with the
trainer, the dataset/metric/table protocols and the config validators.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .config import all_positive, in_range, non_negative, optional_positive, positive, preset_options
from .data import BatchSchedule, ImageDataset, TensorImageDataset, minmax_to_unit_range, value_range
from .errors import CheckpointError, ConfigError, CoopError, RegistryError, RunFailure, UsageError
from .hookspecs import hookimpl
from .metrics import EvalContext, Metric, MetricResult, draw_samples
from .protocols import (
    Batch,
    Encoder,
    EnergyModel,
    EnergyModelBase,
    Generator,
    GeneratorBase,
    LogDensity,
    Objective,
    Parts,
    Sampler,
    SamplerOutput,
    StepResult,
    generator_log_joint,
)
from .registry import NoOptions

__all__ = [
    "__version__",
    "Batch", "BatchSchedule", "CheckpointError", "ConfigError", "CoopError", "Encoder", "EnergyModel",
    "EnergyModelBase", "EvalContext", "Generator", "GeneratorBase", "ImageDataset", "LogDensity", "Metric",
    "MetricResult", "NoOptions", "Objective", "Parts", "RegistryError", "RunFailure", "Sampler", "SamplerOutput",
    "StepResult", "TensorImageDataset", "UsageError", "all_positive", "value_range", "draw_samples", "generator_log_joint",
    "hookimpl", "in_range", "minmax_to_unit_range", "non_negative", "optional_positive", "positive", "preset_options",
]
