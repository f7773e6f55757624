"""The options reference and the recipe JSON Schema, generated from the registries.

Nothing here is kept by hand: every component's family, name, owning plugin and summary come
from its registry entry, and every option's type, default and validators from the attrs
options class the component was registered with.  `coop plugins --options NAME` prints one
component, `coop plugins --schema` the JSON Schema of a recipe, and the documentation site
renders `reference_markdown` at build time (``docs/hooks.py``).

**Documenting an option.**  The description of a field is, in order of preference:

1. ``attrs.field(..., metadata={"doc": "..."})`` (the key is `DOC_KEY`), the explicit form;
2. an attribute docstring, a string literal on the line after the field (as mkdocstrings
   reads it);
3. the comment block directly above the field, plus a comment on the field's own line.

Options classes derived with `coopcore.preset_options` inherit their base's descriptions.
Validators are described in words: the core's (`positive` "> 0", `non_negative` ">= 0",
`in_range(a, b)` "in [a, b]", ...), attrs' own (`attrs.validators.in_`, `ge`, `optional`, ...),
and for any other validator the first line of its docstring (so give your validators one),
else its name.
"""
from __future__ import annotations

import ast
import difflib
import functools
import html
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import attrs

from .config import type_name
from .families import FAMILY_NAMES

#: The `attrs.field` metadata key holding an option's description.
DOC_KEY = "doc"

#: Which registry families a recipe section's ``name`` is looked up in.
RECIPE_SLOTS: dict[str, tuple[str, ...]] = {
    "data": ("dataset",),
    "models": ("energy", "generator", "encoder"),
    "objective": ("objective",),
    "samplers": ("sampler",),
    "eval": ("metric",),
}

_JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


# ---------------------------------------------------------------------------------------
# records
@dataclass
class OptionInfo:
    """One field of an options class, described for the reference."""

    name: str
    type: str
    default: Any  # the default as plain JSON data; meaningless when `required`
    required: bool
    constraints: list[str]
    doc: str

    def default_text(self) -> str:
        """The default in recipe (TOML) syntax, or ``(required)``."""
        return "(required)" if self.required else _toml(self.default)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "required": self.required,
            "default": None if self.required else self.default, "constraints": self.constraints, "doc": self.doc,
        }


@dataclass
class ComponentInfo:
    """One registered component: where it comes from and what it accepts."""

    family: str
    name: str
    owner: str
    summary: str
    options_class: str
    doc: str
    options: list[OptionInfo] = field(default_factory=list)
    cross_field_checks: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family, "name": self.name, "owner": self.owner, "summary": self.summary,
            "options_class": self.options_class, "doc": self.doc, "cross_field_checks": self.cross_field_checks,
            "options": [o.as_dict() for o in self.options],
        }


# ---------------------------------------------------------------------------------------
# types, defaults and validators in words
def _plain(value: Any) -> Any:
    """A default as JSON-able data (tuples become lists, attrs instances tables)."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return repr(value)


def _toml(value: Any) -> str:
    """Plain data in TOML syntax (None as the recipes' ``"none"``)."""
    value = _plain(value)
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}" if value else "{}"
    return repr(value)


def _closure(fn: Any) -> dict[str, Any]:
    try:
        return dict(inspect.getclosurevars(fn).nonlocals)
    except (TypeError, ValueError):
        return {}


