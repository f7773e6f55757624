"""multigrid Table 2 (SVHN test error of a classifier on the learned feature maps): the probe on the
concatenated top maps of several descriptors, its supervised ("trained") variant, and the golden
numbers of `coop repro multigrid:table2 --scale smoke`."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from coopcore import ConfigError, TensorImageDataset, UsageError
from coopcore.build import build_metric

from conftest import datasets_context, resolve_table_runs, run_cli

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
ROWS = {"persistent CD": "pcd", "one-step CD": "cd1", "single-grid CD": "single-grid",
        "Supervised CNN with the same structure": "supervised", "multi-grid CD + CNN classifier": "mcd"}
COLUMNS = ["1,000", "2,000", "4,000"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _quadrants(n, seed):
    """Four classes: a bright 4x4 patch in one quadrant of a 16x16 image, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = torch.randn(n, 1, 16, 16, generator=g) * 0.2 - 0.5
    for i, c in enumerate(labels.tolist()):
        r, s = divmod(c, 2)
        x[i, 0, 8 * r + 2 : 8 * r + 6, 8 * s + 2 : 8 * s + 6] += 1.5
    return TensorImageDataset(x, "quadrants", labels=labels)


def _grids(registries):
    entry = registries.energy.get("multigrid.descriptor")
    torch.manual_seed(0)
    return {f"grid{k}": registries.energy.create("multigrid.descriptor", entry.options(
        grid=k, input_shape=(1, size, size), channels=(4, 8), kernels=(3, 3), strides=(2, 1)))
        for k, size in ((1, 4), (2, 8), (3, 16))}


def _ctx(registries, models, seed=0):
    return datasets_context({"test": _quadrants(80, 1)}, objective=None, models=models, registries=registries,
                            data_root=None, device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed),
                            train_dataset=_quadrants(200, 0))


OPTS = {"descriptors": ["grid1", "grid2", "grid3"], "test": {"name": "test"}, "n_labels": [20, 40],
        "epochs": 40, "batch_size": 10, "lr": 0.01, "conv_channels": 8, "feature_batch": 32}


def test_probe_concatenates_every_grid_on_its_block_means(registries):
    models = _grids(registries)
    res = build_metric(registries, "feature_probe", OPTS).compute(_ctx(registries, models))
    d = res.details
    assert d["descriptors"] == ["grid1", "grid2", "grid3"] and d["input_sizes"] == [[4, 4], [8, 8], [16, 16]]
    assert d["feature_shapes"] == [[8, 2, 2], [8, 4, 4], [8, 8, 8]] and d["concat_dim"] == 8 * (4 + 16 + 64)
    assert d["errors"] == [d["test_error"]["20"], d["test_error"]["40"]] and res.value == d["errors"][0]
    assert d["std_errors"][1] == pytest.approx((d["errors"][1] * (1 - d["errors"][1]) / 80) ** 0.5)
    assert d["errors"][1] < 0.3  # the quadrant is visible at every grid
    again = build_metric(registries, "feature_probe", OPTS).compute(_ctx(registries, models))
    assert again.details == d
    # each grid's map is that grid's features of the block means (checked on the probe's extractor)
    from coop_metrics.probe import _Extractor

    x = _quadrants(6, 2).images
    maps = _Extractor(list(models.values()), [(4, 4), (8, 8), (16, 16)])(x)
    with torch.no_grad():
        assert torch.equal(maps[0], models["grid1"].features(F.avg_pool2d(x, 4)))
        assert torch.equal(maps[1], models["grid2"].features(F.avg_pool2d(x, 2)))
        assert torch.equal(maps[2], models["grid3"].features(x))


def test_supervised_variant_trains_a_copy(registries):
    """features = "trained" learns the feature layers too, from a copy: the run's descriptors are untouched."""
    models = _grids(registries)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in models.items()}
    res = build_metric(registries, "feature_probe", {**OPTS, "features": "trained"}).compute(_ctx(registries, models))
    assert res.details["features"] == "trained" and res.backend.startswith("trained grid1+grid2+grid3")
    assert res.details["errors"][1] < 0.3
    for k, m in models.items():
        assert all(torch.equal(a, b) for a, b in zip(before[k], m.parameters()))


def test_probe_names_a_missing_grid_and_an_unusable_size(registries):
    models = _grids(registries)
    with pytest.raises(UsageError, match="role 'grid4'"):
        build_metric(registries, "feature_probe", {**OPTS, "descriptors": ["grid1", "grid4"]}).compute(
            _ctx(registries, models))
    entry = registries.energy.get("multigrid.descriptor")
    models["grid1"] = registries.energy.create("multigrid.descriptor", entry.options(
        grid=1, input_shape=(1, 5, 5), channels=(4,), kernels=(3,), strides=(1,)))
    with pytest.raises(UsageError, match="cannot down-scale 16x16 images to 5x5"):
        build_metric(registries, "feature_probe", OPTS).compute(_ctx(registries, models))
    with pytest.raises(ConfigError, match="distinct model roles"):
        build_metric(registries, "feature_probe", {**OPTS, "descriptors": ["grid1", "grid1"]})


@pytest.mark.parametrize("scale", ["smoke", "short", "full"])
def test_every_scale_resolves(registries, scale):
    """Every run of the table at every scale resolves (recipe + overrides) and its metrics' options
    build, so a short or full run cannot fail on a typo after hours of training."""
    runs = resolve_table_runs(registries, "multigrid:table2", scale)
    assert sorted(p.id for p, _ in runs) == ["cd1", "mcd", "pcd", "single-grid", "supervised"]
    for _, resolved in runs:
        assert resolved.metrics == ()  # no recipe evaluation runs besides the table's own


def test_golden_repro_multigrid_table2_smoke(tmp_path, num_regression):
    out = tmp_path / "repro"
    code = run_cli(["repro", "multigrid:table2", "--scale", "smoke", "--out", out, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "| DGN *(published)* | 36.02% |" in report
    assert "| multi-grid CD + CNN classifier | 19.73% | 15.86% | 12.71% |" in report
    assert {q["row"] for q in results["quoted"]} == {"DGN", "Virtual Adversarial", "Auxiliary Deep Generative Model",
                                                     "DCGAN+L2-SVM"}
    assert results["runs"]["supervised"]["status"] == "evaluated" and results["runs"]["supervised"]["iterations"] == 0
    cells = {(c["row"], c["column"]): c for c in results["cells"]}
    assert set(cells) == {(r, col) for r in ROWS for col in COLUMNS}
    assert all(c["status"] == "ok" and c["n_samples"] == [297] for c in cells.values())
    values = {}
    for row, run in ROWS.items():
        ev = [json.loads(x) for x in (out / "runs" / run / "evaluations.jsonl").read_text().splitlines()][-1]
        assert ev["label"] == "probe" and ev["details"]["n_labels"] == [20, 50, 100]
        grids = ["grid1", "grid2", "grid3"] if run in ("mcd", "supervised") else ["descriptor"]
        assert ev["details"]["descriptors"] == grids
        assert ev["details"]["features"] == ("trained" if run == "supervised" else "frozen")
        for i, col in enumerate(COLUMNS):
            assert cells[(row, col)]["ours"] == ev["details"]["errors"][i]
            values[f"{run}_{i}"] = cells[(row, col)]["ours"]
            values[f"{run}_{i}_se"] = cells[(row, col)]["ours_error"]
    num_regression.check(values, **TABLE_TOL)
