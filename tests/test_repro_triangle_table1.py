"""Divergence triangle Table 1 (IS on CIFAR-10, FID on CelebA): `coop repro triangle:table1
--scale smoke` end to end, pinned by golden numbers, and the seeded random CelebA split the
table's protocol needs (9,000 training / 1,000 held-out faces drawn at random).

The smoke scale trains every computed row (Ours, VAE, CoopNet, DCGAN, WGAN) on the embedded
digits, and every computed CelebA row (Ours, VAE, DCGAN, WGAN on generator samples, CoopNet on
its Langevin-revised samples) gets the same 8-sample FID at smoke (see the spec's notes).  `triangle_smoke_root` runs
Table 1 once per test session into a shared folder, so Table 2's test (which reuses Table 1's
runs through `use`) does not train them a second time.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from conftest import run_cli

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
_SMOKE: dict[str, Path] = {}


@contextmanager
def _single_threaded(cache: Path) -> Iterator[None]:
    """One BLAS thread (the FID's matrix square root runs in numpy, outside torch's thread
    setting) and a private FID cache, so the numbers and the time do not depend on the machine."""
    from threadpoolctl import threadpool_limits

    old = os.environ.get("COOP_CACHE")
    os.environ["COOP_CACHE"] = str(cache)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if old is None:
            os.environ.pop("COOP_CACHE", None)
        else:
            os.environ["COOP_CACHE"] = old


def run_triangle_smoke(table: str, root: Path) -> int:
    """`coop repro triangle:<table> --scale smoke` into ROOT/triangle-<table>-smoke, one thread."""
    with _single_threaded(root / "cache"):
        return run_cli(["repro", f"triangle:{table}", "--scale", "smoke", "--out", root / f"triangle-{table}-smoke",
                        "--no-progress", "--set", "run.threads=1"])


def triangle_smoke_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding Table 1's finished smoke runs (trained once per session)."""
    if "root" not in _SMOKE:
        root = tmp_path_factory.mktemp("triangle-repro")
        assert run_triangle_smoke("table1", root) == 0
        _SMOKE["root"] = root
    return _SMOKE["root"]


def _last_scalars(run_dir: Path) -> dict[str, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {k: float(v) for k, v in rows[-1].items()}


def test_golden_repro_triangle_table1_smoke(tmp_path_factory, num_regression):
    root = triangle_smoke_root(tmp_path_factory)
    out = root / "triangle-table1-smoke"
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert results["failed"] == 0
    assert set(results["runs"]) == {"ours-cifar", "ours-celeba", "vae-cifar", "vae-celeba", "coopnets-celeba",
                                    "dcgan-celeba", "wgan-celeba"}
    assert {r["status"] for r in results["runs"].values()} <= {"trained", "already-complete"}
    cells = {(c["row"], c["column"]): c for c in results["cells"]}
    fid = cells[("Ours", "CelebA (FID)")]
    assert fid["status"] == "ok" and fid["n_samples"] == [8] and fid["backend"][0].startswith("fid-helper")
    assert fid["published"] == 31.92 and fid["metric"] == "fid_generator"
    # the IS column needs torch-fidelity's weights: no IS at smoke, the cells say why
    assert cells[("Ours", "CIFAR-10 (IS)")]["status"] == "missing"
    assert "is_generator" in cells[("Ours", "CIFAR-10 (IS)")]["reason"]
    # every computed baseline gets Ours' FID at smoke: same sample count, same reference (the
    # CoopNet row on its Langevin-revised samples); their CIFAR runs do not exist at smoke
    baselines = {"VAE": "fid_generator", "DCGAN": "fid_generator", "WGAN": "fid_generator",
                 "CoopNet": "fid_revised"}
    for row, metric in baselines.items():
        c = cells[(row, "CelebA (FID)")]
        assert c["status"] == "ok" and c["metric"] == metric, c
        assert c["n_samples"] == fid["n_samples"] and c["backend"] == fid["backend"], c
        assert np.isfinite(c["ours"]) and c["ours"] > 0
    assert "no run matching 'dcgan-cifar'" in cells[("DCGAN", "CIFAR-10 (IS)")]["reason"]
    assert {q["row"] for q in results["quoted"]} == {"CEGAN", "ALI", "ALICE"}
    assert len(results["published"]) == 16
    assert "| CEGAN *(published)* | 7.07 | 41.89 |" in report
    values = {"ours_fid": fid["ours"]}
    values.update({f"{row.lower()}_fid": cells[(row, "CelebA (FID)")]["ours"] for row in baselines})
    # the baselines' recipes (objective, networks, optimisers) are pinned by their final losses
    pinned = {
        "ours-celeba": ("loss_ebm", "loss_encoder", "loss_generator"),
        "vae-celeba": ("loss", "kl"),
        "coopnets-celeba": ("loss_descriptor", "loss_generator"),
        "dcgan-celeba": ("loss_d", "loss_g"),
        "wgan-celeba": ("loss_d", "loss_g"),
    }
    for run_id, keys in pinned.items():
        scalars = _last_scalars(out / "runs" / run_id)
        assert scalars["iteration"] == 20
        for k in keys:
            values[f"{run_id}.{k}"] = scalars[k]
    # WGAN's weight clipping holds after training: every critic parameter within [-0.01, 0.01]
    from coopcore.checkpoint import load_checkpoint

    ckpt = sorted((out / "runs" / "wgan-celeba" / "checkpoints").glob("*.ckpt"))[-1]
    critic = load_checkpoint(ckpt)["models"]["descriptor"]
    assert max(float(t.abs().max()) for t in critic.values()) <= 0.01 + 1e-7
    num_regression.check(values, **TABLE_TOL)


# -- the seeded random CelebA split ---------------------------------------------------------
def _faces(folder: Path, n: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, size=(218, 178, 3), dtype=np.uint8)).save(folder / f"{i + 1:06d}.png")


