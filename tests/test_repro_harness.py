"""The `coop repro` harness on tiny specs: sweeps, aggregation, fields, quoted rows, evaluation-only
and shared runs, failures, resumption, parallel dispatch (local processes and submitit).

Every number a cell shows is checked against the runs' own evaluations.jsonl, read and reduced
here independently of coopcore.report."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from conftest import run_cli, tiny_digits_overrides

TINY = [*tiny_digits_overrides(), "run.iterations=2", "run.eval_every=0", "run.threads=1",
        "run.checkpoint_every=0"]
PARZEN = ("{name='parzen', label='ll', options={samples='generator', n_samples=40, "
          "test={name='digits', options={split='test', size=16}}, "
          "validation={name='digits', options={split='validation', size=16}}}}")


PARZEN_OPTIONS = ("{ samples = 'revised', n_samples = 40, test = { name = 'digits', options = { split = 'test', "
                  "size = 16 } }, validation = { name = 'digits', options = { split = 'validation', size = 16 } } }")
INPAINT_OPTIONS = ("{ route = 'mrf_l2', mask = 'M8', n_images = 3, batch = 3, "
                   "data = { name = 'digits', options = { split = 'test', size = 16 } } }")


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x) for x in items) + "]"


def write_spec(path: Path, runs: str, cells: str, extra: str = "", scales: str = '["smoke", "full"]') -> Path:
    path.write_text(f"""
paper = "test"
table = "t1"
title = "A tiny table"
rows = ["Ours", "Theirs", "One seed"]
columns = ["LL", "sigma"]
scales = {scales}
value_format = "{{:.3f}}"
published = [
  {{ row = "Ours", column = "LL", value = -30.0, error = 5.0 }},
  {{ row = "Theirs", column = "LL", value = 12.5, error = 0.5 }},
]
{extra}
{runs}
{cells}
""")
    return path


SEEDED_RUNS = f"""
[[runs]]
id = "ours-s{{seed}}"
recipe = "coopnets-digits"
set = {_toml_list([*TINY, "run.seed={seed}", "eval=[" + PARZEN + "]"])}
sweep = {{ seed = [1, 2] }}
[runs.scales.smoke]
description = "two seeds"
"""
SEEDED_CELLS = """
[[cells]]
row = "Ours"
column = "LL"
run = "ours-s*"
metric = "ll"
aggregate = "mean_sd"

