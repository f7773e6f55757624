"""Paper-table specs: the TOML format `coop repro` reads (docs/repro.md), loaded and expanded.

A `TableSpec` names the paper's rows, columns and published numbers, the runs that produce our
numbers (a recipe plus overrides per scale, optionally a sweep generating one run per
combination of values) and the cells (which field of which evaluation of which runs, reduced
how).  `plan_runs` and `plan_cells` expand the templates into concrete runs and cells at one
scale; nothing here trains or reads results (that is `coopcore.repro` and `coopcore.report`).
"""
from __future__ import annotations

import fnmatch
import itertools
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import attrs

from .config import read_recipe_data, structure
from .errors import ConfigError, UsageError

SCALES = ("smoke", "short", "full")
Aggregate = Literal["single", "mean", "mean_sd", "mean_se"]
# A sweep: a table of lists (every combination of the values) or a list of tables (exactly
# these combinations, for values that vary together, e.g. a size and its iteration count).
# In a table of lists, a list of tables is a group of variables that vary together inside the
# product: `{ lr = [2e-3, 3e-3], method = [{ method = "gan", n_coop = 0 }, { method = "coopinit",
# n_coop = 750000 }] }` gives four runs, each with the variables lr, method and n_coop (the
# group's own name is not a variable unless one of its tables sets it).
Sweep = Union[dict[str, tuple[Any, ...]], tuple[dict[str, Any], ...]]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@attrs.frozen
class PublishedCell:
    """A number printed in the paper, in true units; `error` is the paper's +- where given."""

    row: str
    column: str
    value: float
    error: Optional[float] = None
    note: str = ""


@attrs.frozen
class EvalSpec:
    """A metric the harness computes on a run's final model (recorded in its evaluations.jsonl)."""

    label: str
    name: str
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ScaleSpec:
    """How a run differs at one scale: another recipe, more overrides, another sweep or evals."""

    recipe: str = ""
    set: tuple[str, ...] = ()
    sweep: Optional[Sweep] = None
    eval: Optional[tuple[EvalSpec, ...]] = None
    data_root: Optional[str] = None
    description: str = ""


@attrs.frozen
class RunSpec:
    """One run, or a family of runs when `sweep` is given (the id then holds placeholders)."""

    id: str
    recipe: str = ""
    set: tuple[str, ...] = ()
    sweep: Sweep = attrs.field(factory=dict)
    train: bool = True
    use: str = ""
    data_root: str = ""
    eval: tuple[EvalSpec, ...] = ()
    scales: dict[str, ScaleSpec] = attrs.field(factory=dict)


@attrs.frozen
class CellSpec:
    """Where one cell's number comes from (templated by `for`)."""

    row: str
    column: str
    run: str
    metric: str
    field: str = "value"
    error: str = "std_error"
    select: Literal["max", "min", "last"] = "last"
    aggregate: Aggregate = "single"
    format: str = ""
    exponent: int = 0
    for_: Sweep = attrs.field(factory=dict)


@attrs.frozen
class StudySpec:
    """A human perceptual study (TPAMI Table 4): which runs' samples raters compare."""

    methods: dict[str, str]
    images_per_method: int = 16
    column: str = ""


@attrs.frozen
class TableSpec:
    paper: str
    table: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    scales: tuple[str, ...] = SCALES
    published: tuple[PublishedCell, ...] = ()
    runs: tuple[RunSpec, ...] = ()
    cells: tuple[CellSpec, ...] = ()
    study: Optional[StudySpec] = None
    notes: str = ""
    value_format: str = "{:.2f}"
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.paper}:{self.table}"

    def run_spec(self, run_id: str) -> RunSpec:
        """The run (family) whose expansion at some scale yields `run_id`."""
        for scale in self.scales:
            for planned in plan_runs(self, scale):
                if planned.id == run_id:
                    return planned.spec
        raise UsageError(f"table {self.key} has no run '{run_id}'")


