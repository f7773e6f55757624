"""multigrid Table 1 (scores f(Y) per grid on train / test / synthesised / negative images):
the per-grid down-scaling of `energy_statistics`, and the golden numbers of
`coop repro multigrid:table1 --scale smoke`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coopcore import TensorImageDataset, UsageError
from coopcore.build import build_metric

from conftest import FixedImagesObjective, datasets_context, resolve_table_runs, run_cli

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
SETS = {"Training": "train", "Testing": "test", "Synthesized": "synthesised", "Negative": "negatives"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _grid_descriptor(registries, size):
    entry = registries.energy.get("multigrid.descriptor")
    opts = entry.options(grid=1, input_shape=(1, size, size), channels=(4, 8), kernels=(3, 3), strides=(2, 1))
    torch.manual_seed(0)
    return registries.energy.create("multigrid.descriptor", opts)


def test_each_grid_scores_the_block_mean_versions(registries):
    """A 4x4 descriptor scores 16x16 sets on their 4x4 block means, exactly as if they were
    given down-scaled; synthesised samples already at 4x4 are scored as they are."""
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(12, 1, 16, 16, generator=g) * 2 - 1, torch.rand(7, 1, 16, 16, generator=g) * 2 - 1
    syn = torch.rand(6, 1, 4, 4, generator=g) * 2 - 1
    model = _grid_descriptor(registries, 4)
    ctx = datasets_context({"t": TensorImageDataset(test, "t")}, objective=FixedImagesObjective(syn),
                           models={"grid1": model}, registries=registries, data_root=None,
                           device=torch.device("cpu"), generator=g, train_dataset=TensorImageDataset(train, "train"))
    opts = {"descriptor": "grid1", "test": {"name": "t"}, "n_samples": 6, "batch_size": 100}
    res = build_metric(registries, "energy_statistics", opts).compute(ctx)
    with torch.no_grad():
        want = {"train": model.score(F.avg_pool2d(train, 4)), "test": model.score(F.avg_pool2d(test, 4)),
                "synthesised": model.score(syn)}
    for name, scores in want.items():
        s = scores.double().numpy()
        assert res.details["sets"][name]["mean"] == pytest.approx(float(np.mean(s)), rel=1e-6, abs=1e-9)
        assert res.details["sets"][name]["sd"] == pytest.approx(float(np.std(s)), rel=1e-6, abs=1e-9)
    # without down-scaling the sizes must match: a usage error naming the option
    ctx.objective = FixedImagesObjective(syn)
    with pytest.raises(UsageError, match="block_mean"):
        build_metric(registries, "energy_statistics", {**opts, "downscale": "none"}).compute(ctx)
    # a size that is not a multiple of the grid cannot be block-averaged
    odd = _grid_descriptor(registries, 5)
    ctx.models = {"grid1": odd}
    with pytest.raises(UsageError, match="cannot down-scale 16x16 images to 5x5"):
        build_metric(registries, "energy_statistics", opts).compute(ctx)


@pytest.mark.parametrize("scale", ["smoke", "short", "full"])
def test_every_scale_resolves(registries, scale):
    """Every run of the table at every scale resolves (recipe + overrides) and its metrics' options
    build, so a short or full run cannot fail on a typo after hours of training."""
    runs = resolve_table_runs(registries, "multigrid:table1", scale)
    assert sorted(p.id for p, _ in runs) == ["mcd"]
    for _, resolved in runs:
        assert resolved.metrics == ()  # no recipe evaluation runs besides the table's own


def test_golden_repro_multigrid_table1_smoke(tmp_path, num_regression):
    out = tmp_path / "repro"
    code = run_cli(["repro", "multigrid:table1", "--scale", "smoke", "--out", out, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    # the paper's numbers in true units, displayed x10^4 / x10^5 / x10^6 per grid
    assert "| Training | 5.33 ± 0.91 (×10⁴) | 8.59 ± 1.12 (×10⁵) | 2.59 ± 0.10 (×10⁶) |" in report
    cells = {(c["row"], c["column"]): c for c in results["cells"]}
    assert set(cells) == {(r, f"grid{k}") for r in SETS for k in (1, 2, 3)}
    assert all(c["status"] == "ok" and c["exponent"] == 3 + int(c["column"][-1]) for c in cells.values())
    evals = {json.loads(x)["label"]: json.loads(x)
             for x in (out / "runs" / "mcd" / "evaluations.jsonl").read_text().splitlines()}
    values = {}
    for k in (1, 2, 3):
        ev = evals[f"table1_grid{k}"]
        assert ev["details"]["omitted"] == [] and ev["n_samples"] == 200
        counts = {s: ev["details"]["sets"][s]["count"] for s in SETS.values()}
        assert counts == {"train": 1500, "test": 297, "synthesised": 200, "negatives": 297}
        for row, key in SETS.items():
            c = cells[(row, f"grid{k}")]
            assert c["ours"] == ev["details"]["sets"][key]["mean"] and c["ours_error"] == ev["details"]["sets"][key]["sd"]
            values[f"grid{k}_{key}_mean"] = c["ours"]
            values[f"grid{k}_{key}_sd"] = c["ours_error"]
        # the paper's finding at every grid: training and held-out images score alike, above the negatives
        sets = ev["details"]["sets"]
        assert abs(sets["train"]["mean"] - sets["test"]["mean"]) < 0.1 * sets["train"]["sd"] + 0.05 * abs(sets["train"]["mean"])
        assert sets["train"]["mean"] > sets["negatives"]["mean"] and sets["synthesised"]["mean"] > sets["negatives"]["mean"]
    num_regression.check(values, **TABLE_TOL)
