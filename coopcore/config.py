"""Typed configuration: attrs classes, TOML recipes and path-aware validation.

`structure(cls, data, path)` turns plain TOML/JSON data into an attrs instance, checking every
key against the class: unknown keys, wrong types and values rejected by a validator raise a
`ConfigError` naming the dotted key path (``models.descriptor.options.channels[1]``).  The same
function validates the per-component ``options`` tables against the options class each
plugin registered, so third-party options are checked as strictly as the core's.

Why not cattrs: its default structuring coerces (``int(True)``, ``float("1.5")``, ``str(5)``),
which a recipe checker must refuse, and its errors are exception groups whose key paths live in
notes.  Keeping today's strictness and messages on cattrs needs hooks for bool/int/float/str,
Path, Literal and the ``"none"`` spelling of None plus a translator of its exception groups into
one `ConfigError`: about as many lines as the converter below, and one more dependency.
"""
from __future__ import annotations

import copy
import json
import sys
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import attrs

from .errors import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _literal_text(value: Any) -> str:
    """A Literal option value as a recipe writes it (TOML: "adam", true, 3)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def type_name(tp: Any) -> str:
    """An annotation in the words a recipe author needs (``list of int``, ``float | none``):
    used by the validation messages and the generated options reference alike."""
    if tp is None or tp is type(None):
        return "none"
    if tp is Any or tp is object:
        return "any"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return " | ".join(_literal_text(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin in (tuple, list):
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list of {type_name(args[0])}"
        if origin is tuple and args:
            return f"list of {len(args)} values ({', '.join(type_name(a) for a in args)})"
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict:
        return f"table of {type_name(args[1])}" if len(args) == 2 and args[1] is not Any else "table"
    if tp is Path:
        return "path"
    if attrs.has(tp):
        return f"table ({tp.__name__})"
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "none")


def _convert(tp: Any, value: Any, path: str, source: Optional[str]) -> Any:
    """Check `value` against annotation `tp` and convert it (lists -> tuples, tables -> attrs)."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(path, f"expected {expected}, got {type(value).__name__} {value!r}", source)

    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or type(value) is bool and not any(a is value for a in allowed):
            raise ConfigError(path, f"must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}", source)
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # TOML has no null: the string "none" stands for None in optional fields.
        if type(None) in args and (value is None or value == "none"):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, source)
            except ConfigError:
                pass
        raise fail(type_name(tp))
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise fail("a path string")
        return Path(value)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail(type_name(tp))
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and args:
            if len(value) != len(args):
                raise ConfigError(path, f"expected {type_name(tp)}, got {len(value)} values", source)
            return tuple(_convert(a, v, f"{path}[{i}]", source) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail("a table")
        key_t, val_t = typing.get_args(tp) or (str, Any)
        return {
            k: _convert(val_t, v, f"{path}.{k}" if path else str(k), source) for k, v in value.items()
        }
    if attrs.has(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail("a table")
        return structure(tp, value, path, source)
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise fail(type_name(tp))
        return value
    return value


def structure(cls: type, data: Mapping[str, Any], path: str = "", source: Optional[str] = None) -> Any:
    """Build attrs class `cls` from `data`, rejecting unknown keys and wrong types by key path."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a table, got {type(data).__name__}", source)
    attrs.resolve_types(cls)
    fields = {f.name: f for f in attrs.fields(cls)}
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "(no keys)"
        raise ConfigError(
            f"{prefix}{unknown[0]}", f"unknown key. Allowed keys here: {allowed}", source
        )
    kwargs = {}
    for name, fld in fields.items():
        if name not in data:
            if fld.default is attrs.NOTHING:
                raise ConfigError(f"{prefix}{name}", f"is required ({type_name(fld.type)})", source)
            continue
        kwargs[name] = _convert(fld.type, data[name], f"{prefix}{name}", source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except OptionError as exc:
        raise ConfigError(f"{prefix}{exc.field}", exc.message, source) from None
    except (ValueError, TypeError) as exc:
        # attrs validators raise with the attribute as the first argument where they can.
        # Prefer a field the recipe gave; a cross-field check may also name one left at its default.
        quoted = [n for n in fields if f"'{n}'" in str(exc)]
        bad = next((n for n in quoted if n in kwargs), quoted[0] if quoted else None)
        raise ConfigError(f"{prefix}{bad}" if bad else path, str(exc), source) from None


def unstructure(obj: Any) -> Any:
    """attrs instances -> plain JSON-able data (tuples become lists)."""
    if attrs.has(type(obj)):
        return {f.name: unstructure(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
    if isinstance(obj, Mapping):
        return {str(k): unstructure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------
# validators
class OptionError(ValueError):
    """Raised by a cross-field check (``__attrs_post_init__``) to name the field at fault.

    ``raise OptionError("n_chains", "must be 0 with a 'train_mask'")`` is reported as
    ``'objective.options.n_chains': must be 0 with a 'train_mask'``.  A plain ValueError is
    reported at the first field its message quotes, else at the options table.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"'{field}' {message}")


def positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value!r}")