# -- loading ------------------------------------------------------------------------------------
def _rename_for(data: Any) -> Any:
    """TOML's `for` is a Python keyword: the attrs field is `for_`."""
    if isinstance(data, dict) and "cells" in data:
        data = dict(data)
        data["cells"] = [
            {("for_" if k == "for" else k): v for k, v in c.items()} if isinstance(c, dict) else c
            for c in data["cells"]
        ]
    return data


def load_table_spec(path: Path) -> TableSpec:
    """Read, check and return a spec; a broken spec is a `ConfigError` naming file and field."""
    path = Path(path)
    data = _rename_for(read_recipe_data(path))
    data.setdefault("source", str(path))
    spec = structure(TableSpec, data, "", str(path))
    check_spec(spec, str(path))
    return spec


def register_table_files(registry: Any, package: str) -> None:
    """Register every ``*.toml`` spec in `package` (a plugin's package data) as ``paper:table``."""
    folder = Path(str(resources.files(package)))
    for path in sorted(folder.glob("*.toml")):
        spec = load_table_spec(path)
        registry.add(spec.key, _factory(path), summary=spec.title)


def _factory(path: Path):
    def factory(options: Any) -> TableSpec:
        return load_table_spec(path)

    factory.__doc__ = f"table spec {path.name}"
    return factory


def check_spec(spec: TableSpec, source: str) -> None:
    """Cross-field checks: scales, rows/columns of cells and published numbers, run references."""
    for s in spec.scales:
        if s not in SCALES:
            raise ConfigError("scales", f"unknown scale {s!r}; allowed: {', '.join(SCALES)}", source)
    seen: set[str] = set()
    for i, run in enumerate(spec.runs):
        where = f"runs[{i}]"
        if run.id in seen:
            raise ConfigError(f"{where}.id", f"duplicate run id '{run.id}'", source)
        seen.add(run.id)
        if run.use:
            if run.recipe or run.set or run.data_root or not run.train or any(
                    sc.recipe or sc.set or sc.data_root is not None for sc in run.scales.values()):
                raise ConfigError(f"{where}.use", "a run that uses another table's run takes no recipe, set, "
                                  "data_root or train of its own (only sweep, eval and per-scale sweep/eval)", source)
            if not re.fullmatch(r"[^:/]+:[^:/]+/[^/]+", run.use):
                raise ConfigError(f"{where}.use", f"expected 'paper:table/run-id', got {run.use!r}", source)
        elif not run.recipe and not all(run.scales.get(s, ScaleSpec()).recipe for s in spec.scales):
            raise ConfigError(f"{where}.recipe", "is required (or a recipe at every scale)", source)
        for s in run.scales:
            if s not in spec.scales:
                raise ConfigError(f"{where}.scales.{s}", f"the table offers only {', '.join(spec.scales)}", source)
        missing = [s for s in spec.scales if s != "full" and s not in run.scales]
        if missing and not run.use:
            raise ConfigError(f"{where}.scales", f"run '{run.id}' has no [runs.scales.{missing[0]}] although the "
                              f"table offers scale '{missing[0]}' (a scale is never filled from the full recipe)",
                              source)
        for s in spec.scales:
            sweep = _sweep(run, s)
            variables = _variables(sweep)
            _check_sweep(sweep, where, source)
            for name in _PLACEHOLDER.findall(run.id):
                if name not in variables:
                    raise ConfigError(f"{where}.id", f"placeholder {{{name}}} is not a sweep variable at scale "
                                      f"'{s}' (sweep: {', '.join(variables) or 'none'})", source)
    for s in spec.scales:
        ids = [p.id for p in plan_runs(spec, s)]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ConfigError("runs", f"run id '{repeated[0]}' occurs more than once at scale '{s}': a swept run's "
                              "id must tell its runs apart (hold the varying sweep variables)", source)
    for p in spec.published:
        if p.row not in spec.rows or p.column not in spec.columns:
            raise ConfigError("published", f"({p.row!r}, {p.column!r}) is not in the table's rows/columns", source)
    full_ids = {r.id for r in plan_runs(spec, spec.scales[-1])} if spec.runs else set()
    for i, c in enumerate(spec.cells):
        for cell in expand_cell(c):
            where = f"cells[{i}]"
            if cell.row not in spec.rows:
                raise ConfigError(f"{where}.row", f"{cell.row!r} is not one of the table's rows", source)
            if cell.column not in spec.columns:
                raise ConfigError(f"{where}.column", f"{cell.column!r} is not one of the table's columns", source)
            matched = [r for r in full_ids if fnmatch.fnmatchcase(r, cell.run)]
            if not matched:
                raise ConfigError(f"{where}.run", f"{cell.run!r} matches no run at scale '{spec.scales[-1]}' "
                                  f"(runs: {', '.join(sorted(full_ids)) or 'none'})", source)
            if cell.aggregate == "single" and (len(matched) > 1 or _is_pattern(cell.run)):
                raise ConfigError(f"{where}.aggregate", f"{cell.run!r} selects several runs: choose mean, mean_sd "
                                  "or mean_se", source)
            try:
                (cell.format or spec.value_format).format(1.0)
            except (ValueError, IndexError, KeyError) as exc:
                raise ConfigError(f"{where}.format", f"not a Python number format: {exc}", source) from None
    if spec.study is not None:
        for method, run_id in spec.study.methods.items():
            if run_id not in full_ids:
                raise ConfigError(f"study.methods.{method}", f"names no run ('{run_id}')", source)


