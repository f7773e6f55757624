"""The five component protocols every plugin implements, and the small value types they exchange.

The protocols are `typing.Protocol`s so a third-party class need not inherit from anything;
`coopcore.contract` holds the behavioural checks that make the protocol a contract.  Base
classes (`EnergyModelBase`, `GeneratorBase`) are offered for convenience: they implement the
parts that follow from the paper's definitions (the energy from the score and the reference
distribution, latent sampling from N(0, I)).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

LogDensity = Callable[[Tensor], Tensor]
"""A differentiable log-density up to a constant: ``log_density(x) -> Tensor[B]``.

Maps a batch ``x`` of shape ``[B, ...]`` (the shape of the sampler's `init`) to one value per
example.  Built by an objective and passed to `Sampler.run`: ``lambda y: -descriptor.energy(y)``
for the Langevin revision of TPAMI eq. 7, `generator_log_joint` for the Langevin inference of
eq. 15.  A sampler calls it on a detached copy of its state that requires grad and
differentiates ``log_density(x).sum()`` with respect to that input only; it must not read or
write global random state.
"""


@runtime_checkable
class EnergyModel(Protocol):
    """A descriptor p(Y) = exp(f(Y)) p0(Y) / Z (TPAMI eq. 2).

    `score(x)` is f, the negative energy relative to the reference distribution, one value
    per example.  `reference_std` is s of the Gaussian reference p0 = N(0, s^2 I) (eq. 3), or
    None for the uniform/flat reference.  `energy(x)` is E(Y) = ||Y||^2 / (2 s^2) - f(Y)
    (eq. 4), or -f(Y) with a flat reference.

    A class-conditional energy model (a discriminator conditioned on labels) has
    ``n_classes > 0`` and takes the labels as ``score(x, y)`` / ``energy(x, y)``, y an int64
    tensor [B] of class indices; see `coopcore.conditioning` for the whole convention.
    """

    reference_std: Optional[float]
    input_shape: tuple[int, ...]

    def score(self, x: Tensor) -> Tensor: ...

    def energy(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class Generator(Protocol):
    """A top-down model Y = g(X) + eps, X ~ N(0, I), eps ~ N(0, sigma^2 I) (TPAMI eq. 11).

    A class-conditional generator has ``n_classes > 0`` and is called as ``forward(z, y)``, y an
    int64 tensor [B] of class indices (`coopcore.conditioning`)."""

    latent_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    sigma: float

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor: ...

    def forward(self, z: Tensor) -> Tensor: ...


@runtime_checkable
class Encoder(Protocol):
    """An inference model q(z | x) = N(mu(x), diag(exp(logvar(x)))).

    `input_shape` is the per-example shape of x it takes; `mu` and `logvar` have shape
    [B, *latent_shape].
    """

    input_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


@dataclass
class SamplerOutput:
    """What a sampler run returns: built by `Sampler.run`, read by the objective that ran it.

    All diagnostics stay on the device as tensors (no host sync inside the sampler's loop); the
    objective copies what it wants into `StepResult.scalars`, which the trainer reads once per
    iteration.

    Attributes:
        samples: the final states, same shape, dtype and device as the sampler's `init` (a
            new tensor: `init` is never written to); entries where the `mask` was 0 are
            bit-identical to `init`.
        energies: shape ``[n_steps]``; ``energies[t]`` is the batch mean of the energy
            (``-log_density``) at step t (before that step's update).  Empty for 0 steps.
        grad_norms: shape ``[n_steps]``; ``grad_norms[t]`` is the batch mean of the per-example
            L2 norm of the log-density's gradient at step t.  Empty for 0 steps.
        acceptance: the mean Metropolis-Hastings acceptance rate over steps and examples (a
            0-d tensor), or None for a sampler without the Metropolis correction.
    """

    samples: Tensor
    energies: Tensor
    grad_norms: Tensor
    acceptance: Optional[Tensor] = None


@runtime_checkable
class Sampler(Protocol):
    """Draws samples from a differentiable log-density, starting at `init`.

    `mask`, where given, has the shape of `init` (or broadcasts to it): 1 marks entries the
    sampler may change, 0 entries it must keep (inpainting).  All randomness comes from the
    explicit `generator`.
    """

    n_steps: int

    def run(
        self,
        log_density: LogDensity,
        init: Tensor,
        generator: torch.Generator,
        mask: Optional[Tensor] = None,
    ) -> SamplerOutput: ...


@dataclass
class Batch:
    """One minibatch: built by the trainer each iteration, passed to `Objective.step`.

    The trainer draws the indices from its seeded batch schedule, reads the examples with the
    dataset's `get_batch(index)` (and, in a run with a conditional model, their labels with the
    dataset's `get_labels(index)`) and moves them to the run's device before calling `step`.

    Attributes:
        x: the examples, ``[B, *data_shape]`` float tensor on the run's device, in the
            model's range (what the dataset yields, e.g. [-1, 1] for the image datasets).
        index: ``[B]`` int64 tensor, the position of each example in the training set
            (``0 <= index < Parts.n_train``); objectives with per-example state (persistent
            chains, Algorithm G's latents) index it with this.
        y: ``[B]`` int64 class labels of the examples, or None.  Set by the trainer exactly when
            one of the run's models is conditional (has ``n_classes > 0``, see
            `coopcore.conditioning`); None in every unconditional run.
    """

    x: Tensor
    index: Tensor
    y: Optional[Tensor] = None

    def to(self, device: torch.device) -> "Batch":
        """A copy of the batch on `device` (non-blocking copies)."""
        y = None if self.y is None else self.y.to(device, non_blocking=True)
        return Batch(self.x.to(device, non_blocking=True), self.index.to(device, non_blocking=True), y)


@dataclass
class StepResult:
    """What one objective iteration reports: returned by `Objective.step`, read by the trainer.

    Attributes:
        scalars: named 0-d tensors (losses, mean scores, diagnostics) on any device, kept as
            tensors (no ``.item()``).  The trainer stacks them and copies them to the host once
            per iteration, stops the run with a divergence error if any is not finite, and
            writes them to ``metrics.jsonl`` and TensorBoard (``train/<name>``) every
            ``run.log_every`` iterations.
        histograms: named per-example tensors (e.g. the descriptor's scores on observed and
            synthesised examples), written as TensorBoard histograms when the scalars are
            logged.  Optional; empty by default.
    """

    scalars: dict[str, Tensor]
    histograms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Parts:
    """Everything an objective is built from: built by the framework from the recipe and
    passed to the objective's factory as ``factory(options, parts=parts)``.

    Role names are the recipe's keys (``[models.descriptor]`` gives ``models["descriptor"]``).
    Only the roles the recipe configures are present: the framework checks that the objective's
    `required_models` and `required_samplers` are there before building it; optional roles
    (e.g. CoopNets' ``inference`` sampler) are looked up with ``.get``.

    Attributes:
        models: the networks by role, built from ``[models.<role>]`` and already on `device`;
            `EnergyModel`, `Generator` or `Encoder` implementations.
        samplers: the samplers by role, built from ``[samplers.<role>]``; `Sampler`
            implementations.
        optimizers: one optimiser per model role that has an ``[optimizers.<role>]`` table,
            over that model's parameters (learning-rate decay is applied by the trainer).
        n_train: the number of examples in the training set, for per-example state such as
            Algorithm G's latents or persistent chains (`Batch.index` indexes it).
        device: the device the run trains on.
        data_shape: the shape of one training example (``dataset.shape``), e.g. ``(1, 28, 28)``.
        examples: training examples by index: ``examples(idx)`` returns ``[len(idx), *data_shape]``
            on `device`, for objectives whose samples start from observed data (contrastive
            divergence); None when the experiment was built without its training set.
        dataset: the training set as its dataset factory built it, for objectives that need more
            than images by index (e.g. an unpaired set's second domain, `target`); a stand-in
            with only ``name`` and ``shape`` when the run is reopened without its data; None
            when built outside `build_experiment`.
    """

    models: dict[str, nn.Module]
    samplers: dict[str, Any]
    optimizers: dict[str, torch.optim.Optimizer]
    n_train: int
    device: torch.device
    data_shape: tuple[int, ...]
    examples: Optional[Callable[[Tensor], Tensor]] = None
    dataset: Optional[Any] = None


@runtime_checkable
class Objective(Protocol):
    """One learning algorithm.

    `required_models` / `required_samplers` name the roles it needs from the recipe (e.g.
    ``("descriptor", "generator")``).  `step` performs one full iteration, optimiser updates
    included.  `state_dict`/`load_state_dict` hold whatever the objective keeps between
    iterations (persistent chains, per-example latents) so checkpoints are complete.
    `samples` returns named image batches for sample grids and evaluation.  An objective that
    trains conditional models reads the labels from `Batch.y`; its `samples(n, generator)` then
    gives class-balanced samples (label i % n_classes), and it may accept a keyword
    ``labels`` (int64 [n]) to sample given classes (`coop sample RUN --label K` uses it).
    """

    required_models: Sequence[str]
    required_samplers: Sequence[str]

    def step(self, batch: Batch, generator: torch.Generator) -> StepResult: ...

    def samples(self, n: int, generator: torch.Generator) -> Mapping[str, Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class EnergyModelBase(nn.Module):
    """Convenience base for descriptors: subclasses implement `score`; the energy follows
    from the reference distribution (TPAMI eq. 4)."""

    def __init__(self, input_shape: Sequence[int], reference_std: Optional[float]) -> None:
        super().__init__()
        if reference_std is not None and not reference_std > 0:
            raise ValueError(f"reference_std must be positive or None, got {reference_std}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.reference_std = None if reference_std is None else float(reference_std)

    def score(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        # An unconditional subclass may define score(x) alone: y is passed only when given.
        return self.score(x) if y is None else self.score(x, y)

    def energy(self, x: Tensor, y: Optional[Tensor] = None) -> Tensor:
        f = self.score(x) if y is None else self.score(x, y)
        if self.reference_std is None:
            return -f
        return x.flatten(1).pow(2).sum(1) / (2.0 * self.reference_std**2) - f


class GeneratorBase(nn.Module):
    """Convenience base for generators: N(0, I) latents of `latent_shape`."""

    def __init__(self, latent_shape: Sequence[int], output_shape: Sequence[int], sigma: float) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.latent_shape = tuple(int(v) for v in latent_shape)
        self.output_shape = tuple(int(v) for v in output_shape)
        self.sigma = float(sigma)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        device = next(self.parameters()).device
        return torch.randn((n, *self.latent_shape), generator=generator, device=device)


def generator_log_joint(
    generator_net: nn.Module, y: Tensor, sigma: float, observed: Optional[Tensor] = None
) -> LogDensity:
    """log q(X, Y) of TPAMI eq. 12 as a function of X, for Langevin inference (eq. 15).

    With `observed` (1 = observed pixel), the squared error runs over observed pixels only,
    which is how the paper completes occluded images (Section 4.6).
    """

    def log_q(z: Tensor) -> Tensor:
        residual = y - generator_net(z)
        if observed is not None:
            residual = residual * observed
        return -residual.flatten(1).pow(2).sum(1) / (2.0 * sigma**2) - 0.5 * z.flatten(1).pow(2).sum(1)

    return log_q
