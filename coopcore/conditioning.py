"""Class conditioning: the convention every conditional model, objective and dataset follows.

- A model (generator, energy model / discriminator) is *conditional* when it has an attribute
  ``n_classes: int > 0``; ``0`` or no such attribute means unconditional.
- Labels are int64 class indices of shape ``[B]`` in ``0 .. n_classes - 1`` (not one-hot).
- A conditional generator is called as ``forward(z, y)``, a conditional energy model as
  ``score(x, y)`` / ``energy(x, y)``.  Called without ``y`` it raises ``ValueError``; an
  unconditional model given a non-None ``y`` raises ``ValueError`` too, so that a label silently
  ignored can never pass for a conditional run (`require_labels` does both checks).
- A dataset yields labels through ``get_labels(index) -> int64 [len(index)]``; it may declare
  ``n_classes``.  The trainer reads them into `Batch.y` whenever the run has a conditional model.
- Objectives draw the labels of generated examples with `draw_labels` ("uniform" over the
  classes by default; "real" reuses the real batch's labels, i.e. the training set's label
  frequencies, which is what StyleGAN2-ADA's draw from the training set's label list amounts
  to), and sample grids use `balanced_labels` (label i % n_classes for example i).
"""
from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping, Optional

import torch
from torch import Tensor, nn

from .errors import UsageError

FakeLabels = Literal["uniform", "real"]
FAKE_LABEL_MODES: tuple[str, ...] = ("uniform", "real")


def n_classes(module: Any) -> int:
    """The number of classes `module` is conditioned on (0: unconditional)."""
    value = getattr(module, "n_classes", 0)
    return int(value) if value else 0


def is_conditional(module: Any) -> bool:
    """Whether `module` takes class labels (``n_classes > 0``)."""
    return n_classes(module) > 0


def run_classes(models: Iterable[Any]) -> int:
    """The number of classes of a run's conditional models (0 when none is conditional).

    Raises UsageError when two conditional models disagree, since one label cannot then be
    valid for both."""
    seen = {n_classes(m) for m in models if is_conditional(m)}
    if len(seen) > 1:
        raise UsageError(f"the run's conditional models are conditioned on different numbers of classes "
                         f"({', '.join(str(k) for k in sorted(seen))}); give every model the same n_classes")
    return seen.pop() if seen else 0


def require_labels(module: nn.Module, y: Optional[Tensor], batch: Optional[int] = None) -> Optional[Tensor]:
    """Check the labels handed to `module`: required (int64 [B]) for a conditional model,
    refused for an unconditional one.  Returns them (None for an unconditional model).

    No check reads tensor values (that would be a host sync in the sampler's hot loop); an
    out-of-range label fails in the model's embedding lookup instead."""
    k = n_classes(module)
    name = type(module).__name__
    if k == 0:
        if y is not None:
            raise ValueError(f"{name} is unconditional (n_classes = 0) but was given labels y; "
                             "build it with n_classes > 0 to condition on classes, or pass y=None")
        return None
    if y is None:
        raise ValueError(f"{name} is conditional on {k} classes: pass the labels y (int64 class indices of "
                         "shape [B]) as the second argument")
    if y.dim() != 1 or y.dtype != torch.long:
        raise ValueError(f"{name}: labels y must be an int64 tensor of shape [B], got {y.dtype} of shape "
                         f"{tuple(y.shape)}")
    if batch is not None and y.shape[0] != batch:
        raise ValueError(f"{name}: {y.shape[0]} labels for a batch of {batch}")
    return y


def draw_labels(n: int, classes: int, generator: torch.Generator, device: torch.device,
                mode: FakeLabels = "uniform", real: Optional[Tensor] = None) -> Tensor:
    """Labels for `n` generated examples: uniform over ``0 .. classes - 1`` from `generator`
    ("uniform"), or the real batch's labels `real` ("real"; no random numbers drawn)."""
    if mode == "real":
        if real is None:
            raise ValueError("fake_labels = 'real' needs the real batch's labels")
        if real.shape[0] != n:
            raise ValueError(f"fake_labels = 'real': {real.shape[0]} real labels for {n} generated examples")
        return real
    if mode != "uniform":
        raise ValueError(f"unknown fake-label mode {mode!r}; expected one of {FAKE_LABEL_MODES}")
    return torch.randint(classes, (n,), generator=generator, device=device)


