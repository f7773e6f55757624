"""`coop bench`: what the framework costs against plain PyTorch, measured side by side in one process.

Two benchmarks.

The objective benchmark (`run_objective_bench`, ``coop bench --objective ...``) builds a recipe
twice from the same seed: once as `coop train` builds it (the registered objective, samplers and
optimisers), once as plain networks driven by a hand-written loop (`coopcore.bench_plain`).
It times, interleaved round by round (the order alternating, so drift in the machine's load
hits both alike):

- the whole iteration as the trainer runs it: read the batch of the seeded schedule, move it to
  the device, ``objective.step``, read every scalar back in one transfer; against the plain
  loop's batch read, step and one read-back of its losses;
- the objective's sampler alone, from the same start, against the hand-written Langevin loop;

and reports medians with their spread, the ratio framework / plain (of the medians, and the
median of the per-round ratios), the FLOPs of one iteration counted with
``torch.utils.flop_counter.FlopCounterMode`` (for both sides: equal counts say the two loops do
the same work), the achieved FLOP rate against the device's peak (a large matmul measured here,
and the data-sheet figure where the device is known), the peak memory of an iteration (CUDA),
and whether the first iteration of both sides, from the same seed and batch, left the same
parameters (the check that the comparison is like for like).

The legacy benchmark (`run_bench`, plain ``coop bench``) times the Langevin revision loop
against an eager loop written the way the papers' public code writes it: the input is a leaf
that requires grad, the energy is back-propagated with `.backward()` (so every parameter's
gradient is computed and accumulated too), the noise comes from the global RNG, and the energy
is read with `.item()` every step for logging (a host sync per step).
"""
from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def eager_langevin(descriptor: torch.nn.Module, y0: torch.Tensor, steps: int, delta: float) -> tuple[torch.Tensor, list[float]]:
    """Langevin revision as the authors' ports write it (the baseline)."""
    s2 = descriptor.reference_std**2
    y = y0.clone()
    energies = []
    for _ in range(steps):
        y = y.detach().requires_grad_(True)
        energy = (y.pow(2).sum() / (2 * s2) - descriptor.score(y).sum())
        energy.backward()
        energies.append(energy.item() / y.shape[0])
        y = y - 0.5 * delta**2 * y.grad + delta * torch.randn_like(y)
    descriptor.zero_grad(set_to_none=True)
    return y.detach(), energies


def run_bench(device: torch.device, batch: int = 100, steps: int = 10, repeats: int = 5,
              descriptor_name: str = "coopnets.descriptor.mnist", registries: Any = None) -> dict[str, Any]:
    from .plugin_manager import get_registries

    reg = registries or get_registries()
    torch.manual_seed(0)
    descriptor = reg.energy.create(descriptor_name).to(device)
    sampler_entry = reg.sampler.get("langevin_revision")
    sampler = reg.sampler.create("langevin_revision", sampler_entry.options(n_steps=steps, step_size=0.002))
    y0 = torch.randn(batch, *descriptor.input_shape, device=device) * 0.1
    gen = torch.Generator(device=device).manual_seed(0)

    def framework() -> None:
        sampler.run(lambda y: -descriptor.energy(y), y0, gen)

    def baseline() -> None:
        eager_langevin(descriptor, y0, steps, 0.002)

    # Interleave the two so drift in machine load affects both alike.
    t_fw, t_base = [], []
    for _ in range(repeats):
        t_fw += _time(framework, device, 1, warmup=1 if not t_fw else 0)
        t_base += _time(baseline, device, 1, warmup=1 if not t_base else 0)
    med_fw, med_base = statistics.median(t_fw), statistics.median(t_base)
    return {
        "benchmark": "langevin_revision",
        "descriptor": descriptor_name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "framework_s_median": med_fw,
        "baseline_s_median": med_base,
        "speedup_baseline_over_framework": med_base / med_fw,
    }


# ---------------------------------------------------------------------------------------
# The objective benchmark.

# The recipe each objective is benchmarked on by default: the paper's MNIST networks for
# CoopNets (the number the target is about), the small digits recipes for the others.
BENCH_RECIPES: dict[str, str] = {
    "coopnets": "coopnets-mnist",
    "algorithm_d": "pcd-digits",
    "multigrid": "multigrid-digits",
    "triangle": "triangle-digits",
    "coopinit": "coopinit-digits",
}

