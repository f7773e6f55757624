"""Paper tables: machine-readable specs and the runner behind `coop repro`.

A `TableSpec` (a TOML file under paper_repro/, registered by a plugin) lists the table's
rows and columns, the published numbers, the runs this framework performs (a recipe plus
overrides per scale: smoke / short / full) and which evaluation of which run fills each cell,
selected as the best ("max"/"min") or the last evaluation.  The runner trains each run,
collects the cells and writes results.json, report.md (paper's number beside ours), sample
grids, learning curves and provenance.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import attrs
import torch

from .config import read_recipe_data, structure
from .errors import ConfigError, UsageError
from .rundir import git_commit

SCALES = ("smoke", "short", "full")


@attrs.frozen
class PublishedCell:
    row: str
    column: str
    value: float
    error: Optional[float] = None


@attrs.frozen
class ScaleSpec:
    """How one run is made at one scale: optionally another recipe, plus --set overrides."""

    recipe: str = ""
    set: tuple[str, ...] = ()
    description: str = ""


@attrs.frozen
class RunSpec:
    id: str
    recipe: str
    scales: dict[str, ScaleSpec] = attrs.field(factory=dict)


@attrs.frozen
class CellSpec:
    row: str
    column: str
    run: str
    metric: str
    select: Literal["max", "min", "last"] = "last"


@attrs.frozen
class TableSpec:
    paper: str
    table: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    published: tuple[PublishedCell, ...] = ()
    runs: tuple[RunSpec, ...] = ()
    cells: tuple[CellSpec, ...] = ()
    notes: str = ""
    value_format: str = "{:.2f}"

    def __attrs_post_init__(self) -> None:
        run_ids = {r.id for r in self.runs}
        for c in self.cells:
            if c.run not in run_ids:
                raise ValueError(f"cell ({c.row}, {c.column}) names unknown run '{c.run}'")
            if c.row not in self.rows or c.column not in self.columns:
                raise ValueError(f"cell ({c.row}, {c.column}) is not in the table's rows/columns")
        for p in self.published:
            if p.row not in self.rows or p.column not in self.columns:
                raise ValueError(f"published ({p.row}, {p.column}) is not in the table's rows/columns")

    @property
    def key(self) -> str:
        return f"{self.paper}:{self.table}"


def load_table_spec(path: Path) -> TableSpec:
    return structure(TableSpec, read_recipe_data(Path(path)), "", str(path))


def _select(evals: list[dict[str, Any]], label: str, how: str) -> Optional[dict[str, Any]]:
    mine = [e for e in evals if e["label"] == label]
    if not mine:
        return None
    if how == "last":
        return mine[-1]
    pick = max if how == "max" else min
    return pick(mine, key=lambda e: e["value"])


def _plot_curves(run_dir: Path, out: Path, title: str) -> Optional[Path]:
    metrics = run_dir / "metrics.jsonl"
    evals = run_dir / "evaluations.jsonl"
    if not metrics.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    keys = [k for k in ("loss_descriptor", "loss_generator", "energy_obs", "energy_syn", "recon_mse") if k in rows[0]]
    ev = [json.loads(line) for line in evals.read_text().splitlines()] if evals.exists() else []
    labels = sorted({e["label"] for e in ev})
    n = len(keys) + len(labels)
    fig, axes = plt.subplots(1, max(n, 1), figsize=(3.2 * max(n, 1), 2.8), squeeze=False)
    it = [r["iteration"] for r in rows]
    for ax, k in zip(axes[0], keys):
        ax.plot(it, [r[k] for r in rows])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
    for ax, lab in zip(axes[0][len(keys):], labels):
        pts = [(e["iteration"], e["value"]) for e in ev if e["label"] == lab]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def run_table(
    spec: TableSpec,
    scale: str,
    out: Path,
    registries: Any,
    *,
    device: Optional[str] = None,
    data_root: Optional[str] = None,
    seed: Optional[int] = None,
    extra_overrides: tuple[str, ...] = (),
    echo: Callable[[str], None] = print,
    progress: Optional[bool] = None,
) -> dict[str, Any]:
    """Train every run of `spec` at `scale` and write the table's results under `out`.

    Each run goes through the same path as `coop train` (`coopcore.experiment.resolve`, then
    `coopcore.run.train`) into ``out/runs/<run id>``.
    """
    from .experiment import resolve
    from .run import train

    if scale not in SCALES:
        raise UsageError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"output folder {out} already exists and is not empty; refusing to overwrite it. "
                         "Choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_records: dict[str, Any] = {}
    evals_by_run: dict[str, list[dict[str, Any]]] = {}
    for run in spec.runs:
        sc = run.scales.get(scale, ScaleSpec())
        overrides = list(sc.set) + list(extra_overrides)
        resolved = resolve(sc.recipe or run.recipe, overrides, seed=seed, device=device, registries=registries)
        run_dir = out / "runs" / run.id
        recipe_name = Path(resolved.source).name
        echo(f"[{spec.key} {scale}] run '{run.id}': {recipe_name}, {resolved.run.iterations} iterations")
        summary = train(resolved, run_dir, data_root=data_root, progress=progress, echo=echo, registries=registries)
        evals_by_run[run.id] = summary.evaluations
        device = torch.device(summary.device)
        run_records[run.id] = {
            "recipe": recipe_name,
            "overrides": overrides,
            "config_hash": resolved.hash(),
            "seed": resolved.run.seed,
            "iterations": summary.iterations,
            "images_seen": summary.images_seen,
            "seconds": round(summary.seconds, 2),
            "device": summary.device,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        }
        samples = sorted((run_dir / "samples").glob("*.png"))
        final = [p for p in samples if p.name.startswith(f"iter-{summary.iterations:08d}")]
        for p in final:
            shutil.copy(p, out / f"samples-{run.id}-{p.name.split('-', 2)[-1]}")
        _plot_curves(run_dir, out / f"curves-{run.id}.png", f"{spec.key} / {run.id} ({scale})")

    published = {(p.row, p.column): p for p in spec.published}
    cells = []
    for c in spec.cells:
        ev = _select(evals_by_run[c.run], c.metric, c.select)
        if ev is None:
            raise ConfigError("cells", f"run '{c.run}' produced no evaluation labelled '{c.metric}'")
        pub = published.get((c.row, c.column))
        cells.append({
            "row": c.row, "column": c.column, "run": c.run, "metric": c.metric, "select": c.select,
            "ours": ev["value"], "ours_error": ev.get("std_error"), "n_samples": ev["n_samples"],
            "backend": ev["backend"], "iteration": ev["iteration"], "details": ev.get("details", {}),
            "published": None if pub is None else pub.value,
            "published_error": None if pub is None else pub.error,
        })
    results = {
        "paper": spec.paper, "table": spec.table, "title": spec.title, "scale": scale,
        "cells": cells,
        "published": [attrs.asdict(p) for p in spec.published],
        "provenance": {
            "git_commit": git_commit(), "torch_version": str(torch.__version__), "runs": run_records,
            "seconds": round(time.time() - started, 1),
        },
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(render_report(spec, results))
    return results


def _fmt(spec: TableSpec, value: Optional[float], error: Optional[float]) -> str:
    if value is None:
        return ""
    text = spec.value_format.format(value)
    if error is not None:
        text += " ± " + spec.value_format.format(error)
    return text


def render_report(spec: TableSpec, results: dict[str, Any]) -> str:
    ours = {(c["row"], c["column"]): c for c in results["cells"]}
    pub = {(p.row, p.column): p for p in spec.published}
    head = ["", *[f"{col} (paper)" for col in spec.columns], *[f"{col} (ours, {results['scale']})" for col in spec.columns]]
    lines = [f"# {spec.paper} {spec.table}: {spec.title}", "", f"Scale: **{results['scale']}**.", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for row in spec.rows:
        cells = [row]
        for col in spec.columns:
            p = pub.get((row, col))
            cells.append(_fmt(spec, p.value, p.error) if p else "")
        for col in spec.columns:
            o = ours.get((row, col))
            cells.append(_fmt(spec, o["ours"], o["ours_error"]) if o else "—")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## How our numbers were computed", ""]
    for c in results["cells"]:
        lines.append(
            f"- {c['row']} / {c['column']}: metric `{c['metric']}` of run `{c['run']}` ({c['select']} over "
            f"evaluations, iteration {c['iteration']}), {c['n_samples']} samples, backend: {c['backend']}."
        )
    lines += ["", "## Provenance", ""]
    prov = results["provenance"]
    lines.append(f"- commit: `{prov['git_commit'] or 'unknown'}`, torch {prov['torch_version']}")
    for rid, r in prov["runs"].items():
        lines.append(
            f"- run `{rid}`: recipe `{r['recipe']}`, overrides {r['overrides']}, config hash `{r['config_hash']}`, "
            f"seed {r['seed']}, {r['iterations']} iterations ({r['images_seen']} images) in {r['seconds']} s "
            f"on {r['device']} ({r['device_name']})"
        )
    if spec.notes:
        lines += ["", "## Notes", "", spec.notes.strip()]
    if results["scale"] != "full":
        lines += ["", f"_Scale '{results['scale']}' is a reduced run: its numbers check the pipeline and "
                  "the trend, they are not the paper's protocol. Use `--scale full` for that._"]
    return "\n".join(lines) + "\n"
