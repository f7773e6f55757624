"""From finished runs to a table: the cells of `results.json` and the `report.md` beside the paper.

`table_results` reads each cell's evaluations (selected, reduced over runs) and puts the paper's
number, the difference and whether ours is within the paper's spread beside it; `render_report`
writes that as Markdown.  The schema of `results.json` is documented in docs/repro.md.
"""
from __future__ import annotations

import fnmatch
import math
import statistics
from typing import Any, Optional, Sequence

from .tablespec import CellSpec, PlannedRun, TableSpec, plan_cells, quoted_rows

RESULTS_SCHEMA = 2
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def field_value(record: Any, path: str) -> Any:
    """``details.per_class.3`` -> record["details"]["per_class"][3]; None where the path breaks."""
    value = record
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _select(evals: Sequence[dict[str, Any]], cell: CellSpec) -> Optional[dict[str, Any]]:
    mine = [e for e in evals if e.get("label") == cell.metric and _number(field_value(e, cell.field)) is not None]
    if not mine:
        return None
    if cell.select == "last":
        return mine[-1]
    pick = max if cell.select == "max" else min
    return pick(mine, key=lambda e: float(field_value(e, cell.field)))


def compute_cell(cell: CellSpec, planned: Sequence[PlannedRun], records: dict[str, dict[str, Any]],
                 evaluations: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One cell of results.json (see docs/repro.md), `status` ok / failed / missing."""
    out: dict[str, Any] = {
        "row": cell.row, "column": cell.column, "metric": cell.metric, "field": cell.field, "select": cell.select,
        "aggregate": cell.aggregate, "runs": [], "values": [], "ours": None, "ours_error": None,
        "iterations": [], "n_samples": [], "backend": [], "seeds": [], "status": "ok", "reason": "",
    }
    runs = [p.id for p in planned if fnmatch.fnmatchcase(p.id, cell.run)]
    out["runs"] = runs
    if not runs:
        out.update(status="missing", reason=f"no run matching '{cell.run}' at this scale")
        return out
    failed = [r for r in runs if records.get(r, {}).get("status") == "failed"]
    if failed:
        out.update(status="failed", reason=f"run {', '.join(failed)} failed")
        return out
    chosen = []
    for r in runs:
        ev = _select(evaluations.get(r, []), cell)
        if ev is None:
            out.update(status="missing", reason=f"run '{r}' recorded no evaluation labelled '{cell.metric}' "
                                                f"with a number at '{cell.field}'")
            return out
        chosen.append(ev)
    values = [float(field_value(ev, cell.field)) for ev in chosen]
    out["values"] = values
    out["iterations"] = [ev.get("iteration") for ev in chosen]
    out["n_samples"] = [ev.get("n_samples") for ev in chosen]
    out["backend"] = sorted({str(ev.get("backend")) for ev in chosen})
    out["seeds"] = [records.get(r, {}).get("seed") for r in runs]
    if cell.aggregate == "single":
        out["ours"] = values[0]
        if cell.error:
            out["ours_error"] = _number(field_value(chosen[0], cell.error))
    else:
        out["ours"] = statistics.fmean(values)
        if cell.aggregate in ("mean_sd", "mean_se") and len(values) > 1:
            sd = statistics.stdev(values)
            out["ours_error"] = sd if cell.aggregate == "mean_sd" else sd / math.sqrt(len(values))
    return out


def study_cell(spec: TableSpec, tally: dict[str, Any]) -> dict[str, Any]:
    """A cell from a human study's returned rankings (`coopcore.study.study_cells`): mean rank
    +- its standard error over raters."""
    return {
        "row": tally["row"], "column": tally["column"], "metric": "mean_rank", "field": "value", "select": "last",
        "aggregate": "raters", "runs": [], "values": [tally["value"]], "ours": tally["value"],
        "ours_error": tally["error"], "iterations": [], "n_samples": [tally["n_raters"]],
        "backend": ["human ranking (coopcore.study)"], "seeds": [], "status": "ok", "reason": "",
    }


def table_results(spec: TableSpec, scale: str, planned: Sequence[PlannedRun], records: dict[str, dict[str, Any]],
                  evaluations: dict[str, list[dict[str, Any]]], provenance: dict[str, Any],
                  study: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The whole results.json document; `study` adds cells tallied from a human study."""
    published = {(p.row, p.column): p for p in spec.published}
    cells = []
    computed = [(c, compute_cell(c, planned, records, evaluations)) for c in plan_cells(spec)]
    computed += [(None, study_cell(spec, tally)) for tally in study]
    for cell, rec in computed:
        pub = published.get((rec["row"], rec["column"]))
        rec["published"] = None if pub is None else pub.value
        rec["published_error"] = None if pub is None else pub.error
        rec["difference"] = None if pub is None or rec["ours"] is None else rec["ours"] - pub.value
        rec["within_spread"] = (None if rec["difference"] is None or pub is None or pub.error is None
                                else abs(rec["difference"]) <= pub.error)
        rec["format"] = (cell.format if cell is not None else "") or spec.value_format
        rec["exponent"] = cell.exponent if cell is not None else 0
        cells.append(rec)
    quoted = set(quoted_rows(spec)) - {c["row"] for c in cells}
    return {
        "schema": RESULTS_SCHEMA,
        "paper": spec.paper, "table": spec.table, "title": spec.title, "scale": scale,
        "cells": cells,
        "quoted": [{"row": p.row, "column": p.column, "value": p.value, "error": p.error}
                   for p in spec.published if p.row in quoted],
        "published": [{"row": p.row, "column": p.column, "value": p.value, "error": p.error, "note": p.note}
                      for p in spec.published],
        "runs": records,
        "failed": sum(1 for r in records.values() if r.get("status") == "failed"),
        "provenance": provenance,
    }


# -- Markdown ------------------------------------------------------------------------------------
def format_number(value: Optional[float], error: Optional[float], fmt: str, exponent: int = 0) -> str:
    if value is None:
        return ""
    scale = 10.0 ** exponent
    text = fmt.format(value / scale)
    if error is not None:
        text += " ± " + fmt.format(error / scale)
    if exponent:
        text += f" (×10{str(exponent).translate(_SUPERSCRIPT)})"
    return text


def _cell_text(rec: Optional[dict[str, Any]]) -> str:
    if rec is None:
        return ""
    if rec["status"] != "ok":
        return rec["status"]
    return format_number(rec["ours"], rec["ours_error"], rec["format"], rec["exponent"])


def render_report(spec: TableSpec, results: dict[str, Any], images: dict[str, list[str]]) -> str:
    """report.md: the table (paper | ours), the comparison per cell, quoted rows, pictures, provenance."""
    scale = results["scale"]
    ours = {(c["row"], c["column"]): c for c in results["cells"]}
    fmt_of = {(c["row"], c["column"]): (c["format"], c["exponent"]) for c in results["cells"]}
    column_format = {}  # a quoted number is shown the way the column's computed cells are
    for c in results["cells"]:
        column_format.setdefault(c["column"], (c["format"], c["exponent"]))
    pub = {(p.row, p.column): p for p in spec.published}
    quoted = {q["row"] for q in results["quoted"]}
    lines = [f"# {spec.paper} {spec.table}: {spec.title}", "", f"Scale: **{scale}**."]
    if results["failed"]:
        lines += ["", f"**{results['failed']} run(s) failed**; their cells read *failed* (see Runs below)."]
    head = ["", *[f"{col} (paper)" for col in spec.columns], *[f"{col} (ours)" for col in spec.columns]]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in spec.rows:
        label = f"{row} *(published)*" if row in quoted else row
        cells = [label]
        for col in spec.columns:
            p = pub.get((row, col))
            fmt, exp = fmt_of.get((row, col), column_format.get(col, (spec.value_format, 0)))
            cells.append(format_number(p.value, p.error, fmt, exp) if p else "")
        for col in spec.columns:
            cells.append("" if row in quoted else (_cell_text(ours.get((row, col))) or "—"))
        lines.append("| " + " | ".join(cells) + " |")

    lines += ["", "## Ours beside the paper", "",
              "| row | column | paper | ours | ours − paper | within the paper's ± | runs | samples |",
              "|---|---|---|---|---|---|---|---|"]
    for c in results["cells"]:
        paper = format_number(c["published"], c["published_error"], c["format"], c["exponent"])
        diff = "" if c["difference"] is None else format_number(c["difference"], None, c["format"], c["exponent"])
        within = {True: "yes", False: "no", None: "—"}[c["within_spread"]]
        text = _cell_text(c) if c["status"] == "ok" else f"{c['status']}: {c['reason']}"
        n = ", ".join(str(x) for x in c["n_samples"])
        lines.append(f"| {c['row']} | {c['column']} | {paper or '—'} | {text} | {diff or '—'} | {within} | "
                     f"{', '.join(c['runs'])} | {n} |")
    if quoted:
        lines += ["", "Rows marked *(published)* are other work's numbers quoted from the paper; this "
                  "framework does not compute them."]

    lines += ["", "## How our numbers were computed", ""]
    for c in results["cells"]:
        if c["status"] != "ok":
            continue
        if c["aggregate"] == "raters":
            lines.append(f"- {c['row']} / {c['column']}: mean rank over {c['n_samples'][0]} raters ± its standard "
                         "error, from the returned ranking files.")
            continue
        how = f"{c['aggregate'].replace('_', ' ± ') if c['aggregate'] != 'single' else 'one run'}"
        lines.append(f"- {c['row']} / {c['column']}: `{c['field']}` of evaluation `{c['metric']}` ({c['select']}, "
                     f"iterations {c['iterations']}) of {', '.join(c['runs'])} ({how}); samples {c['n_samples']}; "
                     f"backend: {', '.join(c['backend'])}.")

    if images:
        lines += ["", "## Samples and learning curves", ""]
        for run_id, files in images.items():
            lines.append(f"**{run_id}**")
            lines.append("")
            lines += [f"![{run_id}: {f}]({f})" for f in files]
            lines.append("")

    lines += ["## Runs", ""]
    for rid, r in results["runs"].items():
        if r.get("status") == "failed":
            lines.append(f"- `{rid}`: **failed**: {r.get('error', '').splitlines()[0] if r.get('error') else ''} "
                         f"({r.get('dir', '')})")
            continue
        lines.append(
            f"- `{rid}` ({r.get('status')}): recipe `{r.get('recipe')}`, overrides {r.get('overrides')}, "
            f"config hash `{r.get('config_hash')}`, seed {r.get('seed')}, {r.get('iterations')} iterations "
            f"({r.get('images_seen')} images) in {r.get('train_seconds', r.get('seconds'))} s on {r.get('device')} "
            f"({r.get('device_name')})"
        )
    prov = results["provenance"]
    lines += ["", "## Provenance", "",
              f"- commit `{prov.get('git_commit') or 'unknown'}`, coopnets {prov.get('coopnets_version')}, "
              f"torch {prov.get('torch_version')}, Python {prov.get('python')}; {prov.get('seconds')} s"]
    if spec.notes:
        lines += ["", "## Notes", "", spec.notes.strip()]
    if scale != "full":
        lines += ["", f"_Scale '{scale}' is a reduced run: its numbers check the pipeline and the trend; they are "
                  "not the paper's protocol. Use `--scale full` for that._"]
    return "\n".join(lines) + "\n"