def _ids(ds) -> list[int]:
    """Identify each image of a dataset by its index in the folder (the images are distinct)."""
    import torch

    return [int(v) for v in ds.get_batch(torch.arange(len(ds))).flatten(1).sum(1).round().tolist()]


def test_celeba_seeded_random_subset_and_split(tmp_path):
    """subset + split_seed: the splits come from one seeded permutation of the sorted files, are
    disjoint, have the requested sizes, do not depend on anything but the seed, and differ from
    the sorted order; too few images is a clear error."""
    from coop_datasets.celeba import CelebaOptions, celeba_dataset, select_files
    from coopcore import UsageError

    _faces(tmp_path / "celebA", 12)
    opts = dict(size=8, scaling="raw255", subset=10, test_size=3)
    train = celeba_dataset(CelebaOptions(split="train", split_seed=0, **opts), tmp_path)
    test = celeba_dataset(CelebaOptions(split="test", split_seed=0, **opts), tmp_path)
    everything = celeba_dataset(CelebaOptions(split="all", size=8, scaling="raw255"), tmp_path)
    assert (len(train), len(test)) == (7, 3)
    sums = _ids(everything)  # one sum per image of the folder, sorted order
    assert len(set(sums)) == 12
    tr, te = [sums.index(v) for v in _ids(train)], [sums.index(v) for v in _ids(test)]
    assert not set(tr) & set(te)
    expected = [int(i) for i in np.random.default_rng(0).permutation(12)[:10]]
    assert tr + te == expected  # numpy PCG64 permutation of the sorted list, cut to the subset
    assert tr != sorted(tr)
    again = celeba_dataset(CelebaOptions(split="train", split_seed=0, **opts), tmp_path)
    assert _ids(again) == _ids(train)
    other = celeba_dataset(CelebaOptions(split="train", split_seed=1, **opts), tmp_path)
    assert _ids(other) != _ids(train)
    # without a seed: the sorted order, as before (the first subset images, last test_size held out)
    plain = celeba_dataset(CelebaOptions(split="test", **opts), tmp_path)
    assert [sums.index(v) for v in _ids(plain)] == [7, 8, 9]
    with pytest.raises(UsageError, match="subset"):
        select_files(list(range(5)), 10, 0, tmp_path)


def test_table_specs_register_with_their_scales():
    from coopcore.plugin_manager import get_registries

    regs = get_registries()
    for key in ("triangle:table1", "triangle:table2", "triangle:table3"):
        spec = regs.table.create(key)
        assert spec.scales == ("smoke", "short", "full")
    t1 = regs.table.create("triangle:table1")
    assert {(p.row, p.column): p.value for p in t1.published}[("Ours", "CIFAR-10 (IS)")] == 7.23


BASELINES = {f"triangle-{d}-{m}": obj for d in ("cifar", "celeba")
             for m, obj in (("coopnets", "coopnets"), ("dcgan", "gan"), ("wgan", "gan"), ("vae", "vae"))}
BASELINES.update({"triangle-celeba-occluded-abp": "abp", "triangle-celeba-occluded-vae": "vae"})


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_recipes_resolve_with_the_triangle_networks_and_data(name):
    """The baseline recipes of Tables 1-3 use the triangle's networks of the same table and, for
    CelebA, the seeded random 10,000-image subset of the triangle's own recipes."""
    from coopcore.experiment import resolve
    from coopcore.plugin_manager import get_registries

    resolved = resolve(name, registries=get_registries())
    assert resolved.objective.name == BASELINES[name]
    table = "cifar" if "cifar" in name else "celeba"
    assert {m.name for m in resolved.models.values()} <= {f"triangle.{r}.{table}" for r in ("ebm", "generator", "encoder")}
    ours = resolve("triangle-celeba-occluded" if "occluded" in name else f"triangle-{table}", registries=get_registries())
    assert resolved.data.name == ours.data.name and resolved.data.options == ours.data.options
    if table == "celeba":
        assert resolved.data.options.subset == 10000 and resolved.data.options.split_seed == 0
    if "wgan" in name:
        assert resolved.objective.options.weight_clip == 0.01 and resolved.objective.options.loss == "wgan"