# Dense data-sheet peaks (FLOP/s) by device-name fragment: (fp32 without tensor cores, tf32
# tensor cores, bf16 tensor cores).  The achieved rate is also given against a matmul measured
# on the spot, which is what a CPU has in place of a data sheet.
SPEC_PEAKS: dict[str, tuple[float, float, float]] = {
    "H200": (67e12, 494.7e12, 989.4e12),
    "H100": (67e12, 494.7e12, 989.4e12),
    "A100": (19.5e12, 156e12, 312e12),
    "L40S": (91.6e12, 183e12, 362e12),
    "A10G": (31.2e12, 62.5e12, 125e12),
}


def _stats(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of a list of measurements."""
    v = sorted(values)
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"median": statistics.median(v), "p25": q[0], "p75": q[2], "min": v[0], "max": v[-1], "n": len(v)}


def _git_commit(repo: Path) -> dict[str, Any]:
    """The commit of the source tree the benchmark ran from (read-only git), and whether it was modified."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"commit": head, "modified": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and on what a benchmark ran: device, torch, commit, threads, load."""
    cuda = device.type == "cuda"
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **_git_commit(Path(__file__).resolve().parents[1]),
        "load_average_start": list(os.getloadavg()),
    }


def measured_peak_flops(device: torch.device, size: Optional[int] = None, repeats: int = 5) -> float:
    """FLOP/s of a large fp32 matmul on `device` (best of `repeats`): the practical peak."""
    n = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = min(_time(lambda: a @ b, device, repeats, warmup=2))
    return 2.0 * n**3 / best


def spec_peak_flops(device: torch.device) -> Optional[dict[str, float]]:
    """The data-sheet dense peaks of a known CUDA device (None elsewhere)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (fp32, tf32, bf16) in SPEC_PEAKS.items():
        if key in name:
            return {"fp32": fp32, "tf32": tf32, "bf16": bf16}
    return None


class _GlobalOnly:
    """Stands in for FlopCounterMode's per-module tracker: every FLOP goes to "Global".

    The tracker hooks module backward passes, which breaks ``torch.autograd.grad`` with respect
    to a leaf input (every Langevin step does that); the total needs no per-module split."""

    parents = ("Global",)

    def __enter__(self) -> "_GlobalOnly":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn`, counted by torch's FlopCounterMode (its registry of op costs)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return int(counter.get_total_flops())


def _state_difference(a: dict[str, torch.nn.Module], b: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Compare two sets of models tensor by tensor (parameters and buffers)."""
    identical, worst = True, 0.0
    for role in a:
        sa, sb = a[role].state_dict(), b[role].state_dict()
        for key, ta in sa.items():
            tb = sb[key]
            if not torch.equal(ta, tb):
                identical = False
                if ta.is_floating_point():
                    worst = max(worst, float((ta.double() - tb.double()).abs().max()))
    return {"identical": identical, "max_abs_difference": worst}


def _framework_sampler(exp: Any) -> Optional[Callable[[torch.Tensor, torch.Generator], Any]]:
    """The objective's own sampler as a function of (start, generator), or None."""
    obj, name = exp.objective, exp.resolved.objective.name
    if name == "coopnets":
        return lambda y, g: obj.current_revision().run(obj._log_p, y, g)
    if name == "algorithm_d":
        return lambda y, g: obj.revision.run(obj._log_p, y, g)
    if name == "multigrid":
        return lambda y, g: obj._chain(y, g)
    if name == "coopinit":
        return lambda y, g: obj.coop.revise(y, g)
    return None


def _peak_memory(fn: Callable[[], Any], device: torch.device) -> Optional[dict[str, int]]:
    """Peak bytes allocated while `fn` runs, and above what was allocated before (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_bytes": int(peak), "iteration_bytes": int(peak - before)}


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call of `fn`, synchronised with the device."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def _interleaved(a: Callable[[], Any], b: Callable[[], Any], device: torch.device,
                 repeats: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Time a and b once per round, alternating which goes first."""
    ta, tb = [], []
    for r in range(repeats):
        if r % 2 == 0:
            ta.append(_timed(a, device))
            tb.append(_timed(b, device))
        else:
            tb.append(_timed(b, device))
            ta.append(_timed(a, device))
    return ta, tb


