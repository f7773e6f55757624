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

import json
import math
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__
from .build import Experiment
from .checkpoint import CheckpointDir
from .config import config_hash, unstructure
from .data import BatchSchedule, value_range
from .errors import CoopError, RunFailure, UsageError
from .images import save_grid
from .metrics import EvalContext, MetricResult
from .protocols import Batch
from .rng import capture_rng_state, make_generator, restore_rng_state

CONFIG_FILE = "config.json"
# Settings that may change between a run and its resumption without changing its results.
RESUMABLE_CHANGES = {"run.iterations", "run.log_every", "run.sample_every", "run.sample_count",
                     "run.checkpoint_every", "run.keep_checkpoints", "run.eval_every", "run.device",
                     "run.tensorboard", "run.threads", "data.root"}


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


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = data
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)]


def prepare_run_dir(out: Path, resume: bool) -> Path:
    """A new run refuses an existing non-empty directory; --resume requires one."""
    out = Path(out)
    if resume:
        if not (out / CONFIG_FILE).exists():
            raise UsageError(f"--resume: {out} is not a run directory (no {CONFIG_FILE}); omit --resume to start a new run")
        return out
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            f"run directory {out} already exists and is not empty; refusing to overwrite it. "
            "Pass --resume to continue that run, or choose another --out."
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


class Trainer:
    def __init__(self, experiment: Experiment, run_dir: Path, *, progress: Optional[bool] = None,
                 resume: bool = False, echo=print, readonly: bool = False) -> None:
        """`readonly` attaches to an existing run without writing to it (sample/eval)."""
        self.exp = experiment
        self.cfg = experiment.config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.echo = echo
        self.device = experiment.device
        self.generator = make_generator(self.cfg.run.seed, self.device)
        self.schedule = BatchSchedule(
            len(experiment.dataset), self.cfg.data.batch_size, self.cfg.run.seed,
            self.cfg.data.shuffle, self.cfg.data.drop_last,
        )
        self.ckpts = CheckpointDir(self.run_dir / "checkpoints", keep=self.cfg.run.keep_checkpoints)
        self.iteration = 0
        self.images_seen = 0
        self.last_checkpoint: Optional[Path] = None
        self._base_lrs = {role: [g["lr"] for g in opt.param_groups] for role, opt in experiment.parts.optimizers.items()}
        self._stop = threading.Event()
        self._writer = None
        self.evaluations: list[dict[str, Any]] = []
        resolved = unstructure(self.cfg)
        if readonly:
            return
        if resume:
            self._resume(resolved)
        else:
            (self.run_dir / CONFIG_FILE).write_text(json.dumps(resolved, indent=2))
            self._write_provenance(resolved)

    # -- state --------------------------------------------------------------------------
    def state_payload(self) -> dict[str, Any]:
        parts = self.exp.parts
        return {
            "coopnets_version": __version__,
            "torch_version": torch.__version__,
            "iteration": self.iteration,
            "images_seen": self.images_seen,
            "config": unstructure(self.cfg),
            "models": {role: m.state_dict() for role, m in parts.models.items()},
            "optimizers": {role: o.state_dict() for role, o in parts.optimizers.items()},
            "objective": self.exp.objective.state_dict(),
            "rng": capture_rng_state(self.generator),
            "evaluations": self.evaluations,
            "data": {"n": len(self.exp.dataset), "shape": list(self.exp.dataset.shape),
                     "name": getattr(self.exp.dataset, "name", ""),
                     "value_range": list(value_range(self.exp.dataset))},
        }

    def load_payload(self, payload: dict[str, Any]) -> None:
        parts = self.exp.parts
        for role, m in parts.models.items():
            m.load_state_dict(payload["models"][role])
        for role, o in parts.optimizers.items():
            o.load_state_dict(payload["optimizers"][role])
        self.exp.objective.load_state_dict(payload["objective"])
        restore_rng_state(payload["rng"], self.generator)
        self.iteration = int(payload["iteration"])
        self.images_seen = int(payload["images_seen"])
        self.evaluations = list(payload.get("evaluations", []))

    def _resume(self, resolved: dict[str, Any]) -> None:
        old = json.loads((self.run_dir / CONFIG_FILE).read_text())
        diff = config_differences(old, resolved)
        if diff:
            raise UsageError(
                f"--resume: the recipe differs from the run's {CONFIG_FILE} in: {', '.join(diff)}. "
                f"Only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume."
            )
        path, payload, warnings = self.ckpts.load_latest(map_location=self.device)
        for w in warnings:
            self.echo(f"warning: skipped unusable checkpoint: {w}")
        self.load_payload(payload)
        self.last_checkpoint = path
        self.echo(f"resumed from {path} at iteration {self.iteration}")

    def _write_provenance(self, resolved: dict[str, Any]) -> None:
        prov = {
            "coopnets_version": __version__,
            "torch_version": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else platform.processor(),
            "seed": self.cfg.run.seed,
            "config_hash": config_hash(resolved),
            "git_commit": git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (self.run_dir / "provenance.json").write_text(json.dumps(prov, indent=2))

    def save_checkpoint(self) -> Path:
        self.last_checkpoint = self.ckpts.save(self.iteration, self.state_payload())
        return self.last_checkpoint

    # -- logging ------------------------------------------------------------------------
    def _tb(self):
        if self._writer is None and self.cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        return self._writer

    def _log(self, scalars: dict[str, float], histograms: dict[str, torch.Tensor]) -> None:
        record = {"iteration": self.iteration, "images_seen": self.images_seen, **scalars}
        with open(self.run_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
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
            p = save_grid(images, self.run_dir / "samples" / f"iter-{self.iteration:08d}-{kind}.png", value_range=vr)
            paths.append(p)
            if tb is not None and images.dim() == 4:
                from .images import make_grid

                grid = make_grid(images, value_range=vr)
                tb.add_image(f"samples/{kind}", grid if grid.ndim == 3 else grid[:, :, None], self.iteration, dataformats="HWC")
        return paths

    def evaluate(self) -> list[MetricResult]:
        results = []
        for i, (label, metric) in enumerate(self.exp.metrics):
            ctx = EvalContext(
                objective=self.exp.objective, models=self.exp.parts.models, registries=self.exp.registries,
                data_root=self.exp.data_root, device=self.device, generator=self.eval_generator(1000 + i),
                train_dataset=self.exp.dataset, progress=lambda msg, _label=label: self.echo(f"[{_label}] {msg}"),
            )
            res = metric.compute(ctx)
            results.append(res)
            rec = {"iteration": self.iteration, "images_seen": self.images_seen, "label": label, **res.as_dict()}
            self.evaluations.append(rec)
            with open(self.run_dir / "evaluations.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
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
        start = time.perf_counter()
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
                self.iteration += 1
                self.images_seen += int(idx.numel())
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
            if self.exp.metrics and not (run.eval_every and self.iteration % run.eval_every == 0):
                self.evaluate()
                self.save_checkpoint()  # keep the evaluation record in the final checkpoint
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self._writer is not None:
                self._writer.close()
        return TrainSummary(
            run_dir=self.run_dir, iterations=self.iteration, images_seen=self.images_seen, last_scalars=last,
            evaluations=self.evaluations, checkpoint=self.last_checkpoint, seconds=time.perf_counter() - start,
        )


def git_commit() -> str:
    """The commit of the coopnets source tree, when it is a git checkout (else empty)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""
