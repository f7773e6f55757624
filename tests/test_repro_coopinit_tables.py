"""CoopInit's twelve tables through `coop repro coopinit:tableN --scale smoke`, pinned by golden
numbers, and checks that each table's sweep reaches the configuration it names.

All tables are trained once per session into one output root (`coopinit_smoke_root`), in the
order that lets tables reading another table's runs (`use`) find them already finished.  Each
golden test pins its table's computed cells and the final losses of the runs it trained; the
structural checks read the runs' resolved configs and logged scalars, independently of the
harness's report code.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import run_cli

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
# Tables that others read (7 and 1) first.
ORDER = ["table7", "table1", "table2", "table3", "table4", "table5", "table6", "table8", "table9", "table10",
         "table11", "table12"]
_ROOT: dict[str, Path] = {}


def coopinit_smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output root holding every CoopInit table's smoke runs (trained once per session)."""
    if "root" not in _ROOT:
        from threadpoolctl import threadpool_limits

        root = tmp_path_factory.mktemp("coopinit-repro")
        codes = {}
        with threadpool_limits(limits=1):
            for table in ORDER:
                codes[table] = run_cli(["repro", f"coopinit:{table}", "--scale", "smoke", "--out-root", root,
                                        "--no-progress", "--set", "run.threads=1"])
        _ROOT["root"], _ROOT["codes"] = root, codes
    return _ROOT["root"]


def _results(root: Path, table: str) -> dict:
    return json.loads((root / f"coopinit-{table}-smoke" / "results.json").read_text())


def _run_dir(root: Path, table: str, run_id: str) -> Path:
    return root / f"coopinit-{table}-smoke" / "runs" / run_id


def _config(root: Path, table: str, run_id: str) -> dict:
    return json.loads((_run_dir(root, table, run_id) / "config.json").read_text())


def _scalars(root: Path, table: str, run_id: str) -> list[dict]:
    return [json.loads(x) for x in (_run_dir(root, table, run_id) / "metrics.jsonl").read_text().splitlines()]


def _pinned(root: Path, table: str) -> dict[str, float]:
    """The table's computed cells and the final losses of every run it trained itself."""
    results = _results(root, table)
    values = {}
    for c in results["cells"]:
        if c["status"] == "ok":
            values[f"{c['row']} | {c['column']}"] = c["ours"]
    for run_id, run in sorted(results["runs"].items()):
        if run["status"] in ("trained", "already-complete"):
            last = _scalars(root, table, run_id)[-1]
            for key in ("loss_d", "loss_g"):
                values[f"{run_id}.{key}"] = float(last[key])
    return values


@pytest.mark.parametrize("table", ORDER)
def test_golden_repro_coopinit_smoke(table, tmp_path_factory, num_regression):
    """Every table runs at smoke on a fresh install without a failed run; every computed cell
    that exists at smoke is a finite FID of 8 samples; quoted rows are labelled; the numbers are
    pinned."""
    root = coopinit_smoke_root(tmp_path_factory)
    assert _ROOT["codes"][table] == 0, f"coop repro coopinit:{table} exited {_ROOT['codes'][table]}"
    results = _results(root, table)
    assert results["failed"] == 0
    ok = [c for c in results["cells"] if c["status"] == "ok"]
    assert ok, "no computed cell at smoke"
    for c in ok:
        if c["metric"] == "fid":
            assert c["n_samples"] == [8] * len(c["values"]) and math.isfinite(c["ours"]) and c["ours"] > 0, c
    for c in results["cells"]:
        assert c["status"] in ("ok", "missing"), c
    report = (root / f"coopinit-{table}-smoke" / "report.md").read_text()
    for q in results["quoted"]:
        assert f"| {q['row']} *(published)*" in report
    num_regression.check(_pinned(root, table), **TABLE_TOL)