def _is_pattern(text: str) -> bool:
    return any(ch in text for ch in "*?[")


# -- expansion ----------------------------------------------------------------------------------
def substitute(value: Any, variables: Mapping[str, Any]) -> Any:
    """Replace ``{name}`` placeholders of `variables` in strings (recursively in lists/tables).

    A string that is exactly one placeholder becomes the variable's value itself (so a sweep
    over integers stays integers); other braces (TOML inline tables) are left alone."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(variables[m.group(1)]) if m.group(1) in variables else m.group(0), value)
    if isinstance(value, Mapping):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(substitute(v, variables) for v in value)
    return value


def _combinations(sweep: Sweep) -> list[dict[str, Any]]:
    if not isinstance(sweep, Mapping):
        return [dict(combination) for combination in sweep]
    names = list(sweep)
    out = []
    for values in itertools.product(*(sweep[n] for n in names)):
        combination: dict[str, Any] = {}
        for name, value in zip(names, values):
            combination.update(value if isinstance(value, Mapping) else {name: value})
        out.append(combination)
    return out


def _is_group(values: Any) -> bool:
    """A product sweep's entry whose values are tables: variables that vary together."""
    return isinstance(values, (list, tuple)) and bool(values) and all(isinstance(v, Mapping) for v in values)


def _entry_variables(name: str, values: Any) -> list[str]:
    """The variables one entry of a product sweep sets: a group's keys (sorted), else its name."""
    return sorted({k for t in values for k in t}) if _is_group(values) else [name]


def _variables(sweep: Sweep) -> list[str]:
    if isinstance(sweep, Mapping):
        names: list[str] = []
        for name, values in sweep.items():
            for v in _entry_variables(name, values):
                if v not in names:
                    names.append(v)
        return names
    return sorted({name for combination in sweep for name in combination})