def _comparison(t_fw: list[tuple[float, float]], t_plain: list[tuple[float, float]],
                device: torch.device) -> dict[str, Any]:
    """Wall-clock statistics of both sides and their ratios.

    On a CPU the process CPU time is reported as well: on a shared machine a process that waits
    for a core accrues wall time but no CPU time, so with one torch thread the CPU-time ratio is
    the steadier estimate of the work each side does.  The ratio of the minima is the other
    estimator that load (which only ever adds time) disturbs least."""
    wall_fw, wall_pl = [w for w, _ in t_fw], [w for w, _ in t_plain]
    fw, pl = _stats(wall_fw), _stats(wall_pl)
    out: dict[str, Any] = {
        "framework_s": fw,
        "plain_s": pl,
        "ratio_of_medians": fw["median"] / pl["median"],
        "ratio_of_minima": fw["min"] / pl["min"],
        "paired_ratio": _stats([f / p for f, p in zip(wall_fw, wall_pl)]),
    }
    if device.type == "cpu":
        cpu_fw, cpu_pl = [c for _, c in t_fw], [c for _, c in t_plain]
        out["framework_cpu_s"] = _stats(cpu_fw)
        out["plain_cpu_s"] = _stats(cpu_pl)
        out["cpu_ratio_of_medians"] = out["framework_cpu_s"]["median"] / out["plain_cpu_s"]["median"]
        out["cpu_paired_ratio"] = _stats([f / p for f, p in zip(cpu_fw, cpu_pl) if p > 0])
    return out


