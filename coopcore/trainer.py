"""One training loop for every objective.

data -> objective.step -> logging (metrics.jsonl, tensorboard scalars and energy histograms,
sample grids) -> periodic evaluation -> periodic atomic checkpoints.  Scalars are read from
the device once per iteration (one host sync), which is also when divergence is detected: a
non-finite loss stops the run with the energy gap, gradient norms and the last good
checkpoint, instead of saving garbage.

Ctrl-C finishes the current iteration, saves a checkpoint and exits; a second Ctrl-C aborts at
once (the previous checkpoint is untouched either way).
"""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .build import Experiment
from .data import BatchSchedule, value_range
from .errors import CoopError, RunFailure
from .images import save_grid
from .metrics import MetricResult
from .protocols import Batch
from .rng import make_generator
from .rundir import RunDir, TrainingState, checkpoint_payload, restore_payload


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
                 echo: Callable[[str], None] = print) -> None:
        self.exp = experiment
        self.cfg = experiment.config
        self.run = run
        self.progress = progress
        self.echo = echo
        self.device = experiment.device
        self.generator = make_generator(self.cfg.run.seed, self.device)
        self.schedule = BatchSchedule(
            len(experiment.dataset), self.cfg.data.batch_size, self.cfg.run.seed,
            self.cfg.data.shuffle, self.cfg.data.drop_last,
        )
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
        """Continue from a checkpoint payload (see `coopcore.rundir.checkpoint_payload`)."""
        self.state = restore_payload(self.exp, payload, self.generator)
        self.last_checkpoint = checkpoint

    def save_checkpoint(self) -> Path:
        payload = checkpoint_payload(self.exp, self.state, self.generator)
        self.last_checkpoint = self.run.checkpoints.save(self.state.iteration, payload)
        return self.last_checkpoint

    # -- logging ------------------------------------------------------------------------
    def _tb(self):
        if self._writer is None and self.cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run.tensorboard))
        return self._writer

    def _log(self, scalars: dict[str, float], histograms: dict[str, torch.Tensor]) -> None:
        self.run.append_metrics({"iteration": self.iteration, "images_seen": self.state.images_seen, **scalars})
        tb = self._tb()
        if tb is not None:
            for k, v in scalars.items():
                tb.add_scalar(f"train/{k}", v, self.iteration)
            for k, v in histograms.items():
                tb.add_histogram(f"train/{k}", v.detach().float().cpu(), self.iteration)

    def eval_generator(self, salt: int = 0) -> torch.Generator:
        """A generator for sampling/evaluation that never touches the training stream."""
        return make_generator(self.cfg.run.seed * 7919 + self.iteration * 31 + salt + 1, self.device)

    def save_samples(self) -> list[Path]:
        named = self.exp.objective.samples(self.cfg.run.sample_count, self.eval_generator())
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
        bar = tqdm(total=run.iterations, initial=self.iteration, disable=(self.progress is False) or None,
                   dynamic_ncols=True, desc=self.cfg.run.name)
        try:
            for model in self.exp.parts.models.values():
                model.train()
            while self.iteration < run.iterations:
                if self._stop.is_set():
                    path = self.save_checkpoint()
                    raise Interrupted(path, self.iteration)
                self._apply_lr_schedule()
                idx = self.schedule.indices(self.iteration)
                batch = Batch(self.exp.dataset.get_batch(idx), idx).to(self.device)
                result = self.exp.objective.step(batch, self.generator)
                self.state.iteration += 1
                self.state.images_seen += int(idx.numel())
                names = list(result.scalars)
                values = torch.stack([result.scalars[k].detach().float().reshape(()) for k in names]).cpu().tolist()
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

