"""Divergence triangle Table 2 (test reconstruction MSE): `coop repro triangle:table2 --scale
smoke` end to end on Table 1's smoke runs (shared through `use`, not retrained), pinned by
golden numbers; the MSE cells are checked against the runs' own evaluation records."""
from __future__ import annotations

import json

from test_repro_triangle_table1 import TABLE_TOL, run_triangle_smoke, triangle_smoke_root


def test_golden_repro_triangle_table2_smoke(tmp_path_factory, num_regression):
    root = triangle_smoke_root(tmp_path_factory)  # Table 1's runs, trained once per session
    assert run_triangle_smoke("table2", root) == 0
    out = root / "triangle-table2-smoke"
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert results["failed"] == 0
    table1_runs = root / "triangle-table1-smoke" / "runs"
    for run_id, record in results["runs"].items():
        assert record["status"] == "shared", run_id  # Table 1's finished runs, not trained again
        assert record["dir"] == str(table1_runs / run_id)
    assert not (out / "runs").exists()
    assert {q["row"] for q in results["quoted"]} == {"WS", "ALI", "ALICE"}
    assert "| WS *(published)* | 0.058 | 0.152 |" in report
    values = {}
    for c in results["cells"]:
        assert c["status"] == "ok", c
        assert c["metric"] == "test_mse" and c["n_samples"] == [297]  # the digits' test split
        assert "[0,1]" in c["backend"][0]
        evals = [json.loads(x) for x in (table1_runs / c["runs"][0] / "evaluations.jsonl").read_text().splitlines()]
        mine = [e for e in evals if e["label"] == "test_mse"]
        assert [e["value"] for e in mine][-1] == c["ours"]
        key = f"{c['row']}|{c['column']}"
        values[f"{key}.mse"] = c["ours"]
        values[f"{key}.stderr"] = c["ours_error"]
    assert set(values) == {f"{r}|{col}.{f}" for r in ("Ours", "VAE") for col in ("CIFAR-10", "CelebA")
                           for f in ("mse", "stderr")}
    num_regression.check(values, **TABLE_TOL)
