"""The metric protocol and the record every metric returns.

A metric plugin registers a factory ``(options) -> Metric``; `Metric.compute(context)` gets
the trained run (objective, models, registries, data root, a seeded generator) and returns a
`MetricResult` that always states its sample count and backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import torch

from .protocols import Objective


@dataclass
class MetricResult:
    """One evaluated number with its provenance."""

    name: str
    value: float
    n_samples: int
    backend: str
    std_error: Optional[float] = None
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "std_error": self.std_error,
            "n_samples": self.n_samples,
            "backend": self.backend,
            "higher_is_better": self.higher_is_better,
            "details": self.details,
        }

    def __str__(self) -> str:
        err = f" ± {self.std_error:.4g}" if self.std_error is not None else ""
        return f"{self.name} = {self.value:.6g}{err} (n={self.n_samples}, {self.backend})"


@dataclass
class EvalContext:
    """What a metric may use: the trained objective, the registries (to build reference
    datasets), where data lives, the device, a seeded generator and a progress callback."""

    objective: Objective
    models: dict[str, torch.nn.Module]
    registries: Any
    data_root: Optional[Path]
    device: torch.device
    generator: torch.Generator
    train_dataset: Any = None
    progress: Callable[[str], None] = lambda message: None

    def build_dataset(self, name: str, options: dict[str, Any], path: str = "dataset") -> Any:
        """A registered dataset (e.g. a metric's test or reference set), validated like a recipe's
        ``[data]``; `path` names the option in error messages."""
        from .build import build_dataset

        return build_dataset(self.registries, name, options, self.data_root, path)


@runtime_checkable
class Metric(Protocol):
    name: str

    def compute(self, context: EvalContext) -> MetricResult: ...


def draw_samples(objective: Objective, source: str, n: int, generator: torch.Generator, batch: int = 500) -> torch.Tensor:
    """Draw `n` samples of kind `source` ("generator", "revised", ...) from an objective,
    in batches, on the CPU."""
    from .errors import UsageError

    out = []
    remaining = n
    while remaining > 0:
        k = min(batch, remaining)
        named = objective.samples(k, generator)
        if source not in named:
            raise UsageError(
                f"samples '{source}' are not produced by this objective; it offers: {', '.join(named)}"
            )
        out.append(named[source].detach().cpu())
        remaining -= k
    return torch.cat(out)[:n]
