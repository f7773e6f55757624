"""One training loop for every objective.

data -> objective.step -> logging (metrics.jsonl, tensorboard scalars and energy histograms,
sample grids) -> periodic evaluation -> periodic atomic checkpoints.  Scalars are read from
the device once per iteration (one host sync), which is also when divergence is detected: a
non-finite loss stops the run with the energy gap, gradient norms and the last good
checkpoint, instead of saving garbage.

Ctrl-C finishes the current iteration, saves a checkpoint and exits; a second Ctrl-C aborts at
once (the previous checkpoint is untouched either way).

Launched by torchrun (a `coopcore.distributed.Distributed` is given), every rank runs this loop
on its slice of the global batch; gradients are averaged over ranks, scalars are averaged
(which is also the single host sync), the Ctrl-C request is agreed on, and only rank 0 writes
logs, sample grids, evaluations and checkpoints (docs/distributed.md).
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from .build import Experiment
from .conditioning import check_dataset_labels
from .data import BatchSchedule, DeviceTensorDataset, in_memory, prefetch_batches, share_of, value_range
from .distributed import Distributed, rank_seed
from .errors import CoopError, RunFailure, UsageError
from .images import save_grid
from .metrics import MetricResult
from .protocols import Batch
from .rng import capture_rng_state, make_generator
from .rundir import RunDir, TrainingState, checkpoint_payload, restore_payload, saved_world_size


class Interrupted(CoopError):
    """Training stopped on request (Ctrl-C) after saving a checkpoint."""

    def __init__(self, checkpoint: Optional[Path], iteration: int) -> None:
        self.checkpoint, self.iteration = checkpoint, iteration
        super().__init__(f"interrupted at iteration {iteration}; checkpoint: {checkpoint}")


@dataclass
class TrainSummary:
    run_dir: Path
    iterations: int
    images_seen: int
    last_scalars: dict[str, float]
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Optional[Path] = None
    seconds: float = 0.0
    start_iteration: int = 0  # where this process began (> 0 when it resumed)
    device: str = ""
    already_complete: bool = False  # `--resume` found the run finished and did nothing


class Trainer:
    """Runs the training loop of a built experiment, writing into a run directory."""

    def __init__(self, experiment: Experiment, run: RunDir, *, progress: Optional[bool] = None,
                 echo: Callable[[str], None] = print, dist: Optional[Distributed] = None) -> None:
        self.exp = experiment
        self.cfg = experiment.config
        self.run = run
        self.progress = progress
        self.echo = echo
        self.device = experiment.device
        self.dist = dist
        self.rank = dist.rank if dist is not None else 0
        self.world_size = dist.world_size if dist is not None else 1
        # Rank 0's stream is the single-process one; other ranks draw from streams of their own.
        self.generator = make_generator(rank_seed(self.cfg.run.seed, self.rank), self.device)
        if dist is not None:
            check_global_batch(len(experiment.dataset), self.cfg.data.batch_size, dist.world_size,
                                self.cfg.data.drop_last)
        # data.batch_size is per process: the global batch of iteration t is the single-process
        # batch of size batch_size * world_size, and this rank takes its slice of it.
        self.schedule = BatchSchedule(
            len(experiment.dataset), self.cfg.data.batch_size * self.world_size, self.cfg.run.seed,
            self.cfg.data.shuffle, self.cfg.data.drop_last,
        )
        # A run with a conditional model reads every batch's labels (Batch.y); an unconditional
        # one never calls get_labels, so its batches (and numbers) are as before.
        self.n_classes = check_dataset_labels(
            experiment.dataset, experiment.parts.models,
            {role: spec.name for role, spec in getattr(experiment.resolved, "models", {}).items()},
            full_check=in_memory(experiment.dataset) or isinstance(experiment.dataset, DeviceTensorDataset))
        self.state = TrainingState()
        self.last_checkpoint: Optional[Path] = None
        self._base_lrs = {role: [g["lr"] for g in opt.param_groups] for role, opt in experiment.parts.optimizers.items()}
        self._stop = threading.Event()
        self._writer = None

    @property
    def run_dir(self) -> Path:
        return self.run.path

    @property
    def iteration(self) -> int:
        return self.state.iteration

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return self.state.evaluations

    # -- state --------------------------------------------------------------------------
    def restore(self, payload: dict[str, Any], checkpoint: Optional[Path] = None) -> None:
        """Continue from a checkpoint payload (see `coopcore.rundir.checkpoint_payload`).

        A run continues exactly only with the number of processes that trained it (one random
        stream and one objective state per rank); any other number is refused."""
        saved = saved_world_size(payload)
        if saved != self.world_size:
            raise UsageError(_world_size_message(self.run.path, saved, self.world_size))
        self.state = restore_payload(self.exp, payload, self.generator, self.rank)
        self.last_checkpoint = checkpoint

    def save_checkpoint(self) -> Path:
        """Write a checkpoint (rank 0; with several processes every rank must call this)."""
        ranks = None
        if self.dist is not None:
            mine = None if self.rank == 0 else {"rng": capture_rng_state(self.generator),
                                                 "objective": self.exp.objective.state_dict()}
            gathered = self.dist.gather_objects(mine)
            if gathered is not None:
                ranks = {"world_size": self.world_size,
                         "rng": [None] + [g["rng"] for g in gathered[1:]],
                         "objective": [None] + [g["objective"] for g in gathered[1:]]}
        if self.rank == 0:
            payload = checkpoint_payload(self.exp, self.state, self.generator, ranks)
            self.last_checkpoint = self.run.checkpoints.save(self.state.iteration, payload)
        else:
            # Other ranks write nothing; they only track the name rank 0 used.
            self.last_checkpoint = self.run.checkpoints.path_for(self.state.iteration)
        return self.last_checkpoint

    # -- logging ------------------------------------------------------------------------
    def _tb(self):
        if self._writer is None and self.cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run.tensorboard))
        return self._writer

    def _log(self, scalars: dict[str, float], histograms: dict[str, torch.Tensor]) -> None:
        if self.dist is not None:
            if self.cfg.run.tensorboard:  # every rank's values, in rank order
                histograms = {k: self.dist.all_gather_cat(v.detach().float().reshape(-1))
                              for k, v in histograms.items()}
            if self.rank != 0:
                return
        self.run.append_metrics({"iteration": self.iteration, "images_seen": self.state.images_seen, **scalars})
        tb = self._tb()
        if tb is not None:
            for k, v in scalars.items():
                tb.add_scalar(f"train/{k}", v, self.iteration)
            for k, v in histograms.items():
                tb.add_histogram(f"train/{k}", v.detach().float().cpu(), self.iteration)

    def eval_generator(self, salt: int = 0) -> torch.Generator:
        """A generator for sampling/evaluation that never touches the training stream."""
        seed = self.cfg.run.seed * 7919 + self.iteration * 31 + salt + 1
        return make_generator(rank_seed(seed, self.rank), self.device)

    def _samples(self) -> dict[str, torch.Tensor]:
        """The grid's samples; with several processes each rank draws its share (from its own
        chains or state) and rank 0 receives all of them, in rank order."""
        n = self.cfg.run.sample_count
        if self.dist is None:
            return self.exp.objective.samples(n, self.eval_generator())
        share = -(-n // self.world_size)
        named = self.exp.objective.samples(share, self.eval_generator())
        return {kind: self.dist.all_gather_cat(images)[:n] for kind, images in sorted(named.items())}

    def save_samples(self) -> list[Path]:
        named = self._samples()
        if self.rank != 0:
            return []
        paths = []
        tb = self._tb()
        vr = value_range(self.exp.dataset)
        for kind, images in named.items():
            p = save_grid(images, self.run.samples / f"iter-{self.iteration:08d}-{kind}.png", value_range=vr)
            paths.append(p)
            if tb is not None and images.dim() == 4:
                from .images import make_grid

                grid = make_grid(images, value_range=vr)
                tb.add_image(f"samples/{kind}", grid if grid.ndim == 3 else grid[:, :, None], self.iteration, dataformats="HWC")
        return paths

    def evaluate(self) -> list[MetricResult]:
        """Compute the recipe's metrics.  With several processes rank 0 evaluates alone (with the
        gradient averaging paused) and every rank then records the same evaluation records."""
        if self.dist is None:
            return self._evaluate()
        results: list[MetricResult] = []
        before = len(self.state.evaluations)
        if self.rank == 0:
            self.dist.gradients_synchronised(False)
            try:
                results = self._evaluate()
            finally:
                self.dist.gradients_synchronised(True)
        records = self.dist.broadcast_object(self.state.evaluations[before:])
        if self.rank != 0:
            self.state.evaluations.extend(records)
        return results

    def _evaluate(self) -> list[MetricResult]:
        results = []
        for i, (label, metric) in enumerate(self.exp.metrics):
            res = self.exp.evaluate(label, metric, self.eval_generator(1000 + i),
                                    progress=lambda msg, _label=label: self.echo(f"[{_label}] {msg}"))
            results.append(res)
            rec = {"iteration": self.iteration, "images_seen": self.state.images_seen, "label": label, **res.as_dict()}
            self.state.evaluations.append(rec)
            self.run.append_evaluation(rec)
            tb = self._tb()
            if tb is not None:
                tb.add_scalar(f"eval/{label}", res.value, self.iteration)
            self.echo(f"[iter {self.iteration}] {label}: {res}")
        return results

    # -- the loop -----------------------------------------------------------------------
    def _apply_lr_schedule(self) -> None:
        for role, opt in self.exp.parts.optimizers.items():
            oc = self.cfg.optimizers[role]
            if oc.lr_decay_every > 0 and oc.lr_decay < 1.0:
                factor = oc.lr_decay ** (self.iteration // oc.lr_decay_every)
                for g, base in zip(opt.param_groups, self._base_lrs[role]):
                    g["lr"] = base * factor

    def _sync_per_example_state(self, local_index: torch.Tensor, global_index: torch.Tensor) -> None:
        """Make every rank's per-example buffers (an objective's optional ``per_example_state()``:
        name -> tensor indexed by dataset index) hold the rows every rank just updated."""
        hook = getattr(self.exp.objective, "per_example_state", None)
        if hook is None or self.dist is None:
            return
        buffers = {k: v for k, v in dict(hook()).items() if v is not None}
        if buffers:
            self.dist.sync_rows(buffers, local_index, global_index)

    def _warn_unsynchronised_state(self) -> None:
        """Say so when an objective keeps tensors with one row per training example but does not
        declare them with ``per_example_state()``: each rank then sees only its own updates."""
        objective = self.exp.objective
        if hasattr(objective, "per_example_state"):
            return
        n = len(self.exp.dataset)
        found: list[str] = []

        def visit(value: Any, path: str) -> None:
            if isinstance(value, torch.Tensor):
                if value.dim() >= 1 and value.shape[0] == n:
                    found.append(path)
            elif isinstance(value, dict):
                for k, v in value.items():
                    visit(v, f"{path}.{k}" if path else str(k))

        visit(objective.state_dict(), "")
        if found:
            self.echo(f"warning: objective '{self.exp.resolved.objective.name}' keeps per-example state "
                      f"({', '.join(found)}) without declaring per_example_state(); with {self.world_size} "
                      "processes each keeps its own copy and sees only its own updates (docs/distributed.md)")

    def _install_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):  # noqa: ARG001
            if self._stop.is_set():
                raise KeyboardInterrupt
            self._stop.set()
            self.echo("\nstopping after this iteration (Ctrl-C again to abort without saving)...")

        return signal.signal(signal.SIGINT, handler)

    def _divergence(self, scalars: dict[str, float]) -> RunFailure:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in scalars.items())
        return RunFailure(
            f"training diverged at iteration {self.iteration}: a loss or diagnostic is not finite ({shown}). "
            "Lower the learning rates or the Langevin step size, or raise the reference std.",
            self.run_dir, self.last_checkpoint,
        )

    def _batches(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor,
                                                                 torch.Tensor]]:
        """(this process's images, their labels or None, their indices, the whole batch's indices)
        of iterations start .. stop - 1: read ahead by `data.workers` DataLoader processes for a
        dataset read from storage, else read here (a dataset held on the device is indexed there).
        The same batches either way.  Labels are read (``get_labels`` of the same share) only when
        the run has a conditional model."""
        part = (self.rank, self.world_size)
        dataset = self.exp.dataset
        labelled = self.n_classes > 0
        if self.cfg.data.workers > 0 and not isinstance(dataset, DeviceTensorDataset):
            for item in prefetch_batches(dataset, self.schedule, start, stop, workers=self.cfg.data.workers,
                                         device=self.device, part=part, labels=labelled):
                images, idx = item[0], item[1]
                yield images, (item[2] if labelled else None), share_of(idx, part), idx
            return
        for it in range(start, stop):
            idx = self.schedule.indices(it)
            mine = share_of(idx, part)
            y = dataset.get_labels(mine).to(torch.long) if labelled else None
            yield dataset.get_batch(mine), y, mine, idx

    def fit(self) -> TrainSummary:
        from tqdm import tqdm

        run = self.cfg.run
        if run.threads:
            torch.set_num_threads(run.threads)
        if run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        previous = self._install_sigint()
        start, start_iteration = time.perf_counter(), self.iteration
        last: dict[str, float] = {}
        dist = self.dist
        bar = tqdm(total=run.iterations, initial=self.iteration,
                   disable=(self.progress is False or self.rank != 0) or None,
                   dynamic_ncols=True, desc=self.cfg.run.name)
        stop_agreed = False  # with several processes: every rank saw a stop request by the last iteration
        feed: Optional[Iterator[tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor]]] = None
        try:
            for model in self.exp.parts.models.values():
                model.train()
            if dist is not None:
                dist.synchronise_models(self.exp.parts.models.values())
            feed = self._batches(self.iteration, run.iterations)
            while self.iteration < run.iterations:
                if stop_agreed if dist is not None else self._stop.is_set():
                    path = self.save_checkpoint()
                    raise Interrupted(path, self.iteration)
                self._apply_lr_schedule()
                images, labels, mine, idx = next(feed)
                batch = Batch(images, mine, labels).to(self.device)
                result = self.exp.objective.step(batch, self.generator)
                if dist is not None:
                    self._sync_per_example_state(mine, idx)
                    if self.iteration == start_iteration and self.rank == 0:
                        self._warn_unsynchronised_state()
                self.state.iteration += 1
                self.state.images_seen += int(idx.numel())
                names = list(result.scalars)
                stacked = torch.stack([result.scalars[k].detach().float().reshape(()) for k in names])
                if dist is not None:
                    # the mean over ranks (the combined batch's mean for per-example means) and the
                    # stop request, in one collective that is also this iteration's host sync
                    stacked, stop_agreed = dist.mean_with_flag(stacked, self._stop.is_set())
                values = stacked.cpu().tolist()
                last = dict(zip(names, values))
                if not all(math.isfinite(v) for v in values):
                    raise self._divergence(last)
                bar.update(1)
                if self.iteration % run.log_every == 0 or self.iteration == run.iterations:
                    self._log(last, result.histograms)
                    bar.set_postfix({k: f"{v:.3g}" for k, v in list(last.items())[:4]}, refresh=False)
                if run.sample_every and self.iteration % run.sample_every == 0:
                    self.save_samples()
                if run.eval_every and self.iteration % run.eval_every == 0 and self.exp.metrics:
                    self.evaluate()
                if run.checkpoint_every and self.iteration % run.checkpoint_every == 0:
                    self.save_checkpoint()
            if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"{self.iteration:08d}.ckpt"):
                self.save_checkpoint()
            if not (run.sample_every and self.iteration % run.sample_every == 0):
                self.save_samples()
            # Evaluate at the end unless it happened at this iteration already (in the loop, or
            # before a kill that this resumed run recovered from).
            if self.exp.metrics and not any(e["iteration"] == self.iteration for e in self.evaluations):
                self.evaluate()
                self.save_checkpoint()  # keep the evaluation record in the final checkpoint
        finally:
            if feed is not None:
                feed.close()  # stops DataLoader workers of an interrupted run
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self._writer is not None:
                self._writer.close()
        return TrainSummary(
            run_dir=self.run_dir, iterations=self.iteration, images_seen=self.state.images_seen, last_scalars=last,
            evaluations=self.evaluations, checkpoint=self.last_checkpoint, seconds=time.perf_counter() - start,
            start_iteration=start_iteration, device=str(self.device),
        )


def check_global_batch(n: int, batch_size: int, world_size: int, drop_last: bool) -> None:
    """Every rank must get an equal, non-empty slice of every global batch."""
    total = batch_size * world_size
    if total > n:
        raise UsageError(
            f"'data.batch_size' is {batch_size} per process, so {world_size} processes need {total} examples per "
            f"iteration, but the dataset has only {n}; lower data.batch_size or start fewer processes"
        )
    if not drop_last and n % total:
        raise UsageError(
            f"'data.drop_last' = false leaves a last batch of {n % total} examples per epoch, which "
            f"{world_size} processes cannot split evenly (batch_size {batch_size} per process); set "
            "data.drop_last = true or choose a batch size for which the dataset size is a multiple of "
            "batch_size * processes"
        )


def _world_size_message(path: Path, saved: int, now: int) -> str:
    def count(k: int) -> str:
        return "one process" if k == 1 else f"{k} processes"

    how = ("`coop train ... --resume`" if saved == 1 else
           f"`torchrun --nproc-per-node {saved} -m coopcore.cli train ... --resume` or "
           f"`coop train --nproc {saved} ... --resume`")
    return (f"--resume: {path} was trained by {count(saved)}, but this is {count(now)}. Its checkpoints hold one "
            f"random stream and one objective state per process, so the run continues exactly only with the same "
            f"number: resume it with {how}.")