def non_negative(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not value >= 0:
        raise ValueError(f"'{attribute.name}' must be >= 0, got {value!r}")


def optional_positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """None (the setting is off) or a value > 0."""
    if value is not None and not value > 0:
        raise ValueError(f"'{attribute.name}' must be > 0 or omitted, got {value!r}")


def in_range(low: float, high: float):
    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not low <= value <= high:
            raise ValueError(f"'{attribute.name}' must be in [{low}, {high}], got {value!r}")

    return check


def all_positive(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if any(not v > 0 for v in value):
        raise ValueError(f"'{attribute.name}' must contain only positive values, got {list(value)!r}")


def _device(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if value in ("auto", "cpu", "cuda", "mps") or (value.startswith("cuda:") and value[5:].isdigit()):
        return
    raise ValueError(f"'{attribute.name}' must be auto, cpu, cuda, cuda:N or mps; got {value!r}")


# ---------------------------------------------------------------------------------------
# the experiment schema
@attrs.frozen
class RunConfig:
    """How long and how a run goes, and how often it logs, samples, evaluates and saves."""

    # The run's name: the default run directory is runs/<name>.
    name: str = "run"
    # Seeds every RNG (Python, NumPy, torch and the explicit generator the samplers draw from).
    seed: int = attrs.field(default=0, validator=non_negative)
    # Training iterations (one minibatch each); may be raised on --resume.
    iterations: int = attrs.field(default=1000, validator=positive)
    # auto (CUDA when available), cpu, cuda, cuda:N or mps.
    device: str = attrs.field(default="auto", validator=_device)
    # Write the training scalars to metrics.jsonl (and TensorBoard) every this many iterations.
    log_every: int = attrs.field(default=10, validator=positive)
    # Save sample grids every this many iterations (0: only at the end).
    sample_every: int = attrs.field(default=100, validator=non_negative)
    # Samples per grid.
    sample_count: int = attrs.field(default=64, validator=positive)
    # Save a checkpoint every this many iterations (0: only at the end and on Ctrl-C).
    checkpoint_every: int = attrs.field(default=100, validator=non_negative)
    # How many of the newest checkpoints to keep.
    keep_checkpoints: int = attrs.field(default=2, validator=positive)
    # Evaluate the [[eval]] metrics every this many iterations (0: only at the end).
    eval_every: int = attrs.field(default=0, validator=non_negative)
    # torch.use_deterministic_algorithms (warn-only): bit-reproducible GPU runs, slower.
    deterministic: bool = False
    # torch CPU threads (0: torch's default).
    threads: int = attrs.field(default=0, validator=non_negative)
    # Write TensorBoard event files (scalars, energy histograms, sample grids).
    tensorboard: bool = True
    # Run every Langevin sampler as a replayed CUDA graph (docs/performance.md): "on" captures
    # on CUDA (CPU runs eagerly, with a one-line notice); "auto" stays eager until capture has
    # been proven equal to eager on a GPU (coopcore.accel.CAPTURE_PROVEN_ON_CUDA); "off" never
    # captures.  Same noise and, within floating-point tolerance, the same numbers as eager.
    capture_sampler: Literal["auto", "on", "off"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "on", "off")))
    # Network arithmetic: "float32", or "bf16" autocast of the sampler's and the updates'
    # network passes (chains, summed energies, the reference term, parameters and optimiser
    # state stay float32).  bf16 changes the numbers: about 3 significant digits per pass.
    precision: Literal["float32", "bf16"] = attrs.field(
        default="float32", validator=attrs.validators.in_(("float32", "bf16")))
    # torch.compile the networks (score and forward); same math, kernels may round differently.
    compile: bool = False
    # Store 4-d weights and activations channels-last (faster convolutions on GPUs); same math,
    # convolution kernels may round differently.
    channels_last: bool = False
    # Fused Adam/AdamW kernels (one launch for all parameters); same update, last-bit
    # differences from the default kernel.  SGD and RMSprop are unaffected.
    fused_adam: bool = False
    # Hold an in-memory dataset on the device as one tensor: "auto" does so on CUDA (up to
    # 4 GiB), "on" on any accelerator, "off" never.  The batches are the same values, so the
    # numbers do not change; on CPU it does nothing.
    data_on_device: Literal["auto", "on", "off"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "on", "off")))


