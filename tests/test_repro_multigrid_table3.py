"""multigrid Table 3 (inpainting with square / doodle / pepper masks): the `inpainting` metric's
route = "model" (the trained objective's own inpaint), its error/PSNR normalisation, the
multigrid objectives' inpainting, and the golden numbers of
`coop repro multigrid:table3 --scale smoke`."""
from __future__ import annotations

import json
import math

import pytest
import torch

from coopcore import TensorImageDataset, UsageError
from coopcore.build import build_metric

from conftest import datasets_context, resolve_table_runs, run_cli

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
ROWS = {"PCD": "pcd", "CD1": "cd1", "SCD": "single-grid", "MCD": "mcd"}
KINDS = ("square", "doodle", "pepper")


pytestmark = pytest.mark.usefixtures("one_thread")


class _ConstantFill:
    """An objective whose inpaint puts `value` into every pixel (observed ones included: the metric
    must restore those) and records what it was given."""

    def __init__(self, value):
        self.value, self.calls = value, []

    def inpaint(self, y, observed, generator):
        self.calls.append((y.clone(), observed.clone()))
        return torch.full_like(y, self.value)


def _ctx(registries, objective, images, seed=0):
    return datasets_context({"faces": TensorImageDataset(images, "faces")}, objective=objective, models={},
                            registries=registries, data_root=None, device=torch.device("cpu"),
                            generator=torch.Generator().manual_seed(seed))


def test_model_route_calls_the_objectives_inpaint_and_normalises_by_the_range(registries):
    """Raw [0, 255] images completed with a constant c: error = mean |Y - c| / 255 and
    PSNR = 10 log10(255^2 / mean (Y - c)^2), both over each image's missing pixels, then averaged."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 16, 16), generator=g).float()
    fill = _ConstantFill(100.0)
    opts = {"route": "model", "mask": "M8", "mask_seed": 3, "n_images": 5, "batch": 2,
            "pixel_range": [0.0, 255.0], "data": {"name": "faces"}}
    res = build_metric(registries, "inpainting", opts).compute(_ctx(registries, fill, images))
    assert [y.shape[0] for y, _ in fill.calls] == [2, 2, 1]  # in batches of `batch`
    observed = torch.cat([m for _, m in fill.calls])
    assert observed.shape == (5, 1, 16, 16) and set(observed.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(torch.cat([y for y, _ in fill.calls]), images)
    miss = (1 - observed).expand_as(images).bool()
    errs, psnrs = [], []
    for i in range(5):
        d = (images[i][miss[i]] - 100.0).double()
        errs.append(float(d.abs().mean() / 255.0))
        psnrs.append(10 * math.log10(255.0**2 / float((d**2).mean())))
    assert res.value == pytest.approx(sum(errs) / 5, rel=1e-12)
    assert res.details["psnr"] == pytest.approx(sum(psnrs) / 5, rel=1e-12)
    assert res.details["missing_fraction"] == pytest.approx(64 / 256) and "model" in res.backend
    # the same mask_seed gives the same holes to another objective (every row of the table)
    other = _ConstantFill(0.0)
    build_metric(registries, "inpainting", opts).compute(_ctx(registries, other, images, seed=9))
    assert torch.equal(torch.cat([m for _, m in other.calls]), observed)
    # an objective without inpaint is a usage error naming the route
    with pytest.raises(UsageError, match="route 'model' needs an objective with inpaint"):
        build_metric(registries, "inpainting", opts).compute(_ctx(registries, object(), images))


@pytest.mark.parametrize("recipe", ["multigrid-digits-3grids", "multigrid-digits-pcd", "multigrid-digits-cd1",
                                    "multigrid-digits-single-grid"])
def test_each_method_inpaints_only_the_hole(registries, recipe):
    """Every Table 3 method's own inpaint (built, one training step) keeps the observed pixels
    exactly, fills the hole with finite values in the data's range, and changes the hole."""
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve
    from coopcore.masks import mask_from_name

    resolved = resolve(recipe, ["data.batch_size=8", "objective.options.train_mask='M8'"], registries=registries)
    exp = build_experiment(resolved, torch.device("cpu"), registries=registries)
    x = exp.dataset.get_batch(torch.arange(8))
    from coopcore import Batch

    exp.objective.step(Batch(x, torch.arange(8)), torch.Generator().manual_seed(0))
    y = exp.dataset.get_batch(torch.arange(8, 14))
    observed = mask_from_name("doodle", 6, (1, 16, 16), torch.Generator().manual_seed(1))
    out = exp.objective.inpaint(y, observed, torch.Generator().manual_seed(2))
    keep = observed.expand_as(y).bool()
    assert torch.equal(out[keep], y[keep])
    assert torch.isfinite(out).all() and out.min() >= -1.0 and out.max() <= 1.0
    assert not torch.equal(out[~keep], y[~keep])


@pytest.mark.parametrize("scale", ["smoke", "short", "full"])
def test_every_scale_resolves(registries, scale):
    """Every run of the table at every scale resolves (recipe + overrides) and its metrics' options
    build, so a short or full run cannot fail on a typo after hours of training."""
    runs = resolve_table_runs(registries, "multigrid:table3", scale)
    assert sorted(p.id for p, _ in runs) == ["cd1", "mcd", "pcd", "single-grid"]
    for _, resolved in runs:
        assert resolved.metrics == ()  # no recipe evaluation runs besides the table's own


def test_golden_repro_multigrid_table3_smoke(tmp_path, num_regression):
    out = tmp_path / "repro"
    code = run_cli(["repro", "multigrid:table3", "--scale", "smoke", "--out", out, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "| CE *(published)* | 0.045 | 0.050 | 0.060 | 17.37 | 15.40 | 17.04 |" in report  # as the column's cells
    assert {q["row"] for q in results["quoted"]} == {"CE"}
    cells = {(c["row"], c["column"]): c for c in results["cells"]}
    assert set(cells) == {(r, f"{k} {what}") for r in ROWS for k in KINDS for what in ("error", "PSNR")}
    assert all(c["status"] == "ok" and c["n_samples"] == [100] for c in cells.values())
    values = {}
    masks = {}
    for row, run in ROWS.items():
        evals = {json.loads(x)["label"]: json.loads(x)
                 for x in (out / "runs" / run / "evaluations.jsonl").read_text().splitlines()}
        for kind in KINDS:
            ev = evals[f"inpaint_{kind}"]
            assert ev["details"]["route"] == "model" and ev["details"]["pixel_range"] == 2.0
            masks.setdefault(kind, ev["details"]["missing_fraction"])
            assert ev["details"]["missing_fraction"] == masks[kind]  # every row scored on the same holes
            err, psnr = cells[(row, f"{kind} error")], cells[(row, f"{kind} PSNR")]
            assert err["ours"] == ev["value"] and psnr["ours"] == ev["details"]["psnr"]
            values[f"{run}_{kind}_error"] = err["ours"]
            values[f"{run}_{kind}_psnr"] = psnr["ours"]
    assert masks["square"] == pytest.approx(64 / 256)
    assert masks["pepper"] == pytest.approx(round(0.6 * 256) / 256)
    assert 0.25 <= masks["doodle"] < 0.25 + 5 / 256  # strokes stop within one radius-1 disc (5 pixels)
    num_regression.check(values, **TABLE_TOL)