def _check_sweep(sweep: Sweep, where: str, source: str) -> None:
    """The tables of one group (or of a list-of-tables sweep) set the same variables, and no
    variable is set twice in a product."""
    groups = [list(sweep)] if not isinstance(sweep, Mapping) else [v for v in sweep.values() if _is_group(v)]
    for tables in groups:
        keys = {frozenset(t) for t in tables}
        if len(keys) > 1:
            raise ConfigError(f"{where}.sweep", "every table of a list-of-tables sweep (or of a group inside a "
                              f"product) must set the same variables ({', '.join(_variables(tuple(tables)))})",
                              source)
    if isinstance(sweep, Mapping):
        seen: list[str] = []
        for name, values in sweep.items():
            if isinstance(values, (list, tuple)) and any(isinstance(v, Mapping) for v in values) \
                    and not _is_group(values):
                raise ConfigError(f"{where}.sweep.{name}", "mixes tables and plain values: a group must be "
                                  "a list of tables only", source)
            own = _entry_variables(name, values)
            twice = [v for v in own if v in seen]
            if twice:
                raise ConfigError(f"{where}.sweep", f"variable '{twice[0]}' is set by two entries of the "
                                  "product", source)
            seen.extend(own)


def _sweep(run: RunSpec, scale: str) -> Sweep:
    sc = run.scales.get(scale)
    return sc.sweep if sc is not None and sc.sweep is not None else run.sweep


@attrs.frozen
class PlannedRun:
    """One concrete run of a table at one scale."""

    id: str
    spec: RunSpec
    recipe: str
    overrides: tuple[str, ...]
    train: bool
    evals: tuple[EvalSpec, ...]
    data_root: str
    use: str
    variables: dict[str, Any]
    description: str = ""

    @property
    def used_table(self) -> str:
        return self.use.split("/", 1)[0]

    @property
    def used_run(self) -> str:
        return self.use.split("/", 1)[1]


def plan_runs(spec: TableSpec, scale: str) -> list[PlannedRun]:
    """Every concrete run of `spec` at `scale` (sweeps expanded, scale overrides applied)."""
    if scale not in spec.scales:
        raise UsageError(f"table {spec.key} has no scale '{scale}'; it offers {', '.join(spec.scales)}")
    planned = []
    for run in spec.runs:
        sc = run.scales.get(scale, ScaleSpec())
        for variables in _combinations(_sweep(run, scale)):
            evals = run.eval if sc.eval is None else sc.eval
            if run.use:
                planned.append(PlannedRun(
                    id=substitute(run.id, variables), spec=run, recipe="", overrides=(), train=False,
                    evals=tuple(EvalSpec(e.label and substitute(e.label, variables), e.name,
                                         substitute(dict(e.options), variables)) for e in evals),
                    data_root="", use=substitute(run.use, variables), variables=variables,
                    description=sc.description))
                continue
            planned.append(PlannedRun(
                id=substitute(run.id, variables),
                spec=run,
                recipe=substitute(sc.recipe or run.recipe, variables),
                # An override that a sweep variable leaves empty is dropped, so a group can give
                # a setting to some of its variants only ({ extra = "" } for the others).
                overrides=tuple(o for o in substitute(list(run.set) + list(sc.set), variables) if o != ""),
                train=run.train,
                evals=tuple(EvalSpec(e.label and substitute(e.label, variables), e.name,
                                     substitute(dict(e.options), variables)) for e in evals),
                data_root=substitute(sc.data_root if sc.data_root is not None else run.data_root, variables),
                use="",
                variables=variables,
                description=sc.description,
            ))
    return planned


def expand_cell(cell: CellSpec) -> list[CellSpec]:
    """A templated cell expanded over its `for` values (itself when it has none)."""
    if not cell.for_:
        return [cell]
    out = []
    for variables in _combinations(cell.for_):
        out.append(attrs.evolve(
            cell, row=substitute(cell.row, variables), column=substitute(cell.column, variables),
            run=substitute(cell.run, variables), metric=substitute(cell.metric, variables),
            field=substitute(cell.field, variables), error=substitute(cell.error, variables), for_={},
        ))
    return out


def plan_cells(spec: TableSpec) -> list[CellSpec]:
    return [c for cell in spec.cells for c in expand_cell(cell)]


def quoted_rows(spec: TableSpec) -> list[str]:
    """Rows with published numbers that no cell computes: shown from the paper, labelled so."""
    computed = {c.row for c in plan_cells(spec)}
    return [r for r in spec.rows if r not in computed and any(p.row == r for p in spec.published)]