def balanced_labels(n: int, classes: int, device: torch.device) -> Tensor:
    """Label ``i % classes`` for example i: every class equally often in a grid of samples."""
    return torch.arange(n, device=device) % classes


def sample_labels(n: int, classes: int, device: torch.device, labels: Optional[Tensor] = None,
                  who: str = "the model") -> Optional[Tensor]:
    """The labels of `n` samples: `labels` (any integer sequence, read as int64 [n]) when given,
    else `balanced_labels`; None when `classes` is 0, where given labels are refused (`who`
    names what is unconditional in the message)."""
    if not classes:
        if labels is not None:
            raise ValueError(f"labels were given, but {who} is unconditional (n_classes = 0)")
        return None
    if labels is None:
        return balanced_labels(n, classes, device)
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} samples")
    return labels


def samples_take_labels(objective: Any) -> bool:
    """Whether `objective.samples` accepts a ``labels`` keyword (sampling given classes)."""
    import inspect

    return "labels" in inspect.signature(objective.samples).parameters


def dataset_labels_problem(dataset: Any) -> Optional[str]:
    """Why `dataset` cannot give labels (None when it can): no ``get_labels``, or one that
    fails on the first example."""
    getter = getattr(dataset, "get_labels", None)
    if not callable(getter):
        return "it has no get_labels(index)"
    if len(dataset) == 0:
        return None
    try:
        first = getter(torch.zeros(1, dtype=torch.long))
    except Exception as exc:  # noqa: BLE001 - any failure means "no labels here"
        return f"its get_labels fails ({exc})"
    if not isinstance(first, Tensor) or first.dim() != 1 or first.shape[0] != 1:
        return f"its get_labels(index) returned {type(first).__name__} instead of a tensor of shape [len(index)]"
    if first.dtype.is_floating_point or first.dtype == torch.bool:
        return f"its get_labels(index) returned {first.dtype} values instead of integer class indices"
    return None


def check_dataset_labels(dataset: Any, models: Mapping[str, Any], model_names: Optional[Mapping[str, str]] = None,
                         full_check: bool = True) -> int:
    """Refuse a run whose conditional models cannot get labels from `dataset` (UsageError naming
    the dataset and the models); returns the run's number of classes (0: unconditional run).

    With `full_check` the labels of every example are read once and must lie in
    ``0 .. n_classes - 1`` (cheap for in-memory datasets); a declared ``dataset.n_classes``
    larger than the models' is refused in any case."""
    conditional = {role: m for role, m in models.items() if is_conditional(m)}
    if not conditional:
        return 0
    k = run_classes(conditional.values())
    names = model_names or {}
    who = ", ".join(f"'{names.get(role, type(m).__name__)}' ({role}, n_classes = {n_classes(m)})"
                    for role, m in conditional.items())
    ds_name = getattr(dataset, "name", type(dataset).__name__)
    problem = dataset_labels_problem(dataset)
    if problem is not None:
        raise UsageError(f"the conditional model {who} needs class labels, but dataset '{ds_name}' has none: "
                         f"{problem}. Use a labelled dataset (cifar10, cifar100, imagenet32/64, mnist, digits) "
                         "or set the model's n_classes = 0")
    declared = n_classes(dataset)
    if declared > k:
        raise UsageError(f"dataset '{ds_name}' has {declared} classes but the conditional model {who} is "
                         f"conditioned on {k}; set the model's n_classes = {declared}")
    if full_check and len(dataset):
        labels = dataset.get_labels(torch.arange(len(dataset)))
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= k:
            raise UsageError(f"dataset '{ds_name}' has labels {lo}..{hi}, outside 0..{k - 1} of the conditional "
                             f"model {who}; set the model's n_classes to at least {hi + 1}")
    return k


__all__ = [
    "FAKE_LABEL_MODES", "FakeLabels", "balanced_labels", "check_dataset_labels", "dataset_labels_problem",
    "draw_labels", "is_conditional", "n_classes", "require_labels", "run_classes", "sample_labels",
    "samples_take_labels",
]