[[cells]]
row = "One seed"
column = "{col}"
for = { col = ["LL", "sigma"] }
run = "ours-s1"
metric = "ll"
field = "{field}"
"""


def _evals(run_dir: Path, label: str) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "evaluations.jsonl").read_text().splitlines()
            if json.loads(x)["label"] == label]


def test_sweep_aggregate_fields_and_quoted_rows(tmp_path):
    cells = SEEDED_CELLS.replace('field = "{field}"', 'field = "value"').replace(
        'for = { col = ["LL", "sigma"] }', 'for = { col = ["LL"] }')
    cells += '\n[[cells]]\nrow = "One seed"\ncolumn = "sigma"\nrun = "ours-s1"\nmetric = "ll"\n' \
             'field = "details.sigma"\nerror = ""\n'
    spec = write_spec(tmp_path / "spec.toml", SEEDED_RUNS, cells)
    out = tmp_path / "out"
    assert run_cli(["repro", spec, "--out", out, "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == 2 and res["failed"] == 0
    assert set(res["runs"]) == {"ours-s1", "ours-s2"}
    assert [res["runs"][r]["seed"] for r in ("ours-s1", "ours-s2")] == [1, 2]
    values = [_evals(out / "runs" / r, "ll")[-1]["value"] for r in ("ours-s1", "ours-s2")]
    assert values[0] != values[1]  # the seeds really differ
    cells = {(c["row"], c["column"]): c for c in res["cells"]}
    mean = cells[("Ours", "LL")]
    assert mean["ours"] == pytest.approx(statistics.fmean(values))
    assert mean["ours_error"] == pytest.approx(statistics.stdev(values))
    assert mean["difference"] == pytest.approx(mean["ours"] + 30.0)
    assert mean["within_spread"] == (abs(mean["ours"] + 30.0) <= 5.0)
    one = _evals(out / "runs" / "ours-s1", "ll")[-1]
    assert cells[("One seed", "LL")]["ours"] == one["value"]
    assert cells[("One seed", "LL")]["ours_error"] == one["std_error"]
    assert cells[("One seed", "sigma")]["ours"] == one["details"]["sigma"]
    assert cells[("One seed", "sigma")]["ours_error"] is None
    assert res["quoted"] == [{"row": "Theirs", "column": "LL", "value": 12.5, "error": 0.5}]
    report = (out / "report.md").read_text()
    assert "| Theirs *(published)* | 12.500 ± 0.500 |" in report
    assert f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}" in report
    assert (out / "curves-ours-s1.png").exists()

    # Re-invoking skips finished runs and gives the same table.
    assert run_cli(["repro", spec, "--out", out, "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert {r["status"] for r in again["runs"].values()} == {"already-complete"}
    assert [c["ours"] for c in again["cells"]] == [c["ours"] for c in res["cells"]]


def test_failed_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    runs = SEEDED_RUNS + f"""
[[runs]]
id = "broken"
recipe = "coopnets-digits"
set = {_toml_list([*TINY, "data.name='mnist'", "data.options={}"])}
data_root = "no-such-folder"
[runs.scales.smoke]
"""
    cells = SEEDED_CELLS.replace('for = { col = ["LL", "sigma"] }', 'for = { col = ["LL"] }').replace(
        'run = "ours-s1"', 'run = "broken"').replace('field = "{field}"', "")
    spec = write_spec(tmp_path / "spec.toml", runs, cells)
    out = tmp_path / "out"
    assert run_cli(["repro", spec, "--out", out, "--no-progress"]) == 11  # 10 + one failed run
    res = json.loads((out / "results.json").read_text())
    assert res["failed"] == 1 and res["runs"]["broken"]["status"] == "failed"
    assert "no-such-folder" in res["runs"]["broken"]["error"]
    cells = {(c["row"], c["column"]): c for c in res["cells"]}
    assert cells[("Ours", "LL")]["status"] == "ok"
    assert cells[("One seed", "LL")]["status"] == "failed"
    assert "**1 run(s) failed**" in (out / "report.md").read_text()


def test_scale_errors_are_exit_2(tmp_path, capsys):
    spec = write_spec(tmp_path / "spec.toml", SEEDED_RUNS, SEEDED_CELLS.replace('field = "{field}"', ""))
    assert run_cli(["repro", spec, "--scale", "short", "--out", tmp_path / "o"]) == 2
    assert "has no scale 'short'; it offers smoke, full" in capsys.readouterr().err
    bad = write_spec(tmp_path / "bad.toml", SEEDED_RUNS, SEEDED_CELLS.replace('field = "{field}"', ""),
                     scales='["smoke", "short", "full"]')
    assert run_cli(["repro", bad, "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "runs[0].scales" in err and "[runs.scales.short]" in err
    unknown = write_spec(tmp_path / "unknown.toml", SEEDED_RUNS,
                         SEEDED_CELLS.replace('field = "{field}"', "").replace('run = "ours-s1"', 'run = "nope"'))
    assert run_cli(["repro", unknown, "--out", tmp_path / "o"]) == 2
    assert "cells[1].run" in capsys.readouterr().err
    assert run_cli(["repro", "nosuch:table9"]) == 2


def test_evaluation_only_run_and_a_run_shared_with_another_table(tmp_path, registries):
    """Table B evaluates table A's trained run (`use`) with its own metric, and a classical baseline
    without training; A's run is trained once, in A's folder."""
    from coopcore.repro import Launcher, load_table_spec, run_table

    a = write_spec(tmp_path / "a.toml", SEEDED_RUNS.replace("[1, 2]", "[1]"),
                   SEEDED_CELLS.replace('field = "{field}"', "").replace('for = { col = ["LL", "sigma"] }',
                                                                         'for = { col = ["LL"] }'))
    spec_a = load_table_spec(a)
    registries.table.scoped("tests").add(spec_a.key, lambda options: spec_a)
    b = tmp_path / "b.toml"
    b.write_text(f"""
paper = "test"
table = "t2"
title = "Evaluations of another table's run"
rows = ["Shared", "Classical"]
columns = ["LL", "error"]
scales = ["smoke", "full"]

[[runs]]
id = "shared"
use = "test:t1/ours-s1"
eval = [{{ label = "ll_again", name = "parzen", options = {PARZEN_OPTIONS} }}]

[[runs]]
id = "mrf"
recipe = "coopnets-digits"
train = false
set = {_toml_list(TINY)}
eval = [{{ label = "inpaint", name = "inpainting", options = {INPAINT_OPTIONS} }}]
[runs.scales.smoke]

