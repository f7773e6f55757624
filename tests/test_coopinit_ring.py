"""CoopInit Figure 1 as a test: on the 2-D mixture of 8 Gaussians on a ring, the same GAN with
CoopInit covers more modes than without it, trained on the same number of images, over seeds.

Both experiments are the recipes coopinit-ring-gan.toml and coopinit-ring-coopinit.toml, built
and trained exactly as `coop train` does (recipe -> resolve -> build -> Trainer), and scored by
the recipes' own `gan.ring_modes` evaluations (a mode is covered with >= 20 of 5,000 samples
within 3 std of its centre; high quality = the fraction of samples within 3 std of a centre).

The quick test shrinks the run (see docs/coopinit.md for the measurements behind the choice):
batch 64 instead of 256, learning rate 3e-4 instead of 1e-4, 2,500 iterations instead of 6,000,
a cooperative stage of 500 iterations (a fifth of the run) instead of 1,500.  Measured over 12
seeds it keeps the effect (docs/coopinit.md); the test runs seeds 0-2.  The heavy test runs the recipes
at full strength (6,000 iterations at batch 256) over 4 seeds.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

QUICK = ["data.batch_size=64", "optimizers.descriptor.lr=3e-4", "optimizers.generator.lr=3e-4",
         "run.iterations=2500"]
# N <= n_coop for N = 0, 64, ..., 31,936: 500 cooperative iterations.
QUICK_COOP = ["objective.options.n_coop=31936"]
QUICK_SEEDS = (0, 1, 2)
# Tiny MLPs: one thread avoids the threading overhead that dominates at this size.
LIGHT_RUN = ["run.threads=1", "run.log_every=500", "run.sample_every=0", "run.sample_count=16",
             "run.checkpoint_every=0", "run.tensorboard=false"]


def train_ring(recipe: str, seed: int, overrides: list[str], run_dir: Path) -> dict[str, float]:
    """Train a packaged recipe as `coop train RECIPE --seed SEED --set ...` does; return the
    recipe's final evaluations by label ("modes", "high_quality")."""
    from coopcore.experiment import resolve
    from coopcore.run import train

    resolved = resolve(recipe, [*overrides, *LIGHT_RUN], seed=seed, device="cpu")
    summary = train(resolved, run_dir, progress=False, echo=lambda *_: None)
    return {e["label"]: float(e["value"]) for e in summary.evaluations}


def compare(seeds: tuple[int, ...], gan_overrides: list[str], coop_overrides: list[str], tmp_path: Path):
    """Train every (recipe, seed) pair; the runs are independent single-thread runs, so they go
    to one worker process per core (each is seeded: the result does not depend on where it ran)."""
    jobs = [("coopinit-ring-gan", s, gan_overrides, tmp_path / f"gan-{s}") for s in seeds]
    jobs += [("coopinit-ring-coopinit", s, coop_overrides, tmp_path / f"coop-{s}") for s in seeds]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers == 1:
        results = [train_ring(*job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(train_ring, *zip(*jobs)))
    return results[: len(seeds)], results[len(seeds):]


def _mean(rows: list[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def test_coopinit_covers_more_modes_than_the_gan(tmp_path):
    gan, coop = compare(QUICK_SEEDS, QUICK, QUICK + QUICK_COOP, tmp_path)
    shown = (f"modes GAN {[r['modes'] for r in gan]} CoopInit {[r['modes'] for r in coop]}; "
             f"high quality GAN {[round(r['high_quality'], 2) for r in gan]} "
             f"CoopInit {[round(r['high_quality'], 2) for r in coop]}")
    print(shown)
    # Over seeds 0-11 this configuration gave GAN 4.0 and CoopInit 6.1 modes on average, CoopInit
    # between 4 and 7 on every seed, the GAN between 0 and 8 (docs/coopinit.md).
    assert _mean(coop, "modes") >= _mean(gan, "modes") + 1.0, shown
    assert min(r["modes"] for r in coop) >= 4, shown
    # CoopInit's modes are real modes: a good share of its samples sit on the mixture's centres.
    assert _mean(coop, "high_quality") > 0.15, shown


@pytest.mark.heavy
def test_coopinit_covers_more_modes_full_strength(tmp_path):
    """The recipes as shipped (batch 256, lr 1e-4, 6,000 iterations; CoopInit for 1,501)."""
    gan, coop = compare((0, 1, 2, 3), [], [], tmp_path)
    shown = f"modes GAN {[r['modes'] for r in gan]} CoopInit {[r['modes'] for r in coop]}"
    # Seeds 0-7 measured: GAN 3.5, CoopInit 6.9 on average (docs/coopinit.md).
    assert _mean(coop, "modes") >= _mean(gan, "modes") + 2.0, shown
