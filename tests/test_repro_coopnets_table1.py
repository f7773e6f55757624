"""TPAMI Table 1 (Inception scores on ten ImageNet scene categories, n = 50 ... 1,100 per class).

- the spec's `full` scale expands to the paper's protocol: one model per n on the ten scene
  classes, 1,000 epochs (100 n updates of 100), the Inception score of 10 n samples with 10
  splits, for every computed row; the published numbers are the paper's, with their ±;
- `coop repro table1 --scale smoke` runs end to end and its numbers are pinned (golden).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from conftest import run_cli
from coopcore.experiment import resolve
from coopcore.tablespec import load_table_spec, plan_cells, plan_runs, quoted_rows

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
NS = [50, 100, 300, 500, 700, 900, 1100]
SCENE_WNIDS = ["n09193705", "n09246464", "n03042490", "n09288635", "n09332890", "n09399592", "n09421951",
               "n09428293", "n09468604", "n09472597"]  # alp ... volcano, the paper's order
# computed row -> (run prefix, objective, sample kind scored)
COMPUTED = {
    "CoopNets": ("coopnets", "coopnets", "revised"),
    "DCGAN": ("dcgan", "gan", "generator"),
    "W-GAN": ("wgan", "gan", "generator"),
    "VAE": ("vae", "vae", "generator"),
    "Algorithm G": ("algorithm-g", "algorithm_g", "generator"),
    "Persistent CD": ("pcd", "algorithm_d", "chains"),
}


def _spec():
    return load_table_spec(Path(str(resources.files("coop_coopnets.tables").joinpath("table1.toml"))))


def test_published_numbers_are_the_papers_table():
    spec = _spec()
    pub = {(p.row, p.column): (p.value, p.error) for p in spec.published}
    assert len(pub) == 9 * 7 and all(e is not None for _, e in pub.values())  # every cell has its ±
    # spot checks against the paper's Table 1 text (first, middle and last columns)
    assert pub[("CoopNets", "n = 50")] == (2.66, 0.13)
    assert pub[("CoopNets", "n = 1100")] == (3.79, 0.15)
    assert pub[("DCGAN", "n = 500")] == (3.05, 0.12)
    assert pub[("InfoGAN", "n = 100")] == (1.73, 0.01)
    assert pub[("Kim & Bengio [29]", "n = 50")] == (2.44, 0.27)
    assert pub[("Persistent CD", "n = 1100")] == (1.51, 0.02)
    assert pub[("VAE", "n = 900")] == (1.72, 0.02)
    assert quoted_rows(spec) == ["EBGAN", "InfoGAN", "Kim & Bengio [29]"]


def test_full_scale_is_the_papers_protocol():
    spec = _spec()
    planned = {p.id: p for p in plan_runs(spec, "full")}
    assert set(planned) == {f"{prefix}-n{n}" for prefix, _, _ in COMPUTED.values() for n in NS}
    for row, (prefix, objective, samples) in COMPUTED.items():
        for n in NS:
            p = planned[f"{prefix}-n{n}"]
            r = resolve(p.recipe, p.overrides)
            data = r.data.options
            assert r.data.entry.name == "imagenet_folder"
            assert list(data.classes) == SCENE_WNIDS and data.per_class == n and data.size == 64
            assert r.batching.batch_size == 100
            # 1,000 epochs of 10 n images in minibatches of 100
            assert r.run.iterations == 1000 * (10 * n) // 100
            assert r.objective.entry.name == objective
            (label, metric), = r.metrics
            assert label == "is" and metric.entry.name == "inception_score"
            o = metric.options
            assert (o.n_samples, o.splits, o.samples, o.backend) == (10 * n, 10, samples, "torch-fidelity")
    # the cells read each row's runs at every n, the IS ± from std_error (std over splits)
    cells = {(c.row, c.column): c for c in plan_cells(spec)}
    assert len(cells) == len(COMPUTED) * len(NS)
    c = cells[("CoopNets", "n = 300")]
    assert (c.run, c.metric, c.error, c.select) == ("coopnets-n300", "is", "std_error", "last")


def test_baselines_train_their_papers_way():
    """The W-GAN row really is weight-clipped WGAN; Algorithm G / PCD use CoopNets' networks."""
    spec = _spec()
    planned = {p.id: p for p in plan_runs(spec, "full")}
    wgan = resolve(planned["wgan-n100"].recipe, planned["wgan-n100"].overrides)
    o = wgan.objective.options
    assert (o.loss, o.weight_clip, o.d_steps, o.g_ema_kimg) == ("wgan", 0.01, 5, 0.0)
    assert wgan.optimizers["descriptor"].name == "rmsprop" and wgan.optimizers["descriptor"].lr == 5e-5
    coop = resolve(planned["coopnets-n100"].recipe, planned["coopnets-n100"].overrides)
    algo_g = resolve(planned["algorithm-g-n100"].recipe, planned["algorithm-g-n100"].overrides)
    pcd = resolve(planned["pcd-n100"].recipe, planned["pcd-n100"].overrides)
    assert algo_g.models["generator"].to_data() == coop.models["generator"].to_data()
    assert pcd.models["descriptor"].to_data() == coop.models["descriptor"].to_data()
    assert pcd.samplers["revision"].to_data() == coop.samplers["revision"].to_data()
    assert pcd.objective.options.persistent


@pytest.mark.parametrize("scale", ["smoke", "short"])
def test_reduced_scales_sweep_sizes_the_full_table_has(scale):
    """Every reduced-scale run lands in a column of the table (its n is one of the paper's)."""
    spec = _spec()
    ids = {p.id for p in plan_runs(spec, scale)}
    assert ids and all(int(i.rsplit("-n", 1)[1]) in NS for i in ids)
    assert {i.rsplit("-n", 1)[0] for i in ids} == {prefix for prefix, _, _ in COMPUTED.values()}


def test_golden_repro_table1_smoke(tmp_path, num_regression):
    out = tmp_path / "repro"
    code = run_cli(["repro", "coopnets:table1", "--scale", "smoke", "--out", out, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "| CoopNets | 2.66 ± 0.13 |" in report  # the paper's number beside ours
    assert "EBGAN *(published)*" in report
    assert results["failed"] == 0 and len(results["runs"]) == 12
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    assert {(c["row"], c["column"]) for c in ok} == {(row, f"n = {n}") for row in COMPUTED for n in (50, 100)}
    values = {}
    for c in ok:
        n = int(c["column"].split("= ")[1])
        assert c["n_samples"] == [10 * n]  # as many samples as training images
        assert c["backend"][0].startswith("digits ConvNet")
        assert 0.1 <= c["ours"] <= 1.0  # a mean top-class probability
        values[f"{COMPUTED[c['row']][0]}_n{n}"] = c["ours"]
    num_regression.check(values, **TABLE_TOL)