[[cells]]
row = "Shared"
column = "LL"
run = "shared"
metric = "ll_again"

[[cells]]
row = "Classical"
column = "error"
run = "mrf"
metric = "inpaint"
""")
    spec_b = load_table_spec(b)
    res = run_table(spec_b, "smoke", tmp_path / "root" / "test-t2-smoke", registries, launcher=Launcher(),
                    echo=lambda m: None, progress=False)
    assert res["failed"] == 0, {k: r.get("error") for k, r in res["runs"].items()}
    shared_dir = tmp_path / "root" / "test-t1-smoke" / "runs" / "ours-s1"
    assert res["runs"]["shared"]["status"] == "shared" and res["runs"]["shared"]["dir"] == str(shared_dir)
    assert _evals(shared_dir, "ll_again")[-1]["value"] == res["cells"][0]["ours"]
    mrf = tmp_path / "root" / "test-t2-smoke" / "runs" / "mrf"
    assert res["runs"]["mrf"]["status"] == "evaluated" and res["runs"]["mrf"]["iterations"] == 0
    assert not (mrf / "checkpoints").exists() or not any((mrf / "checkpoints").iterdir())
    assert _evals(mrf, "inpaint")[-1]["value"] == res["cells"][1]["ours"]
    # Again: nothing is retrained or re-evaluated.
    again = run_table(spec_b, "smoke", tmp_path / "root" / "test-t2-smoke", registries, echo=lambda m: None,
                      progress=False)
    assert again["runs"]["mrf"]["status"] == "already-complete"
    assert len(_evals(shared_dir, "ll_again")) == 1 and len(_evals(mrf, "inpaint")) == 1
    assert [c["ours"] for c in again["cells"]] == [c["ours"] for c in res["cells"]]


@pytest.mark.parametrize("how", [["--jobs", "2"], ["--launcher", "local"]], ids=["process-pool", "submitit-local"])
def test_parallel_dispatch_matches_sequential(tmp_path, how):
    if how[0] == "--launcher":
        pytest.importorskip("submitit")
    cells = SEEDED_CELLS.replace('field = "{field}"', "").replace('for = { col = ["LL", "sigma"] }',
                                                                  'for = { col = ["LL"] }')
    spec = write_spec(tmp_path / "spec.toml", SEEDED_RUNS, cells)
    assert run_cli(["repro", spec, "--out", tmp_path / "seq", "--no-progress"]) == 0
    assert run_cli(["repro", spec, "--out", tmp_path / "par", "--no-progress", *how]) == 0
    seq = json.loads((tmp_path / "seq" / "results.json").read_text())
    par = json.loads((tmp_path / "par" / "results.json").read_text())
    assert {r["status"] for r in par["runs"].values()} == {"trained"}
    assert [c["values"] for c in par["cells"]] == [c["values"] for c in seq["cells"]]
    if how[0] == "--launcher":
        assert any((tmp_path / "par" / "submitit").iterdir())


def test_list_shows_tables_scales_and_progress(tmp_path, capsys):
    assert run_cli(["repro", "--list", "--out-root", tmp_path]) == 0
    out = capsys.readouterr().out
    assert "coopnets:table2" in out and "scales: smoke, short, full" in out
    run_dir = tmp_path / "coopnets-table2-smoke" / "runs"
    run_dir.mkdir(parents=True)
    assert run_cli(["repro", "--list", "--out-root", tmp_path]) == 0
    assert "smoke: 0/1 runs done" in capsys.readouterr().out


def test_list_of_tables_sweeps_tie_values_together_and_a_missing_shared_run_fails_alone(tmp_path):
    runs = f"""
[[runs]]
id = "ours-s{{seed}}"
recipe = "coopnets-digits"
set = {_toml_list([*TINY, "run.seed={seed}", "run.iterations={iterations}", "eval=[" + PARZEN + "]"])}
sweep = [{{ seed = 1, iterations = 2 }}, {{ seed = 2, iterations = 3 }}]
[runs.scales.smoke]

[[runs]]
id = "elsewhere"
use = "coopnets:table2/no-such-run"
"""
    cells = """
[[cells]]
row = "One seed"
for = [{ col = "LL", field = "value" }, { col = "sigma", field = "details.sigma" }]
column = "{col}"
run = "ours-s2"
metric = "ll"
field = "{field}"