@attrs.frozen
class DataConfig:
    """The training dataset: a registered dataset name, its options and the batching."""

    # A registered dataset (`coop plugins` lists them).
    name: str
    # Examples per training iteration.
    batch_size: int = attrs.field(validator=positive)
    # Shuffle each epoch (the order is a function of the seed and the iteration, so resuming is exact).
    shuffle: bool = True
    # Drop the last incomplete batch of an epoch.
    drop_last: bool = True
    # Root folder of the data files ("" = --data-root, then $COOP_DATA).
    root: str = ""
    # DataLoader processes that read batches ahead into pinned memory, for datasets decoded per
    # batch (LSUN, image folders); 0 reads each batch in the training loop.  Same batches either
    # way; ignored for a dataset held on the device (run.data_on_device).
    workers: int = attrs.field(default=0, validator=non_negative)
    # The dataset's options (see its entry in the options reference).
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ComponentConfig:
    """A registered component by name plus its options table."""

    # A registered component of the table's family (`coop plugins` lists them).
    name: str
    # The component's options (`coop plugins --options NAME`); omitted keys take their defaults.
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class OptimizerConfig:
    """The optimiser of one model role (same key as under [models])."""

    # The torch.optim algorithm.
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    # Learning rate.
    lr: float = attrs.field(default=1e-3, validator=positive)
    # Adam/AdamW moment decay rates, each in [0, 1).
    betas: tuple[float, float] = (0.9, 0.999)
    # Adam/AdamW/RMSprop denominator epsilon.
    eps: float = attrs.field(default=1e-8, validator=positive)
    # L2 penalty (decoupled for adamw).
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    # SGD/RMSprop momentum.
    momentum: float = attrs.field(default=0.0, validator=non_negative)
    # Multiply the learning rate by this every `lr_decay_every` iterations (step schedule).
    lr_decay: float = attrs.field(default=1.0, validator=in_range(0.0, 1.0))
    # Iterations between learning-rate decays (0: constant learning rate).
    lr_decay_every: int = attrs.field(default=0, validator=non_negative)

    def __attrs_post_init__(self) -> None:
        for b in self.betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"'betas' must lie in [0, 1), got {list(self.betas)!r}")


