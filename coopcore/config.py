"""Typed configuration: attrs classes, TOML recipes and path-aware validation.

`structure(cls, data, path)` turns plain TOML/JSON data into an attrs instance, checking every
key against the class: unknown keys, wrong types and values rejected by a validator raise a
`ConfigError` naming the dotted key path (``models.descriptor.options.channels[1]``).  The same
function validates the per-component ``options`` tables against the options class each
plugin registered, so third-party options are checked as strictly as the core's.
"""
from __future__ import annotations

import copy
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import attrs

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_MISSING = object()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "none"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        if origin is tuple:
            return f"list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if attrs.has(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


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
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, source)
            except ConfigError as exc:
                errors.append(exc)
        raise fail(_type_name(tp))
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
            raise fail(_type_name(tp))
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and args:
            if len(value) != len(args):
                raise ConfigError(path, f"expected {_type_name(tp)}, got {len(value)} values", source)
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
            raise fail(_type_name(tp))
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
                raise ConfigError(f"{prefix}{name}", f"is required ({_type_name(fld.type)})", source)
            continue
        kwargs[name] = _convert(fld.type, data[name], f"{prefix}{name}", source)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
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

    name: str = "run"
    seed: int = attrs.field(default=0, validator=non_negative)
    iterations: int = attrs.field(default=1000, validator=positive)
    device: str = attrs.field(default="auto", validator=_device)
    log_every: int = attrs.field(default=10, validator=positive)
    sample_every: int = attrs.field(default=100, validator=non_negative)
    sample_count: int = attrs.field(default=64, validator=positive)
    checkpoint_every: int = attrs.field(default=100, validator=non_negative)
    keep_checkpoints: int = attrs.field(default=2, validator=positive)
    eval_every: int = attrs.field(default=0, validator=non_negative)
    deterministic: bool = False
    threads: int = attrs.field(default=0, validator=non_negative)
    tensorboard: bool = True


@attrs.frozen
class DataConfig:
    """The training dataset: a registered dataset name, its options and the batching."""

    name: str
    batch_size: int = attrs.field(validator=positive)
    shuffle: bool = True
    drop_last: bool = True
    root: str = ""
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ComponentConfig:
    """A registered component by name plus its options table."""

    name: str
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class OptimizerConfig:
    """The optimiser of one model role (same key as under [models])."""

    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = attrs.field(default=1e-3, validator=positive)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = attrs.field(default=1e-8, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    momentum: float = attrs.field(default=0.0, validator=non_negative)
    lr_decay: float = attrs.field(default=1.0, validator=in_range(0.0, 1.0))
    lr_decay_every: int = attrs.field(default=0, validator=non_negative)

    def __attrs_post_init__(self) -> None:
        for b in self.betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"'betas' must lie in [0, 1), got {list(self.betas)!r}")


@attrs.frozen
class MetricConfig:
    """A metric evaluated during training (every `run.eval_every` iterations) and at the end."""

    name: str
    label: str = ""
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ExperimentConfig:
    """A whole recipe."""

    run: RunConfig
    data: DataConfig
    models: dict[str, ComponentConfig]
    objective: ComponentConfig
    samplers: dict[str, ComponentConfig] = attrs.field(factory=dict)
    optimizers: dict[str, OptimizerConfig] = attrs.field(factory=dict)
    eval: list[MetricConfig] = attrs.field(factory=list)
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


def load_experiment(path: Path, overrides: list[str] = ()) -> ExperimentConfig:  # type: ignore[assignment]
    data = apply_overrides(read_recipe_data(path), list(overrides))
    return structure(ExperimentConfig, data, "", str(path))


def experiment_from_data(data: Mapping[str, Any], source: str = "<config>") -> ExperimentConfig:
    return structure(ExperimentConfig, data, "", source)


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
        f.name: attrs.field(default=defaults.get(f.name, f.default), validator=f.validator, type=f.type)
        for f in attrs.fields(base)
    }
    cls = attrs.make_class(name, fields, bases=(base,), frozen=True, kw_only=True, slots=True)
    cls.__doc__ = doc or base.__doc__
    cls.__module__ = base.__module__
    return cls
