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
    """One evaluated number with its provenance: returned by `Metric.compute`.

    `coop eval` prints it (``str(result)``) and appends ``as_dict()`` to the run's
    ``evaluations.jsonl`` next to the metric's label; the trainer does the same for the
    recipe's ``[[eval]]`` metrics, and `coop repro` tables read `value` and `std_error` from
    there.  `name`, `value`, `n_samples` and `backend` are required: a metric that cannot say
    how many samples it used and how it computed the number is not reproducible.

    Attributes:
        name: what was measured, shown first when printed, e.g. ``"parzen[10000]"`` or
            ``"fid"``; usually the metric's registered name, with its key setting in brackets.
            (The label it is stored under is the recipe's ``label``, or the name given to
            ``coop eval --metric``.)
        value: the number itself (a Python float).
        n_samples: how many samples (generated or test examples) it was computed from.
        backend: how it was computed, in words: the implementation, feature network, weights
            or precision (e.g. ``"torch-fidelity, TF-Inception pool3"``).
        std_error: the standard error of `value` where the metric can estimate one, else None.
        higher_is_better: the direction of improvement (False for FID, MSE, ...); recorded
            with the value for readers of ``evaluations.jsonl``.
        details: any further JSON-able information (per-class values, the reference set,
            notes); stored as is.
    """

    name: str
    value: float
    n_samples: int
    backend: str
    std_error: Optional[float] = None
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON record written to ``evaluations.jsonl``."""
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
    """What a metric may use: built by `coop eval` (from the run's last checkpoint) or by
    the trainer (every ``run.eval_every`` iterations and at the end), passed to
    `Metric.compute`.

    Attributes:
        objective: the trained `Objective`; draw samples with `draw_samples` or its
            ``samples(n, generator)``.
        models: the trained networks by role name (``models["descriptor"]``, ...), on
            `device`, as in `Parts.models`.
        registries: the loaded component registries (`coopcore.plugin_manager.Registries`);
            prefer `build_dataset` to build a reference or test dataset from them.
        data_root: the datasets' root folder (``--data-root``, the recipe's ``data.root`` or
            ``$COOP_DATA``), or None when none was given.
        device: the device the models are on.
        generator: a seeded `torch.Generator` on `device`, separate from the training stream;
            draw every random number from it so an evaluation is reproducible.
        train_dataset: the run's training dataset (an `ImageDataset`, as the recipe's
            ``[data]`` builds it), e.g. for metrics compared against the training data; None
            when the caller has none.
        progress: a callback taking a one-line message, for long evaluations (printed by
            `coop eval`, prefixed with the label during training).
    """

    objective: Objective
    models: dict[str, torch.nn.Module]
    registries: Any
    data_root: Optional[Path]
    device: torch.device
    generator: torch.Generator
    train_dataset: Any = None
    progress: Callable[[str], None] = lambda message: None

    def build_dataset(self, name: str, options: dict[str, Any], path: str = "dataset") -> Any:
        """A registered dataset (e.g. a metric's test or reference set), validated like a recipe's ``[data]``.

        Args:
            name: a registered dataset name (``"mnist"``, ``"digits"``, ...).
            options: its options table, as plain data; validated against the dataset's options class.
            path: the key path named in error messages (e.g. ``"eval.parzen.options.test"``).

        Returns:
            The `ImageDataset`, built with `data_root`.
        """
        from .build import build_dataset

        return build_dataset(self.registries, name, options, self.data_root, path)


@runtime_checkable
class Metric(Protocol):
    """An evaluation: built by the metric's factory ``factory(options)``.

    Attributes:
        name: the metric's name (usually its registered name).
    """

    name: str

    def compute(self, context: EvalContext) -> MetricResult: ...


def draw_samples(objective: Objective, source: str, n: int, generator: torch.Generator, batch: int = 500) -> torch.Tensor:
    """Draw `n` samples of kind `source` from an objective, in batches, on the CPU.

    Args:
        objective: the trained objective (`EvalContext.objective`).
        source: one of the names its ``samples`` returns (``"generator"``, ``"revised"``, ...).
        n: how many samples.
        generator: the random generator (`EvalContext.generator`).
        batch: how many to ask the objective for at a time.

    Returns:
        A ``[n, ...]`` CPU tensor.

    Raises:
        UsageError: the objective does not produce samples named `source`.
    """
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
