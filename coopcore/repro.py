"""The runner behind `coop repro`: a table's runs trained, evaluated and collected into a report.

`run_table` plans a table's runs at one scale (`coopcore.tablespec`), executes each through the
one recipe-to-run path (`coopcore.run.train`, resumable, so re-invoking skips finished runs),
here, in a pool of local processes (one run per device) or on a cluster through submitit, then
reads every run's evaluations into the cells (`coopcore.report`) and writes results.json,
report.md, sample grids and learning curves.  A failed run is recorded and the others go on.
"""
from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

from .errors import CoopError, UsageError
from .report import render_report, table_results
from .rundir import RunDir, git_commit
from .tablespec import (
    SCALES, PlannedRun, PublishedCell, TableSpec, load_table_spec, plan_runs, register_table_files,
)

__all__ = [
    "SCALES", "PublishedCell", "TableSpec", "load_table_spec", "register_table_files", "RunJob", "execute_run",
    "run_table", "table_out_dir", "table_status", "Launcher",
]
Echo = Callable[[str], None]


def table_out_dir(spec: TableSpec, scale: str, root: Path) -> Path:
    """Where a table's results live under an output root: ``ROOT/<paper>-<table>-<scale>``."""
    return Path(root) / f"{spec.paper}-{spec.table}-{scale}"


# -- one run --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunJob:
    """Everything one run needs, as plain data (it crosses process and cluster boundaries)."""

    run_id: str
    dir: str
    recipe: str
    overrides: tuple[str, ...]
    train: bool
    evals: tuple[tuple[str, str, dict[str, Any]], ...]
    seed: Optional[int] = None
    device: Optional[str] = None
    data_root: Optional[str] = None
    progress: Optional[bool] = None


def _job(planned: PlannedRun, run_dir: Path, *, seed: Optional[int], device: Optional[str], data_root: Optional[str],
         extra_overrides: Iterable[str], progress: Optional[bool]) -> RunJob:
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    if planned.data_root:
        base = Path(root) if root else Path(".").resolve()
        root = str(Path(planned.data_root) if Path(planned.data_root).is_absolute() else base / planned.data_root)
    recipe = planned.recipe
    if recipe and (Path(recipe).suffix in (".toml", ".json") or Path(recipe).is_dir()):  # a path, not a name
        recipe = str(Path(recipe).expanduser().resolve())
    return RunJob(
        run_id=planned.id, dir=str(Path(run_dir).resolve()), recipe=recipe,
        overrides=tuple(planned.overrides) + tuple(extra_overrides), train=planned.train,
        evals=tuple((e.label or e.name, e.name, dict(e.options)) for e in planned.evals),
        seed=seed, device=device, data_root=root, progress=progress,
    )


def execute_run(job: RunJob, echo: Echo = print) -> dict[str, Any]:
    """Train (or resume, or skip) one run and compute its spec evaluations; returns its record.

    Never raises for a failing run: the record says ``status = "failed"`` and why (the traceback
    of an unexpected error goes to the run's error.log).  Ctrl-C still stops everything."""
    from .experiment import resolve
    from .plugin_manager import get_registries
    from .trainer import Interrupted

    record: dict[str, Any] = {"dir": job.dir, "recipe": Path(job.recipe).name, "overrides": list(job.overrides)}
    started = time.time()
    try:
        registries = get_registries()
        resolved = resolve(job.recipe, job.overrides, seed=job.seed, device=job.device, registries=registries)
        record.update(seed=resolved.run.seed, config_hash=resolved.hash())
        if job.train:
            record.update(_train_and_evaluate(job, resolved, registries, echo))
        else:
            record.update(_evaluate_untrained(job, resolved, registries, echo))
    except (KeyboardInterrupt, Interrupted):
        raise  # Ctrl-C (the trainer saved a checkpoint first) stops the whole table
    except Exception as exc:  # noqa: BLE001 - one failed run must not stop the table
        record.update(status="failed", error=str(exc) or type(exc).__name__)
        if not isinstance(exc, CoopError) and Path(job.dir).is_dir():
            (Path(job.dir) / RunDir.ERROR_LOG).write_text(traceback.format_exc())
            record["error"] = f"{type(exc).__name__}: {exc} (traceback in {Path(job.dir) / RunDir.ERROR_LOG})"
        echo(f"run '{job.run_id}' failed: {record['error']}")
    record["seconds"] = round(time.time() - started, 2)
    return record


