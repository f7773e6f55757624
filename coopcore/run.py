"""The one path from a resolved experiment to a run: train it (fresh or resumed) or reopen it.

`train` is what `coop train` and `coop repro` call; `open_run` is what `coop sample` and
`coop eval` call.  With ``resume=True`` training is idempotent, so a job scheduler can repeat
the same command after every preemption: a directory that does not exist yet (or holds no
checkpoint yet) starts fresh, a started run continues from its last good checkpoint, and a
complete run returns at once.

Given a `coopcore.distributed.Distributed` (the `coop train` command under torchrun), every
process takes the same decisions from the same files: all ranks check the run directory before
rank 0 creates it, all load the same checkpoint, and only rank 0 writes into the directory.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .build import Experiment, MetricFailure, build_experiment, pick_device
from .distributed import Distributed, rank_seed
from .errors import CheckpointError, CoopError, RunFailure, UsageError
from .experiment import ResolvedExperiment, resolve_data
from .rng import seed_everything
from .rundir import DatasetInfo, RunDir, overwrite_refused, restore_payload
from .trainer import Trainer, TrainSummary, check_global_batch

Echo = Callable[[str], None]


def default_run_dir(name: str, resume: bool) -> Path:
    """``runs/<name>``; for a new run the first of ``runs/<name>``, ``runs/<name>-1``, ... that is free."""
    base = Path("runs") / name
    if resume:
        return base
    out, k = base, 1
    while out.exists() and any(out.iterdir()):
        out = base.with_name(f"{base.name}-{k}")
        k += 1
    return out


def _completed(run: RunDir) -> TrainSummary:
    done = run.summary() or {}
    return TrainSummary(
        run_dir=run.path, iterations=int(done.get("iterations", 0)), images_seen=int(done.get("images_seen", 0)),
        last_scalars=dict(done.get("last_scalars", {})), evaluations=list(done.get("evaluations", [])),
        checkpoint=run.checkpoints.latest(), seconds=float(done.get("seconds", 0.0)),
        device=str(done.get("device", "")), already_complete=True,
    )


def train(resolved: ResolvedExperiment, out: Optional[Path] = None, *, resume: bool = False,
          data_root: Optional[str] = None, progress: Optional[bool] = None, echo: Echo = print,
          registries: Any = None, dist: Optional[Distributed] = None) -> TrainSummary:
    """Train `resolved` into run directory `out` (see the module docstring for `resume`).

    A plugin's unexpected exception (a metric's included) becomes a `RunFailure` naming the run
    and its last checkpoint, with the traceback in ``RUN/error.log``.  With `dist` this process
    is one rank of a torchrun launch (docs/distributed.md); the process group is left when
    training ends."""
    if dist is None:
        return _train(resolved, out, resume, data_root, progress, echo, registries, None)
    device = dist.start(pick_device(resolved.run.device))
    try:
        return _train(resolved, out, resume, data_root, progress if dist.is_main else False,
                      echo if dist.is_main else (lambda msg: None), registries, dist, device)
    finally:
        dist.close()


def _train(resolved: ResolvedExperiment, out: Optional[Path], resume: bool, data_root: Optional[str],
           progress: Optional[bool], echo: Echo, registries: Any, dist: Optional[Distributed],
           device: Any = None) -> TrainSummary:
    out = Path(out) if out is not None else default_run_dir(resolved.run.name, resume)
    if dist is not None:
        # every rank must name the same directory: rank 0's choice of a free runs/<name>-N wins
        out = Path(dist.broadcast_object(str(out)))
    run = RunDir(out, resolved.run.keep_checkpoints)
    failed: Optional[BaseException] = None
    continuing = complete = False
    try:  # every rank checks the directory before rank 0 may create it
        continuing = resume and run.is_run()
        complete = continuing and _check_continue(run, resolved)
        if not continuing and not run.is_empty_or_absent():
            if resume:
                raise UsageError(f"{out} exists but is not a run directory (no {RunDir.CONFIG}); refusing to write "
                                 "into it. Choose another --out.")
            raise overwrite_refused(out)
    except UsageError as exc:
        if dist is None:
            raise
        failed = exc
    if dist is not None:
        dist.agree(failed)
    if complete:
        echo(f"{out} is already complete ({resolved.run.iterations} iterations); nothing to do")
        return _completed(run)

    seed_everything(resolved.run.seed)  # the same initial networks on every rank
    device = device if device is not None else pick_device(resolved.run.device)
    experiment = build_experiment(resolved, device, data_root, registries=registries)
    if dist is not None:
        # refuse an unsplittable batch before rank 0 creates anything
        check_global_batch(len(experiment.dataset), resolved.config.data.batch_size, dist.world_size,
                           resolved.config.data.drop_last)
        seed_everything(rank_seed(resolved.run.seed, dist.rank))  # global streams of this rank's own
    if not continuing:
        if resume:
            echo(f"--resume: {out} holds no run yet; starting a new run")
        if dist is None or dist.is_main:
            run = RunDir.create(out, resolved, device, dist.world_size if dist is not None else 1)
        if dist is not None:
            dist.barrier()
    trainer = Trainer(experiment, run, progress=progress, echo=echo, dist=dist)
    if continuing:
        _continue(trainer, run, echo, write=dist is None or dist.is_main)
    where = f"{dist.world_size} processes ({dist.backend}, rank 0 on {device})" if dist is not None else str(device)
    echo(f"training {Path(resolved.source).name} on {where} -> {out}")
    try:
        summary = trainer.fit()
    except (CoopError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - report where things are, keep the traceback in a file
        if dist is not None and not dist.is_main:  # only rank 0 writes into the run directory
            traceback.print_exc()
            raise RunFailure(f"rank {dist.rank}: training failed at iteration {trainer.iteration}: "
                             f"{type(exc).__name__}: {exc}", run.path, trainer.last_checkpoint) from exc
        raise run_failure(run, f"training failed at iteration {trainer.iteration}", exc, trainer.last_checkpoint) from exc
    if dist is not None and not dist.is_main:
        return summary
    run.write_summary({
        "iterations": summary.iterations, "images_seen": summary.images_seen, "last_scalars": summary.last_scalars,
        "evaluations": summary.evaluations, "checkpoint": summary.checkpoint.name if summary.checkpoint else None,
        "seconds": round(summary.seconds, 2), "device": summary.device,
    })
    return summary


def run_failure(run: RunDir, what: str, exc: BaseException, checkpoint: Optional[Path]) -> RunFailure:
    """A RunFailure for an unexpected exception; its traceback goes to RUN/error.log (call inside `except`)."""
    run.error_log.write_text(traceback.format_exc())
    detail = str(exc) if isinstance(exc, MetricFailure) else f"{type(exc).__name__}: {exc}"
    return RunFailure(f"{what}: {detail} (traceback in {run.error_log})", run.path, checkpoint)


def _check_continue(run: RunDir, resolved: ResolvedExperiment) -> bool:
    """Refuse a recipe that would change the run; say whether the run is complete already."""
    run.check_resumable(resolved)
    return run.is_complete(resolved.run.iterations)


def _continue(trainer: Trainer, run: RunDir, echo: Echo, write: bool = True) -> None:
    """Load the newest good checkpoint into `trainer`, or start from iteration 0 when there is none.

    `write` is False on the ranks other than 0 of a torchrun launch: they read, never rewrite, the logs."""
    if trainer.dist is not None:
        # the rank-0 rewind below must not race the other ranks' reads
        latest = trainer.dist.broadcast_object(str(run.checkpoints.latest() or ""))
    else:
        latest = str(run.checkpoints.latest() or "")
    if not latest:
        echo(f"--resume: {run.path} has no checkpoint yet; starting from iteration 0")
        if write:
            run.rewind(0, [])
        return
    try:
        path, payload, notes = run.checkpoints.load_latest(map_location=trainer.device)
    except CheckpointError as exc:
        raise UsageError(f"--resume: {exc}") from None
    for note in notes:
        echo(f"warning: {note}")
    trainer.restore(payload, path)
    if trainer.dist is not None:
        trainer.dist.barrier()  # every rank has read the checkpoint before rank 0 prunes or rewinds
    if write:
        run.rewind(trainer.iteration, trainer.evaluations)
    echo(f"resumed from {path} at iteration {trainer.iteration}")


@dataclass
class OpenedRun:
    """A finished or interrupted run reopened from its directory at its newest good checkpoint."""

    run: RunDir
    experiment: Experiment
    iteration: int
    checkpoint: Path
    evaluations: list[dict[str, Any]]


def open_run(path: Path, *, device: Optional[str] = None, data_root: Optional[str] = None,
             load_data: bool = False, echo: Echo = print, registries: Any = None) -> OpenedRun:
    """Rebuild a run's experiment from its config.json and load its newest good checkpoint.

    Without `load_data` the training set is not read: a stand-in with the size, shape and value
    range the checkpoint recorded takes its place (enough for sampling).
    """
    run = RunDir(path)
    resolved = resolve_data(run.read_config(), str(run.path / RunDir.CONFIG), registries)
    dev = pick_device(device or resolved.run.device)
    try:
        ckpt, payload, notes = run.checkpoints.load_latest(map_location=dev)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    for note in notes:
        echo(f"warning: {note}")
    dataset = None if load_data else DatasetInfo.from_payload(payload)
    experiment = build_experiment(resolved, dev, data_root, dataset=dataset, registries=registries)
    state = restore_payload(experiment, payload, None)
    return OpenedRun(run=run, experiment=experiment, iteration=state.iteration, checkpoint=ckpt,
                     evaluations=state.evaluations)