[[cells]]
row = "Ours"
column = "LL"
run = "elsewhere"
metric = "ll"
"""
    spec = write_spec(tmp_path / "spec.toml", runs, cells)
    out = tmp_path / "out"
    assert run_cli(["repro", spec, "--out", out, "--no-progress"]) == 11
    res = json.loads((out / "results.json").read_text())
    assert {r: res["runs"][r]["iterations"] for r in ("ours-s1", "ours-s2")} == {"ours-s1": 2, "ours-s2": 3}
    assert "has no run 'no-such-run'" in res["runs"]["elsewhere"]["error"]
    cells = {(c["row"], c["column"]): c for c in res["cells"]}
    last = _evals(out / "runs" / "ours-s2", "ll")[-1]
    assert cells[("One seed", "LL")]["ours"] == last["value"]
    assert cells[("One seed", "sigma")]["ours"] == last["details"]["sigma"]
    assert cells[("Ours", "LL")]["status"] == "failed"


def test_ctrl_c_in_one_run_stops_the_table(tmp_path, monkeypatch):
    """An interrupted run (the trainer saved its checkpoint) is not a failed run: the table stops."""
    import coopcore.repro as repro
    from coopcore.trainer import Interrupted

    started = []

    def interrupted(job, resolved, registries, echo):
        started.append(job.run_id)
        raise Interrupted(None, 1)

    monkeypatch.setattr(repro, "_train_and_evaluate", interrupted)
    jobs = [repro.RunJob(run_id=f"r{i}", dir=str(tmp_path / f"r{i}"), recipe="coopnets-digits", overrides=tuple(TINY),
                         train=True, evals=()) for i in range(2)]
    with pytest.raises(Interrupted):
        repro.dispatch(jobs, repro.Launcher(), tmp_path / "logs", echo=lambda m: None)
    assert started == ["r0"]


def test_every_table_resolves_at_every_scale(registries):
    """Every run of every registered table, at every scale it offers, resolves and its metrics
    build (short and full are never run here: this is what keeps them from failing on a typo)."""
    from conftest import resolve_table_runs

    checked = 0
    for key in registries.table:
        spec = registries.table.create(key)
        for scale in spec.scales:
            checked += len(resolve_table_runs(registries, key, scale))
    assert len(list(registries.table)) >= 13 and checked > 100


def test_a_group_of_tables_inside_a_product_sweep_varies_together(tmp_path):
    """`{ seed = [1, 2], length = [{ tag = "a", iterations = 2, ... }, { tag = "b", iterations = 3,
    ... }] }` is four runs: every seed with each (tag, iterations) pair, never a mixed pair; an
    override a variable leaves empty is dropped."""
    from coopcore.tablespec import load_table_spec, plan_runs

    runs = f"""
[[runs]]
id = "ours-{{tag}}-s{{seed}}"
recipe = "coopnets-digits"
set = {_toml_list([*TINY, "run.seed={seed}", "run.iterations={iterations}", "{extra}"])}
sweep = {{ seed = [1, 2], length = [{{ tag = "a", iterations = 2, extra = "run.sample_count=9" }}, {{ tag = "b", iterations = 3, extra = "" }}] }}
[runs.scales.smoke]
"""
    cells = """
[[cells]]
row = "Ours"
column = "LL"
run = "ours-a-s*"
metric = "ll"
aggregate = "mean"
"""
    spec = load_table_spec(write_spec(tmp_path / "spec.toml", runs, cells))
    planned = {p.id: p for p in plan_runs(spec, "smoke")}
    assert sorted(planned) == ["ours-a-s1", "ours-a-s2", "ours-b-s1", "ours-b-s2"]
    for run_id, p in planned.items():
        tag, seed = run_id.split("-")[1], int(run_id[-1])
        assert p.variables == {"seed": seed, "tag": tag, "iterations": {"a": 2, "b": 3}[tag],
                               "extra": {"a": "run.sample_count=9", "b": ""}[tag]}
        assert f"run.iterations={p.variables['iterations']}" in p.overrides
        # An override left empty by its variable is dropped; the other variant keeps its own.
        assert "" not in p.overrides
        assert ("run.sample_count=9" in p.overrides) == (tag == "a")

    broken = runs.replace('{ tag = "b", iterations = 3, extra = "" }', '{ tag = "b", extra = "" }')
    spec_path = write_spec(tmp_path / "broken.toml", broken, cells)
    assert run_cli(["repro", spec_path, "--out", tmp_path / "out", "--no-progress"]) == 2
