"""`coop bench`: the plain loops are like for like with the framework, the report holds what it
promises, the CLI stays backward compatible, and the GPU check script runs (and says so) on CPU.

Everything runs on tiny digits networks in seconds; the real measurement is the committed
`benchmarks/` output of the CLI.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]

# Small versions of each objective's benchmark recipe (same code paths, tiny networks and batches).
TINY = {
    "coopnets": ("coopnets-digits", [
        "data.batch_size=8", "objective.options.n_chains=8", "samplers.revision.options.n_steps=2",
        "models.descriptor.options.channels=[4,8]", "models.generator.options.channels=[8,4]"]),
    "algorithm_d": ("pcd-digits", [
        "data.batch_size=8", "objective.options.n_chains=8", "samplers.revision.options.n_steps=2",
        "models.descriptor.options.channels=[4,8]"]),
    "multigrid": ("multigrid-digits", ["data.batch_size=4", "samplers.revision.options.n_steps=2"]),
    "triangle": ("triangle-digits", ["data.batch_size=4", "models.descriptor.options.channels=[4,8,8]",
                                     "models.encoder.options.channels=[4,8,8]",
                                     "models.generator.options.channels=[8,8,4]"]),
    "coopinit": ("coopinit-digits", ["data.batch_size=8", "objective.options.langevin_steps=2"]),
}


def _bench(objective: str, **kw):
    from coopcore.bench import run_objective_bench

    recipe, sets = TINY[objective]
    return run_objective_bench(recipe, sets, device=torch.device("cpu"), repeats=kw.pop("repeats", 2),
                               warmup=kw.pop("warmup", 1), peak_flops=1e9, objective=objective, **kw)


@pytest.mark.parametrize("objective", list(TINY))
def test_plain_loop_is_like_for_like(objective):
    """From the same seed and batch, the hand-written iteration leaves exactly the framework's
    parameters, and does the same FLOPs: the comparison measures overhead, not different work."""
    res = _bench(objective)
    assert res["objective"] == objective
    assert res["same_parameters_after_first_iteration"] == {"identical": True, "max_abs_difference": 0.0}
    flops = res["flops_per_iteration"]
    assert flops["framework"] == flops["plain"] > 0
    it = res["iteration"]
    assert it["framework_s"]["n"] == it["plain_s"]["n"] == 2
    assert it["ratio_of_medians"] == pytest.approx(it["framework_s"]["median"] / it["plain_s"]["median"])
    assert (res["sampler"] is None) == (objective == "triangle")  # the triangle has no sampler
    assert res["memory"] == {"framework": None, "plain": None}  # CUDA only


def test_plain_loops_keep_agreeing_over_iterations():
    """Several CoopNets iterations (persistent BN statistics, Adam state) stay bit-identical."""
    from coopcore.bench_plain import make_plain_loop
    from coopcore.build import build_experiment
    from coopcore.data import BatchSchedule
    from coopcore.experiment import resolve
    from coopcore.protocols import Batch
    from coopcore.rng import make_generator, seed_everything

    recipe, sets = TINY["coopnets"]
    resolved = resolve(recipe, sets)
    dev = torch.device("cpu")
    seed_everything(0)
    exp = build_experiment(resolved, dev)
    seed_everything(0)
    models = build_experiment(resolved, dev).parts.models
    plain = make_plain_loop(resolved, models, dev, torch.Generator().manual_seed(0))
    gen = make_generator(0, dev)
    sched = BatchSchedule(len(exp.dataset), 8, 0)
    for t in range(3):
        idx = sched.indices(t)
        exp.objective.step(Batch(exp.dataset.get_batch(idx), idx), gen)
        plain.step(exp.dataset.get_batch(idx), idx)
    for role, model in exp.parts.models.items():
        for (k, a), b in zip(model.state_dict().items(), models[role].state_dict().values()):
            assert torch.equal(a, b), f"{role}.{k}"


def test_plain_loop_refuses_what_it_does_not_implement():
    from coopcore.errors import UsageError

    recipe, sets = TINY["coopnets"]
    with pytest.raises(UsageError, match="inference"):
        from coopcore.bench import run_objective_bench

        run_objective_bench(recipe, [*sets, "samplers.inference={name='langevin_inference', options={n_steps=1}}"],
                            device=torch.device("cpu"), repeats=1, warmup=1, peak_flops=1e9)


def test_count_flops_matches_a_matmul_and_survives_input_gradients():
    from coopcore.bench import count_flops

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    x = torch.randn(3, 5, requires_grad=True)
    w = torch.randn(5, 2)
    # torch.autograd.grad w.r.t. a leaf input, as every Langevin step does.
    assert count_flops(lambda: torch.autograd.grad((x @ w).sum(), x)) > 0


def test_cli_objective_bench_writes_json_and_markdown(tmp_path, capsys):
    recipe, sets = TINY["algorithm_d"]
    out, md = tmp_path / "b.json", tmp_path / "b.md"
    args = ["bench", "--recipe", recipe, "--device", "cpu", "--repeats", "2", "--warmup", "1",
            "--json", out, "--markdown", md]
    for s in sets:
        args += ["--set", s]
    assert run_cli(args) == 0
    report = json.loads(out.read_text())
    prov = report["provenance"]
    for key in ("device", "device_name", "torch", "commit", "torch_threads", "date_utc", "load_average_start"):
        assert key in prov
    assert prov["torch"] == torch.__version__
    assert report["peak_flops"]["measured_fp32_matmul"] > 0
    (res,) = report["results"]
    assert res["objective"] == "algorithm_d" and res["overrides"] == sets
    table = md.read_text()
    assert "| algorithm_d | `pcd-digits` |" in table and "bit-identical" in table
    assert "| algorithm_d |" in capsys.readouterr().out  # the table is printed too


def test_cli_bench_usage_errors(capsys):
    assert run_cli(["bench", "--objective", "coopnets", "--batch", "4"]) == 2
    assert "legacy" in capsys.readouterr().err
    assert run_cli(["bench", "--objective", "coopnets", "--objective", "triangle", "--recipe", "pcd-digits"]) == 2
    assert run_cli(["bench", "--objective", "coopnets", "--recipe", "pcd-digits", "--device", "cpu"]) == 2
    assert "algorithm_d" in capsys.readouterr().err


def test_cli_legacy_bench_still_works(capsys):
    """`coop bench` without --objective keeps its options and its JSON flag."""
    args = ["bench", "--device", "cpu", "--batch", "2", "--steps", "2", "--repeats", "1",
            "--descriptor", "coopnets.descriptor.mnist", "--json"]
    assert run_cli(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["benchmark"] == "langevin_revision" and res["steps"] == 2


def test_gpu_check_script_runs_on_cpu_and_says_so(tmp_path):
    """The prepared GPU check, in its quick mode on a CPU: it falls back visibly and writes
    everything it measured, with provenance, into one folder."""
    out = tmp_path / "gpu-check"
    env = {**os.environ, "PYTHON": sys.executable, "COOP_TEST_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--quick", "--no-install", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if not torch.cuda.is_available():
        assert "no CUDA" in proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cuda"] is torch.cuda.is_available()
    assert {step["name"] for step in summary["steps"]} >= {"tests", "bench", "table2"}
    assert all(step["rc"] == 0 for step in summary["steps"]), summary["steps"]
    assert (out / "provenance.json").is_file() and (out / "bench.json").is_file() and (out / "bench.md").is_file()
    assert (out / "table2" / "results.json").is_file()
