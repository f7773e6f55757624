"""A run directory: its layout, provenance, checkpoint payload and resume rules, in one place.

Layout of ``RUN/``::

    config.json        the resolved recipe (every default filled in); `coop train RUN` reopens it
    provenance.json    versions, device, seed, config hash, git commit, start time
    metrics.jsonl      one line of training scalars every `run.log_every` iterations
    evaluations.jsonl  one line per metric evaluation (training's and `coop eval`'s)
    checkpoints/       iter-XXXXXXXX.ckpt files plus latest.json (see coopcore.checkpoint)
    samples/           PNG sample grids
    tensorboard/       event files (when `run.tensorboard`)
    summary.json       written last: the run is complete
    error.log          the traceback of a run that failed

A run directory is created atomically: config.json and provenance.json are written into a
hidden sibling folder that is then renamed into place, so a process killed during start-up
leaves no half-made directory behind.  On resume the logs are cut back to the checkpoint the
run continues from, so they read exactly as an uninterrupted run's would.
"""
from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__
from .checkpoint import CheckpointDir, _fsync_dir, atomic_write_bytes
from .data import value_range
from .errors import UsageError
from .experiment import CONFIG_FILE, ResolvedExperiment
from .rng import capture_rng_state, restore_rng_state

# Settings that may change between a run and its resumption: they change how long, where and how
# fast it runs, not what it trains (the device and the speed options change the rounding at most).
RESUMABLE_CHANGES = frozenset({
    "run.iterations", "run.log_every", "run.sample_every", "run.sample_count", "run.checkpoint_every",
    "run.keep_checkpoints", "run.eval_every", "run.device", "run.tensorboard", "run.threads", "data.root",
    # How fast, not what: the speed options (docs/performance.md) change rounding only, like the
    # device, and a run started before they existed has none of them in its config.json.
    "run.capture_sampler", "run.precision", "run.compile", "run.channels_last", "run.fused_adam",
    "run.data_on_device",
})


