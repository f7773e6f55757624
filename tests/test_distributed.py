"""Training on two processes with the gloo backend on CPU (docs/distributed.md).

The ranks are forked from the test process (torch and the plugins are already imported, so a
rank starts in milliseconds) and join a gloo process group, exactly as under torchrun.

- Equality with one process: two ranks with data.batch_size = B reproduce, to floating-point
  tolerance, one process with data.batch_size = 2B, when the iteration uses no random numbers
  (Algorithm D, chains started from the data, Langevin noise off).
- Resume: a two-process CoopNets run (latents and Langevin noise drawn from per-rank streams)
  stopped and resumed with two processes equals the uninterrupted one bit for bit; one process
  refuses to resume it (exit 2, a message naming the process count), and two processes refuse
  to resume a single-process run.
- Per-example state: the triangle's imputation buffer is identical on both ranks.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import traceback
from pathlib import Path

import pytest
import torch

from coopcore.checkpoint import load_checkpoint
from coopcore.experiment import resolve_data
from coopcore.distributed import free_port

from conftest import assert_identical, run_cli

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not torch.distributed.is_available() or "fork" not in multiprocessing.get_all_start_methods(),
                       reason="needs torch.distributed and fork"),
]

TINY_D = {"name": "coopnets.descriptor", "options": {"input_shape": [1, 16, 16], "channels": [8, 16],
          "kernels": [4, 4], "strides": [2, 2], "fc_outputs": 10, "reference_std": 0.3}}
TINY_G = {"name": "coopnets.generator", "options": {"latent_dim": 8, "sizes": [4, 8, 16], "channels": [16, 8],
          "kernels": [4, 4, 4]}}


def config(objective: str, iterations: int, batch_size: int, noise: bool = True) -> dict:
    models = {"descriptor": TINY_D}
    opts = {"descriptor": {"lr": 1e-3, "betas": [0.5, 0.999]}}
    if objective == "coopnets":
        models["generator"] = TINY_G
        opts["generator"] = {"lr": 1e-3, "betas": [0.5, 0.999]}
    return {
        "run": {"name": objective, "seed": 3, "iterations": iterations, "log_every": 1, "sample_every": 0,
                "checkpoint_every": 2, "tensorboard": False, "sample_count": 4, "threads": 1, "device": "cpu"},
        "data": {"name": "digits", "batch_size": batch_size, "options": {"size": 16, "limit": 64}},
        "models": models,
        "samplers": {"revision": {"name": "langevin_revision",
                                  "options": {"n_steps": 3, "step_size": 0.03, "noise": noise}}},
        "optimizers": opts, "objective": {"name": objective},
    }


def triangle_config(iterations: int) -> dict:
    from coop_triangle.objective import Triangle

    ex = Triangle.contract_example
    return {
        "run": {"name": "triangle", "seed": 5, "iterations": iterations, "log_every": 1, "sample_every": 0,
                "checkpoint_every": 0, "tensorboard": False, "sample_count": 4, "threads": 1, "device": "cpu"},
        "data": {"name": "synthetic", "batch_size": 2, "options": {"shape": [1, 8, 8], "n": 8}},
        "models": ex["models"], "optimizers": ex["optimizers"],
        "objective": {"name": "triangle", "options": ex["options"]},
    }


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory):
    """One single-process iteration first: the forked ranks then inherit every lazy import and
    initialisation (image writing, autograd, the data set's loader) instead of each paying it."""
    from coopcore.plugin_manager import get_registries

    torch.set_num_threads(1)
    train_one(config("coopnets", 1, 8), tmp_path_factory.mktemp("warm") / "run", get_registries())


def _rank_main(rank: int, world: int, jobs: list, errors) -> None:
    """One rank: run each (config, run dir, resume, port) job through `coopcore.run.train`."""
    code = 0
    try:
        from coopcore.distributed import Distributed
        from coopcore.plugin_manager import get_registries
        from coopcore.run import train

        torch.set_num_threads(1)
        reg = get_registries()
        for data, out, resume, port in jobs:
            os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
            train(resolve_data(data, registries=reg), out, resume=resume, progress=False, echo=lambda m: None,
                  registries=reg, dist=Distributed.from_environment())
    except BaseException:  # noqa: BLE001 - report to the test process
        errors.put(f"rank {rank}:\n{traceback.format_exc()}")
        code = 1
    finally:
        os._exit(code)  # skip the forked pytest's own exit handlers


def run_ranks(jobs: list[tuple[dict, Path, bool]], world: int = 2, timeout: float = 120.0,
              expect_failure: bool = False) -> list[str]:
    """Run `jobs` one after another on `world` forked processes (one process group per job);
    return the ranks' error reports (asserting there are none unless `expect_failure`)."""
    ctx = multiprocessing.get_context("fork")
    errors = ctx.SimpleQueue()
    jobs_p = [(data, out, resume, free_port()) for data, out, resume in jobs]
    procs = [ctx.Process(target=_rank_main, args=(r, world, jobs_p, errors)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if expect_failure:
        assert messages and all(p.exitcode == 1 for p in procs), [p.exitcode for p in procs]
    else:
        assert not messages and all(p.exitcode == 0 for p in procs), "\n".join(messages) or str(
            [p.exitcode for p in procs])
    return messages


def train_one(data: dict, out: Path, registries, resume: bool = False):
    from coopcore.run import train

    return train(resolve_data(data, registries=registries), out, resume=resume, progress=False,
                 echo=lambda m: None, registries=registries)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_reproduce_the_combined_batch(tmp_path, registries):
    """2 ranks x batch 8 == 1 process x batch 16 (no random numbers in the iteration)."""
    run_ranks([(config("algorithm_d", 4, 8, noise=False), tmp_path / "two", False)])
    train_one(config("algorithm_d", 4, 16, noise=False), tmp_path / "one", registries)

    two = load_checkpoint(tmp_path / "two" / "checkpoints" / "iter-00000004.ckpt")
    one = load_checkpoint(tmp_path / "one" / "checkpoints" / "iter-00000004.ckpt")
    assert two["distributed"]["world_size"] == 2 and "distributed" not in one
    assert two["images_seen"] == one["images_seen"] == 64
    # Relative to each tensor's largest entry: the two processes sum the batch in two halves, and
    # the rounding differences grow over four Adam steps (whose normalisation magnifies them on
    # near-zero gradient entries), so a small entry can differ by more than an elementwise rtol
    # allows (measured: at most 5e-5 of the tensor's scale with portable numerics, 1e-5 with the
    # machine's fast kernels).
    for name, p in one["models"]["descriptor"].items():
        worst = (two["models"]["descriptor"][name] - p).abs().max().item()
        assert worst <= 1e-4 * p.abs().max().item() + 1e-6, (name, worst)
    # the chains: rank 0 holds the first half of the combined batch's, rank 1 the second
    chains = torch.cat([two["objective"]["chains"], two["distributed"]["objective"][1]["chains"]])
    torch.testing.assert_close(chains, one["objective"]["chains"], rtol=1e-4, atol=1e-5)
    m2, m1 = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert [r["iteration"] for r in m2] == [1, 2, 3, 4]
    for a, b in zip(m2, m1):
        assert a["images_seen"] == b["images_seen"]
        for key in ("loss_descriptor", "score_obs", "score_syn", "energy_obs", "energy_syn", "grad_norm_descriptor"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # rank 1 wrote nothing of its own: one checkpoint per save, one metrics line per iteration
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "iter-00000002.ckpt", "iter-00000004.ckpt", "latest.json"]
    assert json.loads((tmp_path / "two" / "provenance.json").read_text())["world_size"] == 2


def test_two_process_resume_equals_uninterrupted_run(tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_ranks([
        (config("coopnets", 4, 8), straight, False),
        (config("coopnets", 2, 8), split, False),      # stops after iteration 2 ...
        (config("coopnets", 4, 8), split, True),       # ... and continues to 4
    ])
    a = load_checkpoint(straight / "checkpoints" / "iter-00000004.ckpt")
    b = load_checkpoint(split / "checkpoints" / "iter-00000004.ckpt")
    for key in ("models", "optimizers", "objective", "iteration", "images_seen", "distributed"):
        assert_identical(a[key], b[key], key)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    ranks = a["distributed"]
    assert ranks["rng"][0] is None and not torch.equal(ranks["rng"][1]["generator"], a["rng"]["generator"])
    assert metrics(straight) == metrics(split)

    # one process cannot continue a two-process run: exit 2, no traceback, the count named
    capsys.readouterr()
    assert run_cli(["train", split, "--resume", "--set", "run.iterations=6", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trained by 2 processes" in err and "--nproc-per-node 2" in err and "Traceback" not in err


def test_per_example_state_is_identical_on_every_rank(tmp_path):
    """The triangle's imputation buffer (per_example_state) holds every rank's updates on every rank."""
    run_ranks([(triangle_config(4), tmp_path / "tri", False)])
    ckpt = load_checkpoint(tmp_path / "tri" / "checkpoints" / "iter-00000004.ckpt")
    rank0 = ckpt["objective"]["occlusion"]["imputed"]
    rank1 = ckpt["distributed"]["objective"][1]["occlusion"]["imputed"]
    assert torch.equal(rank0, rank1)
    # every example was in some rank's batch (8 examples, global batch 4, 4 iterations), so on
    # both ranks every example's holes hold a reconstruction, not the initial fill value (which
    # the observed positions keep)
    masks = ckpt["objective"]["occlusion"]["masks"].expand_as(rank0)
    for i in range(rank0.shape[0]):
        fill = rank0[i][masks[i]][0]
        assert bool((rank0[i][~masks[i]] != fill).all()), i


def test_two_processes_refuse_to_resume_a_single_process_run(tmp_path, registries):
    train_one(config("algorithm_d", 2, 8), tmp_path / "one", registries)
    messages = run_ranks([(config("algorithm_d", 4, 8), tmp_path / "one", True)], expect_failure=True)
    assert len(messages) == 2 and all("was trained by one process" in m and "UsageError" in m for m in messages)
    assert metrics(tmp_path / "one")[-1]["iteration"] == 2  # nothing was written


def test_rank_seeds():
    from coopcore.distributed import rank_seed

    assert rank_seed(3, 0) == 3  # rank 0 draws what a single process draws
    seeds = {rank_seed(s, r) for s in range(4) for r in range(1, 8)}
    assert len(seeds) == 28 and not seeds & set(range(4)) and rank_seed(3, 1) == rank_seed(3, 1)


def test_batches_that_cannot_be_split_are_refused():
    from coopcore.errors import UsageError
    from coopcore.trainer import check_global_batch

    check_global_batch(64, 8, 2, drop_last=True)
    with pytest.raises(UsageError, match="only 8"):
        check_global_batch(8, 8, 2, drop_last=True)
    with pytest.raises(UsageError, match="drop_last"):
        check_global_batch(10, 2, 2, drop_last=False)