def describe_validator(validator: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """A validator in words (``["> 0"]``) and as JSON Schema constraints (``[{"exclusiveMinimum": 0}]``).

    Constraints are only given where they are exact; the words are always given.
    """
    from . import config

    if validator is None:
        return [], []
    known = {
        "positive": (["> 0"], [{"exclusiveMinimum": 0}]),
        "non_negative": ([">= 0"], [{"minimum": 0}]),
        "optional_positive": (["> 0 or none"], [{"exclusiveMinimum": 0}]),
        "all_positive": (["each > 0"], [{"items": {"exclusiveMinimum": 0}}]),
        "_device": (["auto, cpu, cuda, cuda:N or mps"], [{"pattern": "^(auto|cpu|cuda|mps|cuda:[0-9]+)$"}]),
    }
    for name, described in known.items():
        if validator is getattr(config, name, None):
            return described
    cls_name = type(validator).__name__
    if cls_name == "_AndValidator":
        words, schemas = [], []
        for v in validator._validators:  # noqa: SLF001 - attrs exposes no public accessor
            w, s = describe_validator(v)
            words += w
            schemas += s
        return words, schemas
    if cls_name == "_OptionalValidator":
        w, s = describe_validator(validator.validator)
        nullable = [{"type": "null"}, {"const": "none"}]
        return [f"{' and '.join(w) or 'checked'} (or none)"], [{"anyOf": nullable + [c]} for c in s]
    if cls_name == "_InValidator":
        opts = list(validator.options)
        return [f"one of {', '.join(_toml(o) for o in opts)}"], [{"enum": _plain(opts)}]
    if cls_name == "_InstanceOfValidator":
        tp = validator.type
        names = " or ".join(type_name(t) for t in tp) if isinstance(tp, tuple) else type_name(tp)
        return [f"a {names}"], []
    if cls_name == "_NumberValidator":
        op = validator.compare_op
        key = {">": "exclusiveMinimum", ">=": "minimum", "<": "exclusiveMaximum", "<=": "maximum"}.get(op)
        return [f"{op} {validator.bound}"], [{key: validator.bound}] if key else []
    if cls_name == "_MinLengthValidator":
        return [f"at least {validator.min_length} items"], [{"minItems": validator.min_length}]
    if cls_name == "_MaxLengthValidator":
        return [f"at most {validator.max_length} items"], [{"maxItems": validator.max_length}]
    if cls_name == "_DeepIterable":
        w, s = describe_validator(validator.member_validator)
        return [f"each: {x}" for x in w], [{"items": c} for c in s]
    free = _closure(validator)
    if {"low", "high"} <= set(free):
        low, high = free["low"], free["high"]
        return [f"in [{low}, {high}]"], [{"minimum": low, "maximum": high}]
    if "allowed" in free and isinstance(free["allowed"], (tuple, list)):
        opts = list(free["allowed"])
        return [f"one of {', '.join(_toml(o) for o in opts)}"], [{"enum": _plain(opts)}]
    if inspect.isfunction(validator) or inspect.ismethod(validator):
        doc = inspect.getdoc(validator)
    else:
        doc = type(validator).__dict__.get("__doc__")
    if doc and doc.strip():
        text = " ".join(doc.strip().split("\n\n")[0].split()).rstrip(".")
        # "attrs validator: ..." / "Validator: ..." is how several validators introduce themselves
        if text.lower().startswith(("attrs validator", "validator")) and ":" in text:
            text = text.split(":", 1)[1].strip()
        return [text], []
    name = getattr(validator, "__name__", type(validator).__name__).lstrip("_").replace("_", " ")
    return [f"checked by {name}"], []


# ---------------------------------------------------------------------------------------
# field descriptions from metadata, attribute docstrings and comments
@functools.lru_cache(maxsize=None)
def _source_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings and comments of the fields defined in `cls`'s own source."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    src = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(src)
        comments = {
            tok.start[0]: tok.string.lstrip("#").strip()
            for tok in tokenize.generate_tokens(io.StringIO(src).readline)
            if tok.type == tokenize.COMMENT
        }
    except (SyntaxError, tokenize.TokenError):
        return {}
    if not tree.body or not isinstance(tree.body[0], ast.ClassDef):
        return {}
    src_lines = src.splitlines()

    def own_line(lineno: int) -> bool:
        return src_lines[lineno - 1].lstrip().startswith("#")

    def useful(text: str) -> bool:
        return bool(text) and not text.startswith(("noqa", "type:", "pragma", "pylint", "-", "="))

    docs: dict[str, str] = {}
    body = tree.body[0].body
    for i, stmt in enumerate(body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
            docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
            continue
        above = []
        ln = stmt.lineno - 1
        while ln >= 1 and ln in comments and own_line(ln):
            above.insert(0, comments[ln])
            ln -= 1
        trailing = [
            comments[ln] for ln in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            if ln in comments and not own_line(ln)
        ]
        text = " ".join(t for t in above + trailing if useful(t))
        if text:
            docs[stmt.target.id] = text
    return docs


def option_doc(cls: type, name: str) -> str:
    """The description of field `name` of options class `cls` (see the module docstring)."""
    for klass in cls.__mro__:
        if not attrs.has(klass):
            continue
        fld = getattr(attrs.fields(klass), name, None)
        if fld is None:
            continue
        doc = fld.metadata.get(DOC_KEY) if fld.metadata else None
        if doc:
            return inspect.cleandoc(str(doc))
        doc = _source_docs(klass).get(name)
        if doc:
            return doc
    return ""


def describe_options(cls: type) -> list[OptionInfo]:
    """Every field of attrs class `cls` as an `OptionInfo`."""
    attrs.resolve_types(cls)
    out = []
    for f in attrs.fields(cls):
        default = f.default
        required = default is attrs.NOTHING
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = "(computed from the other options)" if default.takes_self else default.factory()
        words, _ = describe_validator(f.validator)
        out.append(OptionInfo(
            name=f.name, type=type_name(f.type), default=None if required else _plain(default), required=required,
            constraints=words, doc=option_doc(cls, f.name),
        ))
    return out


def _first_line(text: Optional[str]) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


def _class_doc(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    return inspect.cleandoc(doc) if doc else ""


# ---------------------------------------------------------------------------------------
# components
def _builtin_owners(registries: Any) -> set[str]:
    return {p.name for p in getattr(registries, "plugins", []) if getattr(p, "builtin", False)}


def describe_entry(family: str, entry: Any) -> ComponentInfo:
    """One registry entry as a `ComponentInfo`."""
    cls = entry.options
    return ComponentInfo(
        family=family, name=entry.name, owner=entry.owner, summary=entry.summary or "",
        options_class=f"{cls.__module__}.{cls.__qualname__}", doc=_class_doc(cls),
        options=describe_options(cls), cross_field_checks=hasattr(cls, "__attrs_post_init__"),
    )


def components(registries: Any, *, builtin_only: bool = False) -> list[ComponentInfo]:
    """Every registered component, by family then name.

    `builtin_only` keeps the components of plugins shipped with coopnets (what the
    documentation site describes); otherwise installed third-party plugins are included.
    """
    keep = _builtin_owners(registries) if builtin_only else None
    out = []
    for family in FAMILY_NAMES:
        for entry in registries.family(family).entries():
            if keep is None or entry.owner in keep:
                out.append(describe_entry(family, entry))
    return out


def find_component(registries: Any, name: str) -> list[ComponentInfo]:
    """The components registered as `name` (in any family; ``family:name`` picks one family).

    Raises `coopcore.UsageError` naming close matches when there is none.
    """
    from .errors import UsageError

    family = None
    if ":" in name and name.split(":", 1)[0] in FAMILY_NAMES:
        family, name = name.split(":", 1)
    found = []
    all_names: set[str] = set()
    for fam in FAMILY_NAMES:
        reg = registries.family(fam)
        all_names.update(reg)
        if (family is None or fam == family) and name in reg:
            found.append(describe_entry(fam, reg.get(name)))
    if found:
        return found
    close = difflib.get_close_matches(name, sorted(all_names), n=6, cutoff=0.6)
    close += [n for n in sorted(all_names) if name and name.lower() in n.lower() and n not in close][: 6 - len(close)]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    where = f"{family} " if family else ""
    raise UsageError(f"no registered {where}component named '{name}'.{hint} Run `coop plugins` to list them all.")


def options_text(info: ComponentInfo) -> str:
    """One component as plain text (what `coop plugins --options NAME` prints)."""
    lines = [f"{info.name}  ({info.family}, from plugin '{info.owner}')"]
    if info.summary:
        lines.append(f"  {info.summary}")
    lines.append(f"  options class: {info.options_class}")
    if info.doc and info.doc != info.summary:
        lines += ["    " + ln if ln else "" for ln in info.doc.splitlines()]
    lines.append("")
    if not info.options:
        lines.append("  (no options)")
    for o in info.options:
        head = f"  {o.name}: {o.type} = {o.default_text()}"
        if o.constraints:
            head += f"   [{'; '.join(o.constraints)}]"
        lines.append(head)
        for para in (o.doc or "(undocumented)").splitlines():
            lines += textwrap.wrap(para, 96, initial_indent="      ", subsequent_indent="      ") or [""]
    if info.cross_field_checks:
        lines += ["", "  Cross-field checks run when the options are built (__attrs_post_init__)."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Markdown
def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    # a code span in a table cell: no pipes inside (Python-Markdown splits on them)
    return f"<code>{_cell(text)}</code>"


def options_table(options: list[OptionInfo]) -> list[str]:
    """The Markdown table of a list of options."""
    if not options:
        return ["No options."]
    lines = ["| option | type | default | constraint | description |", "|---|---|---|---|---|"]
    for o in options:
        lines.append(
            f"| <code>{_cell(o.name)}</code> | {_cell(o.type)} | {_code(o.default_text()) if not o.required else '(required)'} "
            f"| {_cell('; '.join(o.constraints))} | {_cell(o.doc)} |"
        )
    return lines


def _anchor(family: str, name: str) -> str:
    return f"{family}-{name}".replace(".", "-").replace(":", "-").replace("_", "-").lower()


def recipe_classes() -> list[type]:
    """The attrs classes of the recipe file, from `ExperimentConfig` down."""
    from .config import ExperimentConfig

    seen: list[type] = []

    def walk(tp: Any) -> None:
        if attrs.has(tp):
            if tp in seen:
                return
            seen.append(tp)
            attrs.resolve_types(tp)
            for f in attrs.fields(tp):
                walk(f.type)
            return
        for arg in typing.get_args(tp):
            walk(arg)

    walk(ExperimentConfig)
    return seen


def _slot_doc(key: str) -> str:
    families = RECIPE_SLOTS[key]
    return (f"Its `name` is looked up in the {' / '.join(families)} "
            f"registr{'ies' if len(families) > 1 else 'y'}; `options` follow that component's options class.")


def _recipe_options(cls: type) -> list[OptionInfo]:
    """`describe_options`, plus for `ExperimentConfig` where each section's names come from."""
    from .config import ExperimentConfig

    infos = describe_options(cls)
    if cls is ExperimentConfig:
        for o in infos:
            if o.name in RECIPE_SLOTS:
                o.doc = f"{o.doc} {_slot_doc(o.name)}".strip()
    return infos


def reference_markdown(registries: Any, *, builtin_only: bool = True, title: str = "Options reference") -> str:
    """The options reference page: the recipe file's structure, then every component."""
    comps = components(registries, builtin_only=builtin_only)
    out = [
        f"# {title}",
        "",
        "Generated from the registries and the attrs options classes when this site is built "
        "(`coopcore.reference`); nothing on this page is written by hand.  On the command line, "
        "`coop plugins --options NAME` prints the same for one component (including those of "
        "installed third-party plugins) and `coop plugins --schema` the JSON Schema of a recipe "
        "([recipe.schema.json](recipe.schema.json)).",
        "",
        "Types are TOML types: a list is written `[1, 2]`, a table `{ key = value }`; TOML has no "
        "null, so an optional value is switched off with the string `\"none\"`.",
        "",
        "## The recipe file",
        "",
        "A recipe is a TOML file with the tables below; each component section names a registered "
        "component (`name`) and gives its `options` table, checked against that component's "
        "options class (see the sections after this one).",
        "",
    ]
    for cls in recipe_classes():
        out += [f"### `{cls.__name__}`", "", _class_doc(cls), ""]
        out += options_table(_recipe_options(cls)) + [""]
    out += ["Which registry each section's `name` is looked up in:", "",
            "| section | families |", "|---|---|"]
    out += [f"| `[{k}]` | {', '.join(v)} |" for k, v in RECIPE_SLOTS.items()]
    out.append("")
    by_family: dict[str, list[ComponentInfo]] = {}
    for c in comps:
        by_family.setdefault(c.family, []).append(c)
    out += ["## Components", ""]
    for family in FAMILY_NAMES:
        items = by_family.get(family, [])
        if not items:
            continue
        out += [f"- [{family}](#family-{family}): " + ", ".join(
            f"[`{c.name}`](#{_anchor(c.family, c.name)})" for c in items)]
    out.append("")
    for family in FAMILY_NAMES:
        items = by_family.get(family, [])
        if not items:
            continue
        out += [f"## Family `{family}` {{ #family-{family} }}", ""]
        for c in items:
            out += [f"### `{c.name}` {{ #{_anchor(c.family, c.name)} }}", ""]
            out += [f"*{_cell(c.summary)}*" if c.summary else "", ""]
            out += [f"Plugin `{c.owner}`; options class `{c.options_class}`.", ""]
            if c.doc and c.doc != c.summary:
                out += [c.doc, ""]
            out += options_table(c.options) + [""]
            if c.cross_field_checks:
                out += ["Cross-field checks run when the options are built (`__attrs_post_init__`).", ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------
# JSON Schema
def type_schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of values of annotation `tp`, as the recipe loader accepts them."""
    if tp is Any or tp is object:
        return {}
    if tp is None or tp is type(None):
        return {"anyOf": [{"type": "null"}, {"const": "none"}]}
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        alts = [type_schema(a, defs) for a in args if a is not type(None)]
        if type(None) in args:
            alts += [{"type": "null"}, {"const": "none"}]
        return alts[0] if len(alts) == 1 else {"anyOf": alts}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp in (str, Path):
        return {"type": "string"}
    if origin in (tuple, list) or tp in (tuple, list):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "prefixItems": [type_schema(a, defs) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array", "items": type_schema(args[0], defs)} if args else {"type": "array"}
    if origin is dict or tp is dict:
        return {"type": "object", "additionalProperties": type_schema(args[1], defs)} if len(args) == 2 else {"type": "object"}
    if attrs.has(tp):
        key = f"{tp.__module__}.{tp.__qualname__}"
        if key not in defs:
            defs[key] = {}
            defs[key] = class_schema(tp, defs)
        return {"$ref": f"#/$defs/{key}"}
    return {}


def class_schema(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    """An attrs class as a closed JSON object schema (unknown keys rejected, as by the loader)."""
    attrs.resolve_types(cls)
    props: dict[str, Any] = {}
    required = []
    infos = {o.name: o for o in describe_options(cls)}
    for f in attrs.fields(cls):
        info = infos[f.name]
        schema = type_schema(f.type, defs)
        _, constraints = describe_validator(f.validator)
        if constraints:
            schema = {"allOf": [schema, *constraints]} if schema else {"allOf": constraints}
        desc = info.doc
        if info.constraints:
            desc = f"{desc} ({'; '.join(info.constraints)})".strip()
        if desc:
            schema = {**schema, "description": desc}
        if info.required:
            required.append(f.name)
        else:
            schema = {**schema, "default": info.default}
        props[f.name] = schema
    out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        out["required"] = required
    doc = _first_line(cls.__doc__)
    if doc:
        out["description"] = doc
    return out


def _slot_schema(base: dict[str, Any], families: tuple[str, ...], registries: Any, defs: dict[str, Any],
                 keep: Optional[set[str]]) -> dict[str, Any]:
    names: list[str] = []
    cases = []
    for family in families:
        for entry in registries.family(family).entries():
            if keep is not None and entry.owner not in keep:
                continue
            key = f"options.{family}.{entry.name}"
            defs[key] = class_schema(entry.options, defs)
            defs[key]["description"] = f"Options of {family} '{entry.name}' (plugin '{entry.owner}')"
            names.append(entry.name)
            cases.append({
                "if": {"properties": {"name": {"const": entry.name}}, "required": ["name"]},
                "then": {"properties": {"options": {"$ref": f"#/$defs/{key}"}}},
            })
    props = dict(base["properties"])
    props["name"] = {**props.get("name", {}), "enum": sorted(set(names)),
                     "description": f"A registered {' / '.join(families)} name (see `coop plugins`)."}
    return {**base, "properties": props, "allOf": cases}


def recipe_schema(registries: Any, *, builtin_only: bool = False) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a recipe file (and of a run's ``config.json``).

    The structure comes from `coopcore.config.ExperimentConfig`; each component section's
    ``options`` is checked against the options class of the component its ``name`` selects.
    Cross-field checks (``__attrs_post_init__``) and validators without a JSON equivalent are
    described but not expressed; the recipe loader remains the authority.
    """
    from .config import ExperimentConfig

    defs: dict[str, Any] = {}
    keep = _builtin_owners(registries) if builtin_only else None
    top = class_schema(ExperimentConfig, defs)
    attrs.resolve_types(ExperimentConfig)
    for f in attrs.fields(ExperimentConfig):
        families = RECIPE_SLOTS.get(f.name)
        if not families:
            continue
        tp = f.type
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is dict:
            item, wrap = args[1], (lambda s: {"type": "object", "additionalProperties": s})
        elif origin in (list, tuple):
            item, wrap = args[0], (lambda s: {"type": "array", "items": s})
        else:
            item, wrap = tp, (lambda s: s)
        if not attrs.has(item):
            continue
        base = class_schema(item, defs)
        slot = _slot_schema(base, families, registries, defs, keep)
        prop = top["properties"][f.name]
        extra = {k: prop[k] for k in ("description", "default") if k in prop}
        extra["description"] = f"{extra.get('description', '')} {_slot_doc(f.name)}".strip()
        top["properties"][f.name] = {**wrap(slot), **extra}
    return {
        "$schema": _JSON_SCHEMA_DIALECT,
        "$id": "https://coopnets.invalid/recipe.schema.json",
        "title": "coopnets recipe",
        **top,
        "$defs": defs,
    }


def schema_json(registries: Any, *, builtin_only: bool = False) -> str:
    """`recipe_schema` as indented JSON text."""
    return json.dumps(recipe_schema(registries, builtin_only=builtin_only), indent=2, sort_keys=False)


__all__ = [
    "DOC_KEY", "RECIPE_SLOTS", "ComponentInfo", "OptionInfo", "components", "describe_entry", "describe_options",
    "describe_validator", "find_component", "option_doc", "options_table", "options_text", "recipe_classes",
    "recipe_schema", "reference_markdown", "schema_json", "type_name", "type_schema",
]