def git_commit() -> str:
    """The commit of the coopnets source tree, when it is a git checkout (else empty)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = data
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Key paths whose values differ, ignoring the settings that may change on resume."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys
            if a.get(k) != b.get(k) and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_CHANGES)]


def provenance(resolved: ResolvedExperiment, device: torch.device, world_size: int = 1) -> dict[str, Any]:
    """Where and with what a run was made (`world_size`: processes of a torchrun launch, recorded when > 1)."""
    record = {
        "coopnets_version": __version__,
        "torch_version": str(torch.__version__),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "seed": resolved.run.seed,
        "config_hash": resolved.hash(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if world_size > 1:
        record["world_size"] = world_size
    return record


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JSON-lines log (a line cut short by a kill is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def overwrite_refused(path: Path) -> UsageError:
    """The error for a new run aimed at a directory that already holds something."""
    return UsageError(f"run directory {path} already exists and is not empty; refusing to overwrite it. "
                      "Pass --resume to continue that run, or choose another --out.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """The files of one training run (see the module docstring for the layout)."""

    CONFIG = CONFIG_FILE
    PROVENANCE = "provenance.json"
    METRICS = "metrics.jsonl"
    EVALUATIONS = "evaluations.jsonl"
    SUMMARY = "summary.json"
    ERROR_LOG = "error.log"

    def __init__(self, path: Path, keep_checkpoints: int = 2) -> None:
        self.path = Path(path)
        self.checkpoints = CheckpointDir(self.path / "checkpoints", keep=keep_checkpoints)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- creation ---------------------------------------------------------------------------
    def is_run(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def is_empty_or_absent(self) -> bool:
        return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))

    @classmethod
    def create(cls, path: Path, resolved: ResolvedExperiment, device: torch.device, world_size: int = 1) -> "RunDir":
        """Make the run directory with its config.json and provenance.json, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cls._remove_abandoned(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.mkdir()
        try:
            atomic_write_bytes(tmp / cls.CONFIG, json.dumps(resolved.to_data(), indent=2).encode())
            record = provenance(resolved, device, world_size)
            atomic_write_bytes(tmp / cls.PROVENANCE, json.dumps(record, indent=2).encode())
            try:
                os.rename(tmp, path)  # replaces an empty directory; fails on a non-empty one
            except OSError:
                raise overwrite_refused(path) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(path.parent)
        return cls(path, resolved.run.keep_checkpoints)

    @staticmethod
    def _remove_abandoned(path: Path) -> None:
        """Delete half-made run directories of `path` whose creating process is gone."""
        pattern = re.compile(re.escape(f".{path.name}.tmp-") + r"(\d+)-[0-9a-f]+$")
        for sibling in path.parent.glob(f".{path.name}.tmp-*"):
            m = pattern.match(sibling.name)
            if m and not _pid_alive(int(m.group(1))):
                shutil.rmtree(sibling, ignore_errors=True)

    # -- config and resume ------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        if not self.is_run():
            raise UsageError(f"{self.path} is not a run directory: {self.CONFIG} is missing "
                             "(expected the --out of `coop train`)")
        return json.loads((self.path / self.CONFIG).read_text())

    def check_resumable(self, resolved: ResolvedExperiment) -> None:
        """Refuse to continue this run with a recipe that would change its results."""
        diff = config_differences(self.read_config(), resolved.to_data())
        if diff:
            raise UsageError(
                f"--resume: the recipe differs from {self.path / self.CONFIG} in: {', '.join(diff)}. "
                f"Only {', '.join(sorted(RESUMABLE_CHANGES))} may change on resume."
            )

    def provenance(self) -> dict[str, Any]:
        """provenance.json (device, versions, commit, seed), or {} when absent or unreadable."""
        try:
            return json.loads((self.path / self.PROVENANCE).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def summary(self) -> Optional[dict[str, Any]]:
        """The completion record, or None while the run is unfinished."""
        path = self.path / self.SUMMARY
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def is_complete(self, iterations: int) -> bool:
        done = self.summary()
        return done is not None and int(done.get("iterations", -1)) >= iterations

    def write_summary(self, record: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / self.SUMMARY, json.dumps(record, indent=2).encode())

    def rewind(self, iteration: int, evaluations: list[dict[str, Any]]) -> None:
        """Cut the logs back to a checkpoint at `iteration` before training continues from it.

        Training scalars after it are dropped; training evaluations are rewritten from the
        checkpoint's record (`coop eval`'s lines, which name their checkpoint, are kept).
        """
        (self.path / self.SUMMARY).unlink(missing_ok=True)
        self.checkpoints.remove_stale_temporaries()
        metrics = self.path / self.METRICS
        if metrics.exists():
            _write_jsonl(metrics, [r for r in _read_jsonl(metrics) if r.get("iteration", 0) <= iteration])
        evals = self.path / self.EVALUATIONS
        if evals.exists() or evaluations:
            external = [r for r in _read_jsonl(evals) if "checkpoint" in r]
            _write_jsonl(evals, list(evaluations) + external)

    # -- logs -------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / self.METRICS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """The training scalars logged so far (metrics.jsonl)."""
        return _read_jsonl(self.path / self.METRICS)

    def evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation recorded so far (evaluations.jsonl): training's and `coop eval`'s."""
        return _read_jsonl(self.path / self.EVALUATIONS)

    def append_evaluation(self, record: dict[str, Any]) -> None:
        with open(self.path / self.EVALUATIONS, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def error_log(self) -> Path:
        return self.path / self.ERROR_LOG


# -- the checkpoint payload ------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What a checkpoint records of its training set: enough to sample without loading it."""

    name: str
    n: int
    shape: tuple[int, ...]
    value_range: tuple[float, float]

    def __len__(self) -> int:
        return self.n

    @classmethod
    def of(cls, dataset: Any) -> "DatasetInfo":
        return cls(str(getattr(dataset, "name", "")), len(dataset), tuple(int(v) for v in dataset.shape),
                   value_range(dataset))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "DatasetInfo":
        info = payload.get("data", {})
        lo, hi = info.get("value_range", (-1.0, 1.0))
        return cls(str(info.get("name", "(not loaded)")), int(info.get("n", 1)),
                   tuple(int(v) for v in info.get("shape", ())), (float(lo), float(hi)))

    def to_data(self) -> dict[str, Any]:
        return {"n": self.n, "shape": list(self.shape), "name": self.name, "value_range": list(self.value_range)}


@dataclass
class TrainingState:
    """The counters a run keeps besides the networks, optimisers, objective and RNGs."""

    iteration: int = 0
    images_seen: int = 0
    evaluations: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.evaluations is None:
            self.evaluations = []


def checkpoint_payload(experiment: Any, state: TrainingState, generator: torch.Generator,
                       ranks: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Everything needed to continue bit-exactly, as plain data (tensors, numbers, strings, lists, dicts).

    `ranks` (a run on several processes, see `coopcore.distributed`) holds ``world_size`` and
    the lists ``rng`` and ``objective`` with one entry per rank; it is stored under
    ``"distributed"``.  Entry 0 of each list is None: the top-level ``rng`` and ``objective``
    are rank 0's, so single-process tools (`coop sample`, `coop eval`) read such a checkpoint
    like any other and rank 0's state is not stored twice."""
    parts = experiment.parts
    payload = {
        "coopnets_version": __version__,
        "torch_version": str(torch.__version__),
        "iteration": state.iteration,
        "images_seen": state.images_seen,
        "config": experiment.resolved.to_data(),
        "models": {role: m.state_dict() for role, m in parts.models.items()},
        "optimizers": {role: o.state_dict() for role, o in parts.optimizers.items()},
        "objective": experiment.objective.state_dict(),
        "rng": capture_rng_state(generator),
        "evaluations": list(state.evaluations or []),
        "data": DatasetInfo.of(experiment.dataset).to_data(),
    }
    if ranks is not None:
        payload["distributed"] = ranks
    return payload


def saved_world_size(payload: dict[str, Any]) -> int:
    """How many processes trained the run a checkpoint payload comes from (1 without torchrun)."""
    ranks = payload.get("distributed")
    return int(ranks["world_size"]) if ranks else 1


def restore_payload(experiment: Any, payload: dict[str, Any], generator: Optional[torch.Generator],
                    rank: int = 0) -> TrainingState:
    """Load a checkpoint payload into a freshly built experiment; return the run's counters.

    `rank` picks that process's random streams and objective state from a checkpoint written by
    several processes (the caller checks the world size first); rank 0's are the top-level ones."""
    parts = experiment.parts
    for role, m in parts.models.items():
        m.load_state_dict(payload["models"][role])
    for role, o in parts.optimizers.items():
        o.load_state_dict(payload["optimizers"][role])
    ranks = payload.get("distributed")
    if ranks and rank > 0:
        experiment.objective.load_state_dict(ranks["objective"][rank])
        restore_rng_state(ranks["rng"][rank], generator)
    else:
        experiment.objective.load_state_dict(payload["objective"])
        restore_rng_state(payload["rng"], generator)
    return TrainingState(int(payload["iteration"]), int(payload["images_seen"]), list(payload.get("evaluations", [])))