@pytest.mark.golden  # reads the golden tests' runs: in their pass, so the tables train once per session
def test_the_sweeps_reach_the_configurations_they_name(tmp_path_factory):
    """Read back from the trained runs: the baseline rows have no cooperative stage and the
    CoopInit rows start with one; the swept learning rate, R1 gamma, loss, architecture,
    discriminator scale, Langevin settings, subset size and ADA reach the resolved configs, and
    ADA adapts p only in the runs that have it."""
    root = coopinit_smoke_root(tmp_path_factory)

    def stages(table: str, run_id: str) -> list[float]:
        return [row["stage"] for row in _scalars(root, table, run_id)]

    # Table 7: method x gamma x lr.
    for method in ("stylegan2", "coopinit"):
        for gamma in ("0.0", "0.01"):
            for lr in ("0.0025", "0.003"):
                run_id = f"{method}-gamma{gamma}-lr{lr}-s0"
                cfg = _config(root, "table7", run_id)
                assert cfg["optimizers"]["descriptor"]["lr"] == float(lr) == cfg["optimizers"]["generator"]["lr"]
                assert cfg["objective"]["options"]["r1_gamma"] == float(gamma)
                s = stages("table7", run_id)
                assert (s[0] == 0.0) == (method == "coopinit") and s[-1] == 1.0, (run_id, s)
    # Table 5: the losses.
    for loss in ("hinge", "wgan_gp"):
        assert _config(root, "table5", f"coopinit-{loss}-s0")["objective"]["options"]["loss"] == loss
    # Table 8: the discriminator's architecture, and the row's gamma.
    for arch in ("resnet", "skip"):
        cfg = _config(root, "table8", f"stylegan2-{arch}-s0")
        assert cfg["models"]["descriptor"]["options"]["architecture"] == arch
        assert cfg["objective"]["options"]["r1_gamma"] == 0.01
        assert _config(root, "table8", f"coopinit-{arch}-s0")["objective"]["options"]["r1_gamma"] == 0.0
    # Table 9: the discriminator's scale changes its size; the generator's does not change.
    small, large = (_config(root, "table9", f"coopinit-d{s}-s0")["models"] for s in ("1_16", "1_1"))
    assert small["descriptor"]["options"]["capacity"] == 0.0625 and large["descriptor"]["options"]["capacity"] == 1.0
    assert small["generator"]["options"]["capacity"] == large["generator"]["options"]["capacity"] == 0.25
    # Table 12: eta and T.
    for (eta, steps) in ((0.5, 10), (5.0, 10), (1.0, 5), (1.0, 15)):
        o = _config(root, "table12", f"coopinit-eta{eta}-T{steps}-s0")["objective"]["options"]
        assert (o["eta"], o["langevin_steps"]) == (eta, steps)
    # Tables 10-11: the subset, and ADA's p moves only with ADA, only after the cooperative stage.
    for table in ("table10", "table11"):
        for method in ("stylegan2", "coopinit", "stylegan2-ada", "coopinit-ada"):
            run_id = f"{method}-10K-s0"
            assert _config(root, table, run_id)["data"]["options"]["limit"] == 200
            rows = _scalars(root, table, run_id)
            p = [row.get("augment_p") for row in rows if row["stage"] == 1.0]
            if method.endswith("-ada"):
                assert p[-1] > 0.0, (table, run_id, p)
            else:
                assert all(v is None for v in p), (table, run_id, p)
    # Conditional rows (Tables 1, 3, 8) build networks with the digits' 10 classes; the
    # unconditional ones none.
    for table, run_id in (("table1", "stylegan2-ada-cond-s0"), ("table3", "coopinit-cond32-s0"),
                          ("table8", "coopinit-cond-s0"), ("table1", "biggan-cond-s0"), ("table3", "biggan-64-s0")):
        models = _config(root, table, run_id)["models"]
        assert models["descriptor"]["options"]["n_classes"] == 10 == models["generator"]["options"]["n_classes"], run_id
    assert _config(root, "table3", "coopinit-uncond32-s0")["models"]["generator"]["options"]["n_classes"] == 0
    # BigGAN: the authors' 4 D steps per G step on CIFAR-10; the 64 preset's hierarchical z.
    assert _config(root, "table1", "biggan-cond-s0")["objective"]["options"]["d_steps"] == 4
    assert _config(root, "table3", "biggan-64-s0")["models"]["generator"]["options"]["hier"] is True
    # Table 4: CUT + CoopInit begins with the cooperative stage (MCMC teaching), plain CUT never has one.
    for task in ("cat2dog", "horse2zebra"):
        assert "loss_teach" in _scalars(root, "table4", f"coopinit-cut-{task}")[0]
        assert not any("loss_teach" in row for row in _scalars(root, "table4", f"cut-{task}"))
    # Table 6: spectral norm and zCR reach the runs that name them.
    assert _config(root, "table6", "r1-sn-s0")["models"]["descriptor"]["options"]["spectral_norm"] is True
    assert _config(root, "table6", "r1-zcr-s0")["objective"]["options"]["zcr"]["weight_dis"] == 5.0
    assert _config(root, "table6", "base-s0")["models"]["descriptor"]["options"]["spectral_norm"] is False
