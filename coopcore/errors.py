"""Error types that map onto the CLI's exit codes.

`UsageError` (exit 2) is for anything the user can fix by changing input: a recipe key, a
path, a plugin name. `RunFailure` (exit 1) is for a failure while a run is in progress; it
carries the run directory and what was saved so the message can say where to look.
"""
from __future__ import annotations

from pathlib import Path


class CoopError(Exception):
    """Base class of every error coopnets raises on purpose."""


class UsageError(CoopError):
    """Bad usage or bad input: the CLI prints the message and exits with code 2."""


class ConfigError(UsageError):
    """A recipe or option value is invalid; `path` is the dotted key path (e.g. ``run.seed``)."""

    def __init__(self, path: str, message: str, source: str | None = None) -> None:
        self.path = path
        self.source = source
        where = f"{source}: " if source else ""
        key = f"'{path}'" if path else "the recipe"
        super().__init__(f"{where}{key}: {message}")


class RegistryError(UsageError):
    """A registration or lookup in a component registry failed."""


class CheckpointError(CoopError):
    """A checkpoint file is missing, truncated or fails verification."""


class RunFailure(CoopError):
    """A failure during a run (exit code 1); names the run directory and the last checkpoint."""

    def __init__(self, message: str, run_dir: Path | None = None, checkpoint: Path | None = None) -> None:
        self.run_dir = run_dir
        self.checkpoint = checkpoint
        parts = [message]
        if run_dir is not None:
            parts.append(f"Run directory: {run_dir}")
        parts.append(f"Last good checkpoint: {checkpoint}" if checkpoint else "No checkpoint was saved.")
        super().__init__("\n".join(parts))
