"""Finding data files under the data root, and saying clearly what is missing.

The data root is the factory's `root` argument: ``--data-root`` beats the recipe's
``data.root``, which beats ``$COOP_DATA``.  Paths given in options (``path``, ``image``) are
absolute, or relative to the data root (relative to the working directory when no root is
set).  File lists are sorted in natural order (``2.jpg`` before ``10.jpg``) so that every
dataset has one documented, platform-independent order, which `limit` and the train/test
splits rely on.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from coopcore import UsageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif"}
)
ROOT_HINT = "pass --data-root DIR, set data.root in the recipe or the COOP_DATA environment variable"


def natural_key(text: str) -> tuple:
    """Sort key comparing digit runs as numbers: frame2.png < frame10.png."""
    return tuple((0, int(tok), tok) if tok.isdigit() else (1, 0, tok) for tok in re.split(r"(\d+)", text) if tok)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (and its subfolders when `recursive`), in natural order of their
    path relative to `folder`."""
    if recursive:
        found = [Path(d) / f for d, _, files in os.walk(folder, followlinks=True) for f in files]
    else:
        found = [p for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    images = [p for p in found if is_image(p)]
    return sorted(images, key=lambda p: tuple(natural_key(part) for part in p.relative_to(folder).parts))


def subfolders(folder: Path) -> list[Path]:
    """Direct subfolders (hidden ones skipped), natural order."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))


def describe(folder: Path, limit: int = 8) -> str:
    """What is actually at `folder`, for error messages."""
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    names = sorted((p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()), key=natural_key)
    if not names:
        return f"{folder} is empty"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{folder} contains {', '.join(names[:limit])}{more}"


def require_root(dataset: str, root: Optional[Path], layout: str) -> Path:
    """The data root, or a UsageError saying how to give one and what it must hold."""
    if root is None:
        raise UsageError(f"dataset '{dataset}' needs a data root: {ROOT_HINT}. Expected layout: {layout}")
    return Path(root)


def resolve_user_path(root: Optional[Path], path: str) -> Path:
    """An option's path: absolute as given, else under the data root (or the working directory)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return (Path(root) / p) if root is not None else p
