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

#: A differentiable log-density (up to a constant), mapping a batch [B, ...] to [B].
LogDensity = Callable[[Tensor], Tensor]


@runtime_checkable
class EnergyModel(Protocol):
    """A descriptor p(Y) = exp(f(Y)) p0(Y) / Z (TPAMI eq. 2).

    `score(x)` is f, the negative energy relative to the reference distribution, one value
    per example.  `reference_std` is s of the Gaussian reference p0 = N(0, s^2 I) (eq. 3), or
    None for the uniform/flat reference.  `energy(x)` is E(Y) = ||Y||^2 / (2 s^2) - f(Y)
    (eq. 4), or -f(Y) with a flat reference.
    """

    reference_std: Optional[float]
    input_shape: tuple[int, ...]

    def score(self, x: Tensor) -> Tensor: ...

    def energy(self, x: Tensor) -> Tensor: ...


@runtime_checkable
class Generator(Protocol):
    """A top-down model Y = g(X) + eps, X ~ N(0, I), eps ~ N(0, sigma^2 I) (TPAMI eq. 11)."""

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
    """What a sampler run returns.

    All diagnostics stay on the device as tensors; the caller reads them once per iteration.
    `energies[t]` and `grad_norms[t]` are batch means at step t (energy = -log density).
    `acceptance` is the mean Metropolis-Hastings acceptance rate, or None without MH.
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
    """One minibatch: images in the model's range, their dataset indices, and an optional mask
    of observed pixels (1 = observed)."""

    x: Tensor
    index: Tensor
    mask: Optional[Tensor] = None

    def to(self, device: torch.device) -> "Batch":
        return Batch(
            self.x.to(device, non_blocking=True),
            self.index.to(device, non_blocking=True),
            None if self.mask is None else self.mask.to(device, non_blocking=True),
        )


@dataclass
class StepResult:
    """What one objective iteration reports: 0-d tensors (read once per iteration by the
    trainer) and optional per-example tensors for histograms."""

    scalars: dict[str, Tensor]
    histograms: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Parts:
    """Everything an objective is built from: networks, samplers and optimisers by role name,
    the training-set size (for per-example state such as Algorithm G's latents) and the
    device."""

    models: dict[str, nn.Module]
    samplers: dict[str, Any]
    optimizers: dict[str, torch.optim.Optimizer]
    n_train: int
    device: torch.device
    data_shape: tuple[int, ...]


@runtime_checkable
class Objective(Protocol):
    """One learning algorithm.

    `required_models` / `required_samplers` name the roles it needs from the recipe (e.g.
    ``("descriptor", "generator")``).  `step` performs one full iteration, optimiser updates
    included.  `state_dict`/`load_state_dict` hold whatever the objective keeps between
    iterations (persistent chains, per-example latents) so checkpoints are complete.
    `samples` returns named image batches for sample grids and evaluation.
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

    def forward(self, x: Tensor) -> Tensor:
        return self.score(x)

    def energy(self, x: Tensor) -> Tensor:
        f = self.score(x)
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