@attrs.frozen
class MetricConfig:
    """A metric evaluated during training (every `run.eval_every` iterations) and at the end."""

    # A registered metric.
    name: str
    # What evaluations.jsonl and results tables call it (default: the name).
    label: str = ""
    # The metric's options.
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ExperimentConfig:
    """A whole recipe."""

    # How long and how a run goes.
    run: RunConfig
    # The training data.
    data: DataConfig
    # Networks by role (descriptor, generator, encoder, grid1, ...): energy models, generators, encoders.
    models: dict[str, ComponentConfig]
    # The learning algorithm.
    objective: ComponentConfig
    # Samplers by role (revision, inference, ...).
    samplers: dict[str, ComponentConfig] = attrs.field(factory=dict)
    # One optimiser per trained model role.
    optimizers: dict[str, OptimizerConfig] = attrs.field(factory=dict)
    # Metrics evaluated during and at the end of training.
    eval: list[MetricConfig] = attrs.field(factory=list)
    # Free text: what the recipe reproduces and how it deviates.
    description: str = ""


# ---------------------------------------------------------------------------------------
# recipes
def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``key.path=value`` (value in TOML syntax; bare words are strings)."""
    if "=" not in text:
        raise ConfigError("", f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError("", f"--set key {key!r} is not a dotted key path")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to raw recipe data (validation happens afterwards)."""
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise ConfigError(".".join(parts[: i + 1]), "cannot set a key below a value that is not a table")
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(parts), "cannot set a key below a value that is not a table")
        node[parts[-1]] = value
    return data


def read_recipe_data(path: Path) -> dict[str, Any]:
    """Read a TOML recipe (or a resolved JSON config) into plain data."""
    if not path.exists():
        raise ConfigError("", f"recipe file not found: {path}")
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text())
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", str(path)) from None
    except json.JSONDecodeError as exc:
        raise ConfigError("", f"not valid JSON: {exc}", str(path)) from None


def packaged_file(package: str, name: str) -> Path:
    """A data file shipped inside an installed package (recipes, table specs)."""
    return Path(str(resources.files(package).joinpath(name)))


RECIPE_PACKAGE = "coopcore.recipes"


def packaged_recipes() -> list[str]:
    """The names of the recipes shipped with coopnets (``coop train NAME``)."""
    folder = packaged_file(RECIPE_PACKAGE, "")
    return sorted(p.stem for p in folder.glob("*.toml"))


def recipe_path(name: str | Path) -> Path:
    """A recipe by packaged name (``coopnets-digits``) or by file path."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    text = str(name)
    packaged = packaged_file(RECIPE_PACKAGE, text if text.endswith(".toml") else f"{text}.toml")
    if packaged.is_file():
        return packaged
    if candidate.is_file():
        return candidate
    raise UsageError(
        f"recipe '{name}' not found: not a file, a run directory or a packaged recipe "
        f"({', '.join(packaged_recipes())})"
    )


def config_hash(data: Any) -> str:
    """A short stable hash of a resolved config (for provenance)."""
    import hashlib

    blob = json.dumps(unstructure(data), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def preset_options(base: type, name: str, doc: str = "", **defaults: Any) -> type:
    """A subclass of attrs options class `base` whose defaults are replaced by `defaults`.

    Lets one network class be registered under several paper names, each with the paper's
    settings as defaults, while validation (field validators, ``__attrs_post_init__``) is shared.
    """
    attrs.resolve_types(base)
    unknown = set(defaults) - {f.name for f in attrs.fields(base)}
    if unknown:
        raise TypeError(f"{base.__name__} has no fields {sorted(unknown)}")
    fields = {
        f.name: attrs.field(default=defaults.get(f.name, f.default), validator=f.validator, type=f.type,
                            metadata=f.metadata)
        for f in attrs.fields(base)
    }
    cls = attrs.make_class(name, fields, bases=(base,), frozen=True, kw_only=True, slots=True)
    cls.__doc__ = doc or base.__doc__
    cls.__module__ = base.__module__
    return cls
