"""The behavioural contract of every component family, runnable against any registry entry.

`tests/test_contract.py` loops over the registries and calls `check_entry` for every energy
model, generator, encoder, sampler and objective, so a new plugin is contract-tested without
new test code (the way timm tests every registered model).  Plugin authors can run the same
checks in their own test suites:

```python
from coopcore.contract import check_entry
from coopcore.plugin_manager import get_registries

def test_my_sampler():
    check_entry(get_registries(), "sampler", "my_plugin.my_sampler")
```

Models and samplers are built from their default options.  Objectives are built from a tiny
configuration the objective class declares itself as the class attribute `contract_example`:

```python
contract_example = {
    "data": {"name": "synthetic", "batch_size": 4, "options": {"shape": [1, 8, 8], "n": 8}},
    "models": {"descriptor": {"name": "...", "options": {...}}},
    "samplers": {"revision": {"name": "langevin", "options": {"n_steps": 2}}},
    "optimizers": {"descriptor": {"name": "adam", "lr": 1e-3}},
    "options": {...},          # the objective's own options
    "steps": 1,                # optional: steps before parameters must have changed
}
```

Class-conditional components (`coopcore.conditioning`: a model with ``n_classes > 0``) are held
to the label convention too: a conditional model must refuse a call without labels
(ValueError), be deterministic for the same labels and depend on them; a model whose options
have an ``n_classes`` field is also built conditional (``n_classes = 3``) and checked so.  An
objective's batches carry labels (`Batch.y`) whenever its example has a conditional model, and
an objective may declare a second example, ``contract_conditional_example`` (same keys), which is
checked the same way, with its `samples` also asked for given labels.

Every violation raises `ContractViolation` (an AssertionError) naming the component and what
was expected.
"""
from __future__ import annotations

import copy
import io
import math
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from .checkpoint import check_plain
from .conditioning import balanced_labels, is_conditional, n_classes, run_classes, samples_take_labels
from .errors import CheckpointError
from .families import CONTRACT_FAMILIES
from .families import family as family_spec
from .protocols import Batch, Encoder, EnergyModel, Generator, Objective, Sampler, SamplerOutput, StepResult

_BATCH = 2
_SEED = 1234
_CONTRACT_CLASSES = 3  # classes of the conditional variant of a model with an `n_classes` option


class ContractViolation(AssertionError):
    """A registered component does not behave as its protocol requires."""


def _require(ok: bool, who: str, message: str) -> None:
    if not ok:
        raise ContractViolation(f"{who}: {message}")


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _param_snapshot(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: nn.Module, before: list[Tensor]) -> bool:
    return any(not torch.equal(p.detach(), b) for p, b in zip(module.parameters(), before))