def _train_and_evaluate(job: RunJob, resolved: Any, registries: Any, echo: Echo) -> dict[str, Any]:
    from .run import train

    run = RunDir(Path(job.dir))
    existed = run.is_run()
    summary = train(resolved, Path(job.dir), resume=True, data_root=job.data_root, progress=job.progress,
                    echo=echo, registries=registries)
    status = "already-complete" if summary.already_complete else ("resumed" if existed else "trained")
    if job.evals:
        _evaluate_final(job, registries, echo)
    made = run.provenance()
    record = {"status": status, "iterations": summary.iterations, "images_seen": summary.images_seen,
              "device": made.get("device", summary.device), "device_name": made.get("device_name", "")}
    if summary.already_complete:
        record["train_seconds"] = summary.seconds
    return record


def _missing_evals(run: RunDir, job: RunJob, iteration: int) -> list[tuple[int, tuple[str, str, dict[str, Any]]]]:
    done = {e.get("label") for e in run.evaluations() if e.get("iteration") == iteration and "checkpoint" in e}
    return [(i, e) for i, e in enumerate(job.evals) if e[0] not in done]


def _evaluate_final(job: RunJob, registries: Any, echo: Echo) -> None:
    """The spec's evaluations on the run's final checkpoint (each once; recorded like `coop eval`)."""
    from .build import MetricFailure, build_metric
    from .rng import make_generator
    from .run import open_run, run_failure

    run = RunDir(Path(job.dir))
    opened = None
    summary = run.summary() or {}
    for i, (label, name, options) in _missing_evals(run, job, int(summary.get("iterations", -1))):
        if opened is None:
            opened = open_run(run.path, device=job.device, data_root=job.data_root, load_data=True, echo=echo,
                              registries=registries)
        exp = opened.experiment
        metric = build_metric(registries, name, options, f"eval[{label}]")
        gen = make_generator(exp.resolved.run.seed * 7919 + opened.iteration * 31 + 2000 + i + 1, exp.device)
        try:
            res = exp.evaluate(label, metric, gen, progress=lambda m, _l=label: echo(f"[{_l}] {m}"))
        except MetricFailure as exc:
            raise run_failure(run, f"evaluation '{label}' of {opened.checkpoint.name}", exc, opened.checkpoint) from exc
        run.append_evaluation({"iteration": opened.iteration, "label": label, "checkpoint": str(opened.checkpoint),
                               **res.as_dict()})
        echo(f"[{job.run_id}] {label}: {res}")


def _evaluate_untrained(job: RunJob, resolved: Any, registries: Any, echo: Echo) -> dict[str, Any]:
    """An evaluation-only run: the built, untrained experiment (classical baselines use only data)."""
    from .build import MetricFailure, build_experiment, build_metric, pick_device
    from .rng import make_generator, seed_everything
    from .run import run_failure

    run = RunDir(Path(job.dir))
    device = pick_device(resolved.run.device)
    if run.is_run():
        run.check_resumable(resolved)
    todo = _missing_evals(run, job, 0) if run.is_run() else list(enumerate(job.evals))
    status = "already-complete" if run.is_run() and not todo and run.summary() is not None else "evaluated"
    if todo or run.summary() is None:
        if resolved.run.threads:  # as the trainer does: results must not depend on the caller's thread count
            torch.set_num_threads(resolved.run.threads)
        seed_everything(resolved.run.seed)
        exp = build_experiment(resolved, device, job.data_root, registries=registries)
        if not run.is_run():
            run = RunDir.create(run.path, resolved, device)
        for i, (label, name, options) in todo:
            metric = build_metric(registries, name, options, f"eval[{label}]")
            gen = make_generator(resolved.run.seed * 7919 + 2000 + i + 1, device)
            try:
                res = exp.evaluate(label, metric, gen, progress=lambda m, _l=label: echo(f"[{_l}] {m}"))
            except MetricFailure as exc:
                raise run_failure(run, f"evaluation '{label}' (no training)", exc, None) from exc
            run.append_evaluation({"iteration": 0, "label": label, "checkpoint": None, **res.as_dict()})
            echo(f"[{job.run_id}] {label}: {res}")
        run.write_summary({"iterations": 0, "images_seen": 0, "evaluations": run.evaluations(), "checkpoint": None})
    made = run.provenance()
    return {"status": status, "iterations": 0, "images_seen": 0, "device": made.get("device", str(device)),
            "device_name": made.get("device_name", "")}


