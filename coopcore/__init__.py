"""coopcore: the small, stable core of coopnets.

Public API for plugin authors: the protocols (`EnergyModel`, `Generator`, `Encoder`,
`Sampler`, `Objective`), the base classes, `hookimpl`, the value types exchanged with the
trainer, the dataset/metric/table protocols and the config validators.
"""
from __future__ import annotations

__version__ = "0.1.0"

# First, before any module below runs a torch kernel: COOP_PORTABLE_NUMERICS (coopcore.numerics).
from .numerics import apply_portable_numerics as _apply_portable_numerics

_apply_portable_numerics()

from .chains import draw_from_chains
from .config import OptionError, all_positive, in_range, non_negative, optional_positive, positive, preset_options
from .data import BatchSchedule, ImageDataset, TensorImageDataset, minmax_to_unit_range, value_range
from .errors import CheckpointError, ConfigError, CoopError, RegistryError, RunFailure, UsageError
from .hookspecs import hookimpl
from .langevin import langevin_dynamics, log_density_and_grad
from .layers import conv_padding, init_normal, same_padding, transposed_conv_padding, transposed_conv_stride
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
from .updates import contrastive_update, grad_norm

__all__ = [
    "__version__",
    "Batch", "BatchSchedule", "CheckpointError", "ConfigError", "CoopError", "Encoder", "EnergyModel",
    "EnergyModelBase", "EvalContext", "Generator", "GeneratorBase", "ImageDataset", "LogDensity", "Metric",
    "MetricResult", "NoOptions", "Objective", "OptionError", "Parts", "RegistryError", "RunFailure", "Sampler", "SamplerOutput",
    "StepResult", "TensorImageDataset", "UsageError", "all_positive", "value_range", "draw_from_chains", "draw_samples", "generator_log_joint",
    "hookimpl", "in_range", "minmax_to_unit_range", "non_negative", "optional_positive", "positive", "preset_options",
    # Shared numerical kernels (coopcore.langevin, coopcore.updates, coopcore.layers).
    "contrastive_update", "conv_padding", "grad_norm", "init_normal", "langevin_dynamics", "log_density_and_grad",
    "same_padding", "transposed_conv_padding", "transposed_conv_stride",
]
