"""Complete, atomic, verified checkpoints.

File format: one header line ``COOPCKPT 2 <sha256> <length>\\n`` followed by the bytes of
``torch.save(payload)``.  Since format 2 the payload holds only tensors, numbers, strings,
None, lists, tuples and dicts (checked when saving, naming the offending key), and is read with
``torch.load(weights_only=True)``: opening a checkpoint someone sent you runs no code.  Format-1
checkpoints (pickled objects inside) still load, with a warning, through the full unpickler.

Writing goes to a temporary file in the same directory, is flushed and fsync'ed, then renamed
over the target, and only then is ``latest.json`` (the pointer `--resume` follows) replaced the
same way; older checkpoints are pruned last.  A crash at any point leaves the previous good
checkpoint and pointer intact.  Loading checks length and hash, so a truncated or corrupted
file is reported instead of half-loaded.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .errors import CheckpointError

MAGIC = b"COOPCKPT"
VERSION = 2
PLAIN_TYPES = (str, int, float, bool, complex, bytes, type(None), torch.Size, torch.dtype, torch.device)
POINTER = "latest.json"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def check_plain(value: Any, path: str = "payload") -> None:
    """Raise CheckpointError naming the first value `torch.load(weights_only=True)` would refuse."""
    if isinstance(value, torch.Tensor) or type(value) in PLAIN_TYPES:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) not in PLAIN_TYPES:
                raise CheckpointError(f"checkpoint {path}: key {k!r} is a {type(k).__name__}; use a string or number")
            check_plain(v, f"{path}[{k!r}]")
        return
    if type(value) in (list, tuple, set):
        for i, v in enumerate(value):
            check_plain(v, f"{path}[{i}]")
        return
    raise CheckpointError(
        f"checkpoint {path} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint may hold "
        "only tensors, numbers, strings, None, lists, tuples, sets and dicts (convert it in state_dict())"
    )


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    check_plain(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    body = buf.getvalue()
    header = b"%s %d %s %d\n" % (MAGIC, VERSION, hashlib.sha256(body).hexdigest().encode(), len(body))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, header + body)
    return path


def load_checkpoint(path: Path, map_location: Any = "cpu",
                    warn: Callable[[str], None] = lambda msg: warnings.warn(msg, stacklevel=3)) -> dict[str, Any]:
    """Read and verify a checkpoint; raises CheckpointError naming the problem."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    newline = raw.find(b"\n")
    if newline < 0 and raw.startswith(MAGIC[: len(raw)]) and raw:
        raise CheckpointError(f"{path} is truncated: its header is incomplete")
    if newline < 0 or not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a coopnets checkpoint (bad header)")
    try:
        _, version, digest, length = raw[:newline].split(b" ")
        version_i, length_i = int(version), int(length)
    except ValueError:
        raise CheckpointError(f"{path}: malformed checkpoint header") from None
    if version_i > VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version_i} is newer than this coopnets ({VERSION})")
    body = raw[newline + 1 :]
    if len(body) != length_i:
        raise CheckpointError(
            f"{path} is truncated or damaged: {len(body)} of {length_i} bytes present"
        )
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise CheckpointError(f"{path} is damaged: its content does not match the recorded sha256")
    if version_i < 2:
        warn(f"{path} is a format-{version_i} checkpoint: loading it runs pickled code, so open it only if you "
             "trust its source; resume or re-save it to get the safe format")
        return torch.load(io.BytesIO(body), map_location=map_location, weights_only=False)
    try:
        return torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path} holds objects other than tensors and plain data; refusing to unpickle it "
                              f"({str(exc).splitlines()[0]})") from None


class CheckpointDir:
    """The checkpoints of one run: ``iter-XXXXXXXX.ckpt`` files plus the ``latest.json`` pointer."""

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def path_for(self, iteration: int) -> Path:
        return self.directory / f"iter-{iteration:08d}.ckpt"

    def save(self, iteration: int, payload: dict[str, Any]) -> Path:
        path = save_checkpoint(self.path_for(iteration), payload)
        pointer = {"checkpoint": path.name, "iteration": iteration}
        atomic_write_bytes(self.directory / POINTER, json.dumps(pointer).encode())
        self._prune(keep_name=path.name)
        return path

    def _prune(self, keep_name: str) -> None:
        files = sorted(self.directory.glob("iter-*.ckpt"))
        for old in files[: max(0, len(files) - self.keep)]:
            if old.name != keep_name:
                old.unlink(missing_ok=True)

    def candidates(self) -> list[Path]:
        """Checkpoints newest first, the pointer's target leading."""
        files = sorted(self.directory.glob("iter-*.ckpt"), reverse=True)
        pointer = self.directory / POINTER
        if pointer.exists():
            try:
                target = self.directory / json.loads(pointer.read_text())["checkpoint"]
                if target in files:
                    files.remove(target)
                    files.insert(0, target)
            except (ValueError, KeyError):
                pass
        return files

    def latest(self) -> Optional[Path]:
        c = self.candidates()
        return c[0] if c else None

    def load_latest(self, map_location: Any = "cpu") -> tuple[Path, dict[str, Any], list[str]]:
        """Load the newest checkpoint that verifies; return it with warnings about skipped ones."""
        notes: list[str] = []
        for path in self.candidates():
            try:
                return path, load_checkpoint(path, map_location, warn=notes.append), notes
            except CheckpointError as exc:
                notes.append(f"skipped unusable checkpoint: {exc}")
        detail = ("; ".join(notes)) if notes else "none found"
        raise CheckpointError(f"no usable checkpoint in {self.directory} ({detail})")

    def remove_stale_temporaries(self) -> None:
        """Delete half-written checkpoint files a killed process left behind (never a finished one)."""
        for tmp in self.directory.glob(".*.tmp-*"):
            tmp.unlink(missing_ok=True)