# -- many runs ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Launcher:
    """How a table's runs are executed: here one after another, `jobs` local processes, or submitit."""

    jobs: int = 1
    devices: tuple[str, ...] = ()
    # None: this process (or the local pool when jobs > 1); "slurm", "local" or "debug": submitit.
    submitit: Optional[str] = None
    slurm_partition: Optional[str] = None
    slurm_time_min: int = 24 * 60
    slurm_gpus: int = 1
    slurm_cpus: int = 8


_WORKER_DEVICE: Optional[str] = None


def _init_worker(devices: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get() if devices is not None else None


def _run_in_worker(job: RunJob) -> dict[str, Any]:
    if _WORKER_DEVICE:
        job = dataclasses.replace(job, device=_WORKER_DEVICE)
    return execute_run(job, echo=lambda m: print(f"[{job.run_id}] {m}", flush=True))


def dispatch(jobs: list[RunJob], launcher: Launcher, folder: Path, echo: Echo) -> dict[str, dict[str, Any]]:
    """Execute `jobs`; returns run id -> record (failed runs included)."""
    if not jobs:
        return {}
    if launcher.submitit:
        return _dispatch_submitit(jobs, launcher, folder, echo)
    if launcher.jobs <= 1 or len(jobs) == 1:
        out = {}
        for job in jobs:
            if launcher.devices:
                job = dataclasses.replace(job, device=launcher.devices[0])
            out[job.run_id] = execute_run(job, echo)
        return out
    ctx = multiprocessing.get_context("spawn")
    workers = min(launcher.jobs, len(jobs))
    queue = None
    if launcher.devices:
        queue = ctx.Queue()
        for k in range(workers):
            queue.put(launcher.devices[k % len(launcher.devices)])
    echo(f"running {len(jobs)} runs, {workers} at a time"
         + (f" on {', '.join(launcher.devices)}" if launcher.devices else ""))
    out = {}
    with futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,)) as pool:
        pending = {pool.submit(_run_in_worker, job): job for job in jobs}
        for fut in futures.as_completed(pending):
            job = pending[fut]
            try:
                out[job.run_id] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (out of memory, killed)
                out[job.run_id] = {"status": "failed", "dir": job.dir, "error": f"worker process failed: {exc!r}"}
            echo(f"run '{job.run_id}': {out[job.run_id]['status']}")
    return out


