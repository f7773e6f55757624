"""Golden numbers of `coop repro coopnets-aaai:table1 --scale smoke` (AAAI Table 1, inpainting).

The table's CoopNets row is coopnets:table5's run (`use`), trained in that table's folder beside
this one; the eight classical methods are this table's evaluation-only runs.  Regenerate only for
an intended change (`--force-regen`, then run again without).
"""
from __future__ import annotations

import json

from conftest import run_cli

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))


def test_golden_repro_aaai_table1_smoke(tmp_path, num_regression):
    root = tmp_path / "repro"
    code = run_cli(["repro", "coopnets-aaai:table1", "--scale", "smoke", "--out-root", root, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    out = root / "coopnets-aaai-table1-smoke"
    results = json.loads((out / "results.json").read_text())
    assert results["runs"]["coopnets"]["status"] == "shared"
    assert (root / "coopnets-table5-smoke" / "runs" / "coopnets" / "evaluations.jsonl").exists()
    report = (out / "report.md").read_text()
    assert "| Method 5 (inpaint_nans 3) | M40 | 0.3809 |" in report
    cells = {(c["row"], c["column"]): c for c in results["cells"]}
    assert len(cells) == 27 and all(c["status"] == "ok" and c["n_samples"] == [6] for c in cells.values())
    # inpaint_nans 0 and 1 solve the same least-squares problem (why methods 3 and 8 are read as 1 and 0).
    for m in ("M20", "M30", "M40"):
        a, b = cells[("Method 3 (inpaint_nans 1)", m)]["ours"], cells[("Method 8 (inpaint_nans 0)", m)]["ours"]
        assert abs(a - b) < 1e-9
    values = {f"{row}|{column}": c["ours"] for (row, column), c in sorted(cells.items())}
    values.update({f"{row}|{column}|se": c["ours_error"] for (row, column), c in sorted(cells.items())})
    num_regression.check(values, **TABLE_TOL)