def run_objective_bench(recipe: str, overrides: Sequence[str] = (), *, device: torch.device, repeats: int = 10,
                        warmup: int = 2, data_root: Optional[str] = None, registries: Any = None,
                        peak_flops: Optional[float] = None, echo: Callable[[str], None] = lambda m: None,
                        objective: Optional[str] = None) -> dict[str, Any]:
    """Benchmark the recipe's objective against its hand-written loop (see the module docstring).

    Args:
        recipe: a packaged recipe name or a TOML path.
        overrides: ``--set`` overrides, applied to both sides' recipe (performance options of
            the framework apply to the framework side only, since the plain loop reads the
            networks and hyper-parameters, not the framework's execution options).
        device: where both sides run.
        repeats: timed rounds (each round times one iteration of each side).
        warmup: untimed iterations of each side first (the first one is also counted for FLOPs
            and compared parameter by parameter).
        data_root: the datasets' root (else the recipe's, then $COOP_DATA).
        peak_flops: the measured peak to compare the achieved FLOP rate with (measured if None).
        objective: the objective the recipe must train (a `UsageError` otherwise); None = any.
    """
    from .bench_plain import make_plain_loop
    from .build import build_experiment
    from .data import BatchSchedule, resolve_data_root
    from .errors import UsageError
    from .experiment import resolve
    from .plugin_manager import get_registries
    from .protocols import Batch
    from .rng import make_generator, seed_everything

    reg = registries or get_registries()
    resolved = resolve(recipe, list(overrides), registries=reg)
    cfg = resolved.config
    name = resolved.objective.name
    if objective is not None and name != objective:
        raise UsageError(f"--recipe {recipe} trains objective '{name}', not '{objective}'")
    echo(f"[bench] {name}: building {recipe} twice on {device}")
    dataset = resolved.data.create(root=resolve_data_root(cfg.data.root, data_root))
    # Both sides start from the same initialisation: the trainer seeds everything before building.
    seed_everything(cfg.run.seed)
    exp = build_experiment(resolved, device, dataset=dataset, registries=reg)
    seed_everything(cfg.run.seed)
    plain_models = build_experiment(resolved, device, dataset=dataset, registries=reg).parts.models
    for m in (*exp.parts.models.values(), *plain_models.values()):
        m.train()
    plain = make_plain_loop(resolved, plain_models, device, torch.Generator(device=device).manual_seed(cfg.run.seed))
    gen = make_generator(cfg.run.seed, device)
    schedule = BatchSchedule(len(dataset), cfg.data.batch_size, cfg.run.seed, cfg.data.shuffle, cfg.data.drop_last)
    it = {"framework": 0, "plain": 0}

    def framework_iteration() -> None:
        # What Trainer.fit does per iteration, less the writing of logs, samples and checkpoints
        # (and the learning-rate schedule, which neither side applies here).
        idx = schedule.indices(it["framework"])
        batch = Batch(dataset.get_batch(idx), idx).to(device)
        result = exp.objective.step(batch, gen)
        names = list(result.scalars)
        torch.stack([result.scalars[k].detach().float().reshape(()) for k in names]).cpu().tolist()
        it["framework"] += 1

    def plain_iteration() -> None:
        idx = schedule.indices(it["plain"])
        x = dataset.get_batch(idx).to(device, non_blocking=True)
        losses = plain.step(x, idx)
        torch.stack([v.float().reshape(()) for v in losses]).cpu().tolist()
        it["plain"] += 1

    flops_fw = count_flops(framework_iteration)
    flops_plain = count_flops(plain_iteration)
    same = _state_difference(exp.parts.models, plain_models)
    echo(f"[bench] {name}: first iteration, same parameters on both sides: {same['identical']} "
         f"(max |difference| {same['max_abs_difference']:.3g})")
    for _ in range(max(0, warmup - 1)):
        framework_iteration()
        plain_iteration()
    memory = {"framework": _peak_memory(framework_iteration, device), "plain": _peak_memory(plain_iteration, device)}
    echo(f"[bench] {name}: timing {repeats} rounds of whole iterations")
    t_fw, t_plain = _interleaved(framework_iteration, plain_iteration, device, repeats)
    iteration = _comparison(t_fw, t_plain, device)

    sampler = None
    fw_sampler = _framework_sampler(exp)
    x0 = dataset.get_batch(schedule.indices(0)).to(device)
    start = plain.sampler_start(x0)
    if fw_sampler is not None and start is not None:
        g_s = make_generator(cfg.run.seed + 1, device)
        echo(f"[bench] {name}: timing {repeats} rounds of the sampler alone")

        def fw_run() -> None:
            fw_sampler(start, g_s)

        def plain_run() -> None:
            plain.revise(start)

        flops_sampler = count_flops(fw_run)
        for _ in range(warmup):
            fw_run()
            plain_run()
        s_fw, s_plain = _interleaved(fw_run, plain_run, device, repeats)
        sampler = {**_comparison(s_fw, s_plain, device), "flops": flops_sampler, "batch": int(start.shape[0])}

    peak = peak_flops if peak_flops is not None else measured_peak_flops(device)
    achieved = flops_fw / iteration["framework_s"]["median"]
    return {
        "objective": name,
        "recipe": recipe,
        "overrides": list(overrides),
        "batch_size": cfg.data.batch_size,
        "iterations_timed": repeats,
        "warmup": warmup,
        "iteration": iteration,
        "sampler": sampler,
        "flops_per_iteration": {"framework": flops_fw, "plain": flops_plain},
        "achieved_flops_per_s": achieved,
        "plain_achieved_flops_per_s": flops_plain / iteration["plain_s"]["median"],
        "fraction_of_measured_peak": achieved / peak,
        "memory": memory,
        "same_parameters_after_first_iteration": same,
    }