def _dispatch_submitit(jobs: list[RunJob], launcher: Launcher, folder: Path, echo: Echo) -> dict[str, dict[str, Any]]:
    try:
        import submitit
    except ImportError:
        raise UsageError("--launcher needs submitit: pip install submitit (or pip install 'coopnets[cluster]')") from None
    folder = Path(folder).resolve()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher.submitit)
    params: dict[str, Any] = {"timeout_min": launcher.slurm_time_min, "name": "coop-repro"}
    if launcher.submitit == "slurm":
        params.update(gpus_per_node=launcher.slurm_gpus, cpus_per_task=launcher.slurm_cpus, tasks_per_node=1)
        if launcher.slurm_partition:
            params["slurm_partition"] = launcher.slurm_partition
    executor.update_parameters(**params)
    submitted = []
    folder.mkdir(parents=True, exist_ok=True)
    # Jobs start in the directory they were submitted from, and `python -m` puts it first on
    # sys.path: from a source checkout that would import its coopcore/ instead of the installed
    # package.  Submitting from the (absolute) log folder avoids that; every path in a job is absolute.
    here = os.getcwd()
    os.chdir(folder)
    try:
        for job in jobs:
            if launcher.devices:
                job = dataclasses.replace(job, device=launcher.devices[len(submitted) % len(launcher.devices)])
            submitted.append((job, executor.submit(execute_run, job)))
            echo(f"submitted run '{job.run_id}' ({launcher.submitit} job {submitted[-1][1].job_id})")
    finally:
        os.chdir(here)
    out = {}
    for job, handle in submitted:
        try:
            out[job.run_id] = handle.result()
        except Exception as exc:  # noqa: BLE001 - the job itself died: say where its logs are
            out[job.run_id] = {"status": "failed", "dir": job.dir,
                               "error": f"{launcher.submitit} job {handle.job_id} failed: {exc} (logs in {folder})"}
        echo(f"run '{job.run_id}': {out[job.run_id]['status']}")
    return out