def _check_tensor(t: Any, who: str, what: str, shape: tuple[int, ...], device: torch.device) -> None:
    _require(isinstance(t, Tensor), who, f"{what} must be a Tensor, got {type(t).__name__}")
    _require(tuple(t.shape) == tuple(shape), who, f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    _require(t.dtype == torch.float32, who, f"{what} has dtype {t.dtype}, expected torch.float32")
    _require(t.device.type == device.type, who, f"{what} is on {t.device}, expected {device}")
    _require(bool(torch.isfinite(t).all()), who, f"{what} has non-finite values")


def _train_step_changes(module: nn.Module, loss: Tensor, who: str, inputs: Optional[Tensor] = None) -> Optional[Tensor]:
    """One backward of `loss` reaches the parameters (and `inputs`, whose gradient is returned)
    with finite gradients; one optimiser step then moves the parameters.

    The step is Adam's first step written out, ``p -= lr * sign(grad)`` (Adam's first update is
    ``lr * g / (|g| + eps)``): the same movement without allocating Adam's moment buffers,
    which for the papers' largest networks (10^8 parameters) took most of the check's time.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    _require(bool(params), who, "has no trainable parameters")
    wrt = params + ([inputs] if inputs is not None else [])
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    reached = [(p, g) for p, g in zip(params, grads[: len(params)]) if g is not None]
    _require(bool(reached), who, "backward reached none of its parameters")
    # A sum is finite only if every entry is (NaN and inf propagate), without a mask per entry.
    sums = torch.stack([g.sum() for _, g in reached])
    _require(bool(torch.isfinite(sums).all()), who, "parameter gradients are not finite")
    before = _param_snapshot(module)
    with torch.no_grad():
        for p, g in reached:
            p.sub_(g.sign(), alpha=1e-3)
    _require(_changed(module, before), who, "one optimiser step did not change any parameter")
    return grads[-1] if inputs is not None else None


# ---------------------------------------------------------------------------------------
def check_energy_model(model: nn.Module, who: str = "energy model", device: Optional[torch.device] = None) -> None:
    """score() -> [B] float32 on the model's device, deterministic; energy() follows from the
    reference distribution (TPAMI eq. 4); gradients reach the input and the parameters."""
    device = device or torch.device("cpu")
    model = model.to(device).train()
    _require(isinstance(model, nn.Module), who, "must be a torch.nn.Module")
    _require(isinstance(model, EnergyModel), who, "does not implement the EnergyModel protocol")
    shape = tuple(model.input_shape)
    _require(len(shape) >= 1 and all(int(s) > 0 for s in shape), who, f"input_shape {shape} is not a shape")
    s = model.reference_std
    _require(s is None or (isinstance(s, float) and s > 0), who, f"reference_std must be a positive float or None, got {s!r}")
    x = torch.rand((_BATCH, *shape), generator=_generator(_SEED, device), device=device) * 2 - 1
    x.requires_grad_(True)
    y = _contract_labels(model, device)
    if y is not None:
        _check_label_path(lambda lab: model.score(x.detach(), lab), model, who, "score(x, y)", device)
    f = model.score(x) if y is None else model.score(x, y)
    _check_tensor(f.detach(), who, "score(x)", (_BATCH,), device)
    with torch.no_grad():
        # energy() recomputes the score: one forward checks eq. 4 and determinism together.
        e = model.energy(x.detach()) if y is None else model.energy(x.detach(), y)
    fd = f.detach()
    expected = -fd if s is None else x.detach().flatten(1).pow(2).sum(1) / (2.0 * s**2) - fd
    _require(torch.allclose(e, expected, rtol=1e-5, atol=1e-5), who,
             "energy(x) must equal ||x||^2 / (2 s^2) - score(x) (or -score(x) with reference_std None), "
             "and score() must be deterministic for the same input")
    gx = _train_step_changes(model, f.mean(), who, inputs=x)
    _require(gx is not None and bool(torch.isfinite(gx).all()) and bool(gx.abs().sum() > 0), who,
             "score() has no finite, non-zero input gradient")


def check_generator(model: nn.Module, who: str = "generator", device: Optional[torch.device] = None) -> None:
    """sample_latent(n, generator) is reproducible under a seeded generator; forward(z) gives
    [n, *output_shape]; gradients reach the parameters."""
    device = device or torch.device("cpu")
    model = model.to(device).train()
    _require(isinstance(model, Generator), who, "does not implement the Generator protocol")
    _require(isinstance(model.sigma, float) and model.sigma > 0, who, f"sigma must be a positive float, got {model.sigma!r}")
    z1 = model.sample_latent(_BATCH, _generator(_SEED, device))
    z2 = model.sample_latent(_BATCH, _generator(_SEED, device))
    _check_tensor(z1, who, "sample_latent(n)", (_BATCH, *model.latent_shape), device)
    _require(torch.equal(z1, z2), who, "sample_latent() differs for two generators with the same seed")
    labels = _contract_labels(model, device)
    if labels is not None:
        _check_label_path(lambda lab: model(z1, lab), model, who, "forward(z, y)", device)
    y = model(z1) if labels is None else model(z1, labels)
    _check_tensor(y.detach(), who, "forward(z)", (_BATCH, *model.output_shape), device)
    with torch.no_grad():
        y2 = model(z2) if labels is None else model(z2, labels)
    _require(torch.equal(y.detach(), y2), who, "forward() is not deterministic for the same latents")
    _train_step_changes(model, y.pow(2).mean(), who)


def _contract_labels(model: Any, device: torch.device) -> Optional[Tensor]:
    """Labels 0, 1, ... (mod n_classes) for the contract's batch; None for an unconditional model."""
    k = n_classes(model)
    return balanced_labels(_BATCH, k, device) if k else None


def _check_label_path(call: Any, model: Any, who: str, what: str, device: torch.device) -> None:
    """A conditional model refuses a call without labels, is deterministic for equal labels and
    depends on them (every example's output changes when every label does)."""
    k = n_classes(model)
    _require(isinstance(getattr(model, "n_classes"), int), who, "n_classes must be an int")
    with torch.no_grad():
        try:
            call(None)
        except ValueError:
            pass
        else:
            raise ContractViolation(f"{who}: is conditional (n_classes = {k}) but {what} accepted y=None; it must "
                                    "raise ValueError (coopcore.conditioning.require_labels)")
        y = balanced_labels(_BATCH, k, device)
        a, b = call(y), call(y.clone())
        _require(torch.equal(a, b), who, f"{what} is not deterministic for the same labels")
        if k > 1:
            other = call((y + 1) % k)
            per_example = (a - other).reshape(a.shape[0], -1).abs().sum(1)
            _require(bool((per_example > 0).all()), who, f"{what} does not depend on the labels y")


def check_encoder(model: nn.Module, who: str = "encoder", device: Optional[torch.device] = None) -> None:
    """forward(x) -> (mu, logvar), each [B, *latent_shape], deterministic, trainable."""
    device = device or torch.device("cpu")
    model = model.to(device).train()
    _require(isinstance(model, Encoder), who, "does not implement the Encoder protocol (input_shape, latent_shape, forward)")
    x = torch.rand((_BATCH, *model.input_shape), generator=_generator(_SEED, device), device=device) * 2 - 1
    out = model(x)
    _require(isinstance(out, tuple) and len(out) == 2, who, "forward(x) must return (mu, logvar)")
    mu, logvar = out
    for name, t in (("mu", mu), ("logvar", logvar)):
        _check_tensor(t.detach(), who, name, (_BATCH, *model.latent_shape), device)
    with torch.no_grad():
        mu2, _ = model(x)
    _require(torch.equal(mu.detach(), mu2.detach()), who, "forward() is not deterministic for the same input")
    _train_step_changes(model, mu.pow(2).mean() + logvar.exp().mean(), who)


class _GaussianLogDensity(nn.Module):
    """log N(x; 0, scale^2 I) up to a constant, with a parameter (to see that samplers leave
    parameter gradients alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return -0.5 * x.flatten(1).pow(2).sum(1) * torch.exp(-2.0 * self.log_scale)


def check_sampler(sampler: Any, who: str = "sampler", device: Optional[torch.device] = None) -> None:
    """Shapes, dtype and device preserved; init untouched; reproducible under a seeded
    generator; masked-out entries kept exactly; gradients w.r.t. the input only; one energy and
    gradient norm per step."""
    device = device or torch.device("cpu")
    _require(isinstance(sampler, Sampler), who, "does not implement the Sampler protocol (n_steps, run)")
    _require(isinstance(sampler.n_steps, int) and sampler.n_steps >= 0, who, f"n_steps must be an int >= 0, got {sampler.n_steps!r}")
    density = _GaussianLogDensity().to(device)
    init = torch.rand((3, 2, 4, 4), generator=_generator(_SEED, device), device=device) * 2 - 1
    keep = init.clone()
    out = sampler.run(density, init, _generator(7, device))
    _require(isinstance(out, SamplerOutput), who, f"run() must return SamplerOutput, got {type(out).__name__}")
    _check_tensor(out.samples, who, "samples", tuple(init.shape), device)
    _require(torch.equal(init, keep), who, "run() modified its init tensor in place")
    _require(density.log_scale.grad is None, who, "run() left gradients on the log-density's parameters "
             "(take gradients w.r.t. the input only)")
    for name in ("energies", "grad_norms"):
        t = getattr(out, name)
        _require(isinstance(t, Tensor) and tuple(t.shape) == (sampler.n_steps,), who,
                 f"{name} must have one entry per step ({sampler.n_steps}), got {tuple(getattr(t, 'shape', ()))}")
    again = sampler.run(density, init, _generator(7, device))
    _require(torch.equal(out.samples, again.samples), who, "two runs with equally seeded generators differ")
    mask = torch.zeros_like(init)
    mask[:, :, :2] = 1.0  # only the top half may change
    masked = sampler.run(density, init, _generator(7, device), mask=mask)
    _check_tensor(masked.samples, who, "masked samples", tuple(init.shape), device)
    _require(torch.equal(masked.samples[:, :, 2:], init[:, :, 2:]), who, "entries with mask == 0 changed")
    if sampler.n_steps > 0:
        _require(not torch.equal(masked.samples[:, :, :2], init[:, :, :2]), who, "entries with mask == 1 never moved")


# ---------------------------------------------------------------------------------------
def _scalars(result: Any, who: str, device: torch.device) -> dict[str, Tensor]:
    _require(isinstance(result, StepResult), who, f"step() must return StepResult, got {type(result).__name__}")
    _require(bool(result.scalars), who, "step() reported no scalars")
    for k, v in result.scalars.items():
        _require(isinstance(v, Tensor) and v.numel() == 1, who, f"scalar '{k}' must be a one-element tensor")
        _require(v.device.type == device.type, who, f"scalar '{k}' is on {v.device}, expected {device}")
        _require(math.isfinite(float(v)), who, f"scalar '{k}' is not finite ({float(v)})")
    return {k: v.detach().clone() for k, v in result.scalars.items()}


def _same_state(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and set(a) == set(b) and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def _same_scalars(a: dict[str, Tensor], b: dict[str, Tensor], exact: bool) -> bool:
    if set(a) != set(b):
        return False
    if exact:
        return all(torch.equal(a[k], b[k]) for k in a)
    return all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def objective_example_config(name: str, example: Mapping[str, Any], seed: int = _SEED) -> dict[str, Any]:
    """The recipe (as plain data) the contract builds objective `name` from."""
    known = {"data", "models", "samplers", "optimizers", "options", "steps"}
    unknown = sorted(set(example) - known)
    if unknown:
        raise ContractViolation(f"objective '{name}': contract_example has unknown keys {unknown}; allowed: {sorted(known)}")
    return {
        "run": {"name": f"contract-{name}", "seed": seed, "iterations": 4, "tensorboard": False},
        "data": copy.deepcopy(dict(example["data"])),
        "models": copy.deepcopy(dict(example.get("models", {}))),
        "samplers": copy.deepcopy(dict(example.get("samplers", {}))),
        "optimizers": copy.deepcopy(dict(example.get("optimizers", {}))),
        "objective": {"name": name, "options": copy.deepcopy(dict(example.get("options", {})))},
    }


def check_objective(registries: Any, name: str, device: Optional[torch.device] = None) -> None:
    """Build objective `name` from its `contract_example` and check one training run's worth of
    behaviour: reproducibility, finite scalars, parameters that move, samples, and a state that
    resumes bit-exactly (models, optimisers, objective state and the generator restored); the
    same for its `contract_conditional_example` when it declares one."""
    device = device or torch.device("cpu")
    who = f"objective '{name}'"
    entry = registries.objective.get(name)
    example = getattr(entry.factory, "contract_example", None)
    _require(isinstance(example, Mapping) and "data" in example, who,
             "the objective class must declare a `contract_example` dict (see coopcore.contract) so the "
             "registry-wide contract test can build it")
    _check_objective_example(registries, name, example, who, device)
    conditional = getattr(entry.factory, "contract_conditional_example", None)
    if conditional is not None:
        _require(isinstance(conditional, Mapping) and "data" in conditional, who,
                 "contract_conditional_example must be a dict like contract_example")
        _check_objective_example(registries, name, conditional, f"{who} (conditional example)", device)


def _check_objective_example(registries: Any, name: str, example: Mapping[str, Any], who: str,
                             device: torch.device) -> None:
    from .build import build_experiment
    from .data import BatchSchedule
    from .experiment import resolve_data
    from .rng import seed_everything
    from .rundir import TrainingState, checkpoint_payload, restore_payload

    steps = int(example.get("steps", 1))
    resolved = resolve_data(objective_example_config(name, example), f"{name}.contract_example", registries)
    cfg = resolved.config
    exact = device.type == "cpu"

    def build():
        seed_everything(_SEED)
        exp = build_experiment(resolved, device, registries=registries)
        sched = BatchSchedule(len(exp.dataset), cfg.data.batch_size, _SEED, cfg.data.shuffle, cfg.data.drop_last)
        return exp, sched, _generator(_SEED, device)

    def batch(exp, sched, it: int) -> Batch:
        idx = sched.indices(it)
        labels = exp.dataset.get_labels(idx).to(torch.long) if classes else None
        return Batch(exp.dataset.get_batch(idx), idx, labels).to(device)

    exp, sched, gen = build()
    classes = run_classes(exp.parts.models.values())
    obj = exp.objective
    _require(isinstance(obj, Objective), who, "does not implement the Objective protocol")
    for attr in ("required_models", "required_samplers"):
        roles = getattr(obj, attr)
        _require(all(isinstance(r, str) for r in roles), who, f"{attr} must be a sequence of role names")
    for role in obj.required_models:
        _require(role in exp.parts.models, who, f"contract_example lacks the required model role '{role}'")
    for role in obj.required_samplers:
        _require(role in exp.parts.samplers, who, f"contract_example lacks the required sampler role '{role}'")
    before = {role: _param_snapshot(m) for role, m in exp.parts.models.items()}
    first: list[dict[str, Tensor]] = []
    for it in range(steps):
        first.append(_scalars(obj.step(batch(exp, sched, it), gen), who, device))
    for role in exp.parts.optimizers:
        _require(_changed(exp.parts.models[role], before[role]), who,
                 f"the parameters of '{role}' did not change after {steps} step(s)")

    exp2, sched2, gen2 = build()
    second = [_scalars(exp2.objective.step(batch(exp2, sched2, it), gen2), who, device) for it in range(steps)]
    _require(all(_same_scalars(a, b, exact) for a, b in zip(first, second)), who,
             "two builds with the same seed gave different step scalars")

    # Save everything as a run's checkpoint does (plain data, read back with weights_only=True)
    # and resume into a fresh build.
    buf = io.BytesIO()
    payload = checkpoint_payload(exp, TrainingState(steps, 0), gen)
    try:
        check_plain(payload)
    except CheckpointError as exc:
        raise ContractViolation(f"{who}: state_dict() is not plain data: {exc}") from None
    torch.save(payload, buf)
    buf.seek(0)
    saved = torch.load(buf, map_location=device, weights_only=True)
    exp3, sched3, gen3 = build()
    restore_payload(exp3, saved, gen3)
    _require(_same_state(exp3.objective.state_dict(), obj.state_dict()), who,
             "load_state_dict(state_dict()) does not reproduce the state")
    cont = _scalars(obj.step(batch(exp, sched, steps), gen), who, device)
    resumed = _scalars(exp3.objective.step(batch(exp3, sched3, steps), gen3), who, device)
    _require(_same_scalars(cont, resumed, exact), who,
             "a step after restoring models, optimisers, objective state and generator differs from "
             "the uninterrupted step: state_dict() misses something")

    named = obj.samples(3, _generator(99, device))
    _check_samples(named, who)
    if classes:
        _require(samples_take_labels(obj), who,
                 "trains a conditional model, so samples() must accept `labels`")
        given = torch.full((3,), classes - 1, dtype=torch.long, device=device)
        _check_samples(obj.samples(3, _generator(99, device), labels=given), who)
        # classes i % n_classes by default: asking for exactly those labels gives the same samples
        default = balanced_labels(3, classes, device)
        again = obj.samples(3, _generator(99, device), labels=default)
        _require(all(torch.equal(named[k], again[k]) for k in named), who,
                 "samples(n) must use the labels i % n_classes when none are given")


def _check_samples(named: Any, who: str) -> None:
    _require(isinstance(named, Mapping) and bool(named), who, "samples(n) must return a non-empty mapping")
    for k, v in named.items():
        _require(isinstance(k, str) and isinstance(v, Tensor), who, "samples(n) must map names to tensors")
        _require(v.shape[0] == 3, who, f"samples(3)['{k}'] has {v.shape[0]} examples")
        _require(bool(torch.isfinite(v).all()), who, f"samples(3)['{k}'] has non-finite values")


# ---------------------------------------------------------------------------------------
def check_entry(registries: Any, family: str, name: str, device: Optional[torch.device] = None) -> None:
    """Build registry entry `name` of `family` from its defaults and check its contract."""
    if family not in CONTRACT_FAMILIES:
        raise ValueError(f"no contract for family '{family}'; families: {', '.join(CONTRACT_FAMILIES)}")
    spec = family_spec(family)
    check = globals()[spec.contract]
    device = device or torch.device("cpu")
    if spec.contract_builds:
        check(registries, name, device)
        return
    entry = registries.family(family).get(name)
    who = f"{family} '{name}' (from '{entry.owner}')"
    torch.manual_seed(_SEED)
    check(registries.family(family).create(name), who, device)
    conditional = _conditional_options(entry.options)
    if conditional is not None:
        torch.manual_seed(_SEED)
        model = registries.family(family).instantiate(entry, conditional)
        _require(is_conditional(model), who, f"built with n_classes = {_CONTRACT_CLASSES} it has no n_classes > 0")
        check(model, f"{who} with n_classes = {_CONTRACT_CLASSES}", device)


def _conditional_options(options_cls: Any) -> Any:
    """Default options with n_classes = 3 for an options class with an `n_classes` field
    defaulting to 0 (a model that can be built conditional); None otherwise."""
    import attrs

    if not (isinstance(options_cls, type) and attrs.has(options_cls)):
        return None
    fields = attrs.fields_dict(options_cls)
    if "n_classes" not in fields or fields["n_classes"].default != 0:
        return None
    try:
        return options_cls(n_classes=_CONTRACT_CLASSES)
    except (TypeError, ValueError):
        return None

__all__ = [
    "CONTRACT_FAMILIES", "ContractViolation", "check_encoder", "check_energy_model", "check_entry",
    "check_generator", "check_objective", "check_sampler", "objective_example_config",
]