def run_objective_benches(runs: Sequence[tuple[str, Optional[str]]], overrides: Sequence[str] = (), *,
                          device: torch.device, repeats: int = 10, warmup: int = 2, data_root: Optional[str] = None,
                          registries: Any = None, echo: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Benchmark several (recipe, expected objective or None) pairs in one report with one provenance."""
    prov = provenance(device)
    peak = measured_peak_flops(device)
    results = []
    for recipe, objective in runs:
        results.append(run_objective_bench(recipe, overrides, device=device, repeats=repeats, warmup=warmup,
                                           data_root=data_root, registries=registries, peak_flops=peak,
                                           echo=echo, objective=objective))
    prov["load_average_end"] = list(os.getloadavg())
    if device.type == "cpu":
        # Process-wide (both sides and every objective): CPU has no per-iteration peak counter.
        unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
        prov["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    return {
        "benchmark": "objectives",
        "provenance": prov,
        "peak_flops": {"measured_fp32_matmul": peak, "data_sheet": spec_peak_flops(device)},
        "results": results,
    }


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median'] * 1e3:.1f} ({stats['p25'] * 1e3:.1f}-{stats['p75'] * 1e3:.1f})"


def markdown_report(report: dict[str, Any]) -> str:
    """The objective benchmark as a markdown table, with its provenance."""
    p = report["provenance"]
    commit = (p.get("commit") or "unknown")[:12] + (" (modified)" if p.get("modified") else "")
    lines = [
        f"Device: {p['device']} ({p['device_name']}), {p['torch_threads']} torch threads of {p['cpu_count']} CPUs; "
        f"torch {p['torch']}; commit {commit}; {p['date_utc']}; load average {p['load_average_start'][0]:.2f} "
        f"at the start, {p.get('load_average_end', [float('nan')])[0]:.2f} at the end.",
        f"Peak: measured fp32 matmul {report['peak_flops']['measured_fp32_matmul'] / 1e9:.1f} GFLOP/s"
        + (f"; data sheet fp32 {report['peak_flops']['data_sheet']['fp32'] / 1e12:.1f} TFLOP/s"
           if report["peak_flops"].get("data_sheet") else ""),
        "",
        "Wall times in ms: median (25th-75th percentile) over interleaved rounds.  Ratios are framework / plain: "
        "of the medians; of the minima; per-round ratios, median (min-max); on a CPU also of the median "
        "process CPU times.",
        "",
        "| objective | recipe | framework iteration | plain iteration | ratio | ratio of minima | per-round ratio | "
        "CPU-time ratio | framework sampler | plain sampler | sampler ratio (medians / minima / CPU) | "
        "GFLOP / iteration (fw / plain) | achieved GFLOP/s | of peak | same params |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        it, s = r["iteration"], r["sampler"]
        pr = it["paired_ratio"]
        cpu = f"{it['cpu_ratio_of_medians']:.3f}" if "cpu_ratio_of_medians" in it else "-"
        samp = (f"{_ms(s['framework_s'])} | {_ms(s['plain_s'])} | {s['ratio_of_medians']:.3f} / "
                f"{s['ratio_of_minima']:.3f} / " + (f"{s['cpu_ratio_of_medians']:.3f}" if "cpu_ratio_of_medians" in s
                                                     else "-") if s else "- | - | -")
        same = r["same_parameters_after_first_iteration"]
        same_s = "bit-identical" if same["identical"] else f"max diff {same['max_abs_difference']:.1e}"
        fl = r["flops_per_iteration"]
        lines.append(
            f"| {r['objective']} | `{r['recipe']}` | {_ms(it['framework_s'])} | {_ms(it['plain_s'])} | "
            f"{it['ratio_of_medians']:.3f} | {it['ratio_of_minima']:.3f} | {pr['median']:.3f} ({pr['min']:.3f}-"
            f"{pr['max']:.3f}) | {cpu} | {samp} | "
            f"{fl['framework'] / 1e9:.2f} / {fl['plain'] / 1e9:.2f} | {r['achieved_flops_per_s'] / 1e9:.1f} | "
            f"{r['fraction_of_measured_peak']:.1%} | {same_s} |")
    mem = [r for r in report["results"] if r["memory"]["framework"]]
    if mem:
        lines += ["", "| objective | framework peak MiB (iteration) | plain peak MiB (iteration) |", "|---|---|---|"]
        for r in mem:
            f, pl = r["memory"]["framework"], r["memory"]["plain"]
            lines.append(f"| {r['objective']} | {f['peak_bytes'] / 2**20:.0f} ({f['iteration_bytes'] / 2**20:.0f}) | "
                         f"{pl['peak_bytes'] / 2**20:.0f} ({pl['iteration_bytes'] / 2**20:.0f}) |")
    elif "max_rss_bytes" in p:
        lines += ["", f"Peak memory: CPU has no per-iteration counter; the process's maximum RSS was "
                      f"{p['max_rss_bytes'] / 2**20:.0f} MiB (both sides, every objective)."]
    return "\n".join(lines) + "\n"