# -- a table --------------------------------------------------------------------------------------
def run_table(
    spec: TableSpec,
    scale: str,
    out: Path,
    registries: Any,
    *,
    device: Optional[str] = None,
    data_root: Optional[str] = None,
    seed: Optional[int] = None,
    extra_overrides: tuple[str, ...] = (),
    launcher: Launcher = Launcher(),
    echo: Echo = print,
    progress: Optional[bool] = None,
    rankings: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Run every run of `spec` at `scale` under `out` (resuming and skipping what is done) and
    write results.json and report.md there.  Runs that `use` another table's run are found (or
    trained first) in that table's folder beside `out`.  A table with a human study writes its
    kit under ``out/study``; `rankings` (the raters' returned files) fill its cells.
    Returns the results document."""
    planned = plan_runs(spec, scale)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    common = dict(seed=seed, device=device, data_root=data_root, extra_overrides=extra_overrides, progress=progress)
    records: dict[str, dict[str, Any]] = {}
    run_dirs: dict[str, Path] = {}
    own: list[RunJob] = []
    for p in planned:
        if p.use:
            run_dirs[p.id], records[p.id] = _shared_run(p, scale, out.parent, registries, echo, common)
            continue
        run_dirs[p.id] = out / "runs" / p.id
        own.append(_job(p, run_dirs[p.id], **common))
    for job in own:
        echo(f"[{spec.key} {scale}] run '{job.run_id}': {Path(job.recipe).name}"
             + (" (evaluation only)" if not job.train else ""))
    records.update(dispatch(own, launcher, out / "submitit", echo))
    # A shared run's extra evaluations (this table's metrics on another table's run).
    for p in planned:
        if p.use and p.evals and records[p.id].get("status") != "failed":
            shared_job = _job(p, run_dirs[p.id], **common)
            try:
                _evaluate_final(shared_job, registries, echo)
            except CoopError as exc:
                records[p.id].update(status="failed", error=str(exc))

    evaluations = {rid: RunDir(d).evaluations() for rid, d in run_dirs.items()}
    images = _collect_images(spec, scale, planned, run_dirs, records, out)
    provenance = {
        "git_commit": git_commit(), "torch_version": str(torch.__version__), "coopnets_version": _version(),
        "python": platform.python_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
    }
    study: list[dict[str, Any]] = []
    if spec.study is not None:
        from .study import build_table_study, study_cells

        build_table_study(spec.study, {m: run_dirs[r] for m, r in spec.study.methods.items()
                                       if r in run_dirs and records[r].get("status") != "failed"},
                          out / "study", seed=0 if seed is None else seed)
        if rankings:
            study = study_cells(rankings, out / "study" / "key.json")
            echo(f"tallied {len(rankings)} ranking file(s) into {len(study)} cells")
    elif rankings:
        raise UsageError(f"--rankings: table {spec.key} has no human study")
    results = table_results(spec, scale, planned, records, evaluations, provenance, study)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(render_report(spec, results, images))
    return results


def _shared_run(p: PlannedRun, scale: str, root: Path, registries: Any, echo: Echo,
                common: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Another table's run: reuse its finished directory, or train it there first."""
    if p.used_table not in registries.table:
        raise UsageError(f"run '{p.id}' uses table '{p.used_table}', which is not registered")
    other: TableSpec = registries.table.create(p.used_table)
    theirs = {q.id: q for q in plan_runs(other, scale)} if scale in other.scales else {}
    run_dir = table_out_dir(other, scale, root) / "runs" / p.used_run
    if p.used_run not in theirs or theirs[p.used_run].use:
        # Only the cells that need it go missing; the rest of the table still runs.
        error = f"table {other.key} has no run '{p.used_run}' of its own at scale '{scale}'"
        echo(f"run '{p.id}' failed: {error}")
        return run_dir, {"status": "failed", "dir": str(run_dir), "error": error}
    echo(f"run '{p.id}' is {other.key}'s run '{p.used_run}' ({run_dir})")
    record = execute_run(_job(theirs[p.used_run], run_dir, **common), echo)
    if record.get("status") != "failed":
        record["status"] = "shared"
    return run_dir, record


def _collect_images(spec: TableSpec, scale: str, planned: list[PlannedRun], run_dirs: dict[str, Path],
                    records: dict[str, dict[str, Any]], out: Path) -> dict[str, list[str]]:
    """Copy each trained run's final sample grids and draw its learning curves beside the report."""
    images: dict[str, list[str]] = {}
    for p in planned:
        rec = records.get(p.id, {})
        if rec.get("status") == "failed" or not rec.get("iterations"):
            continue
        files = []
        final = sorted(Path(run_dirs[p.id], "samples").glob(f"iter-{int(rec['iterations']):08d}-*.png"))
        for src in final:
            name = f"samples-{p.id}-{src.name.split('-', 2)[-1]}"
            shutil.copy(src, out / name)
            files.append(name)
        curves = _plot_curves(run_dirs[p.id], out / f"curves-{p.id}.png", f"{spec.key} / {p.id} ({scale})")
        if curves is not None:
            files.append(curves.name)
        if files:
            images[p.id] = files
    return images


def _plot_curves(run_dir: Path, out: Path, title: str) -> Optional[Path]:
    run = RunDir(run_dir)
    rows = run.metrics()
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss_descriptor", "loss_generator", "energy_obs", "energy_syn", "recon_mse") if k in rows[0]]
    ev = [e for e in run.evaluations() if isinstance(e.get("value"), (int, float))]
    labels = sorted({e["label"] for e in ev})
    n = max(len(keys) + len(labels), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    it = [r["iteration"] for r in rows]
    for ax, k in zip(axes[0], keys):
        ax.plot(it, [r.get(k) for r in rows])
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
    for ax, lab in zip(axes[0][len(keys):], labels):
        pts = [(e["iteration"], e["value"]) for e in ev if e["label"] == lab]
        ax.plot([q[0] for q in pts], [q[1] for q in pts], marker="o")
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coopnets")
    except PackageNotFoundError:
        return "unknown"


# -- status for `coop repro --list` ------------------------------------------------------------------
def table_status(spec: TableSpec, scale: str, root: Path) -> str:
    """What is done for `spec` at `scale` under output root `root`, in words."""
    folder = table_out_dir(spec, scale, root)
    if not folder.exists():
        return "not started"
    planned = [p for p in plan_runs(spec, scale) if not p.use]
    done = sum(1 for p in planned if RunDir(folder / "runs" / p.id).summary() is not None)
    report = (folder / "results.json").exists()
    failed = 0
    if report:
        try:
            failed = int(json.loads((folder / "results.json").read_text()).get("failed", 0))
        except (ValueError, OSError):
            pass
    text = f"{done}/{len(planned)} runs done"
    if report:
        text += ", report written" + (f" ({failed} failed)" if failed else "")
    return text
