"""SVHN (cropped digits, format 2) from the official .mat files.

Layout: torchvision's, the files directly in the data root: ``ROOT/train_32x32.mat``
(73,257 images), ``ROOT/test_32x32.mat`` (26,032), ``ROOT/extra_32x32.mat`` (531,131);
``ROOT/svhn/`` and ``ROOT/SVHN/`` are accepted too.  Read with `scipy.io.loadmat`: ``X`` is
[32, 32, 3, N] uint8, ``y`` is [N, 1] with the digit 0 stored as 10, mapped to 0 as torchvision
does.  File order; ``limit`` keeps the first ``limit`` images.  ``download = true`` uses
torchvision's downloader when torchvision is installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import UsageError, non_negative

from .files import describe, require_root
from .scaling import SCALINGS, Scaling, one_of
from .storage import Uint8ImageDataset

SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
FOLDERS = (".", "svhn", "SVHN")


@attrs.frozen(kw_only=True)
class SvhnOptions:
    """SVHN options."""

    split: Literal["train", "test", "extra"] = attrs.field(default="train", validator=one_of("train", "test", "extra"))
    limit: int = attrs.field(default=0, validator=non_negative)
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))
    # Fetch the .mat file with torchvision's downloader when missing (needs torchvision).
    download: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 3, 32, 32], int64 [N] with 10 -> 0) from one SVHN .mat file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except (ValueError, OSError, TypeError, NotImplementedError) as exc:
        raise UsageError(f"{path} is not a readable SVHN .mat file ({exc})") from None
    if "X" not in mat or "y" not in mat:
        raise UsageError(f"{path} lacks the variables X and y of an SVHN .mat file")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != y.shape[0]:
        raise UsageError(f"{path}: expected X uint8 [32, 32, 3, N] and N labels, got {x.dtype} {list(x.shape)} "
                         f"and {y.shape[0]} labels")
    y = np.where(y == 10, 0, y)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise UsageError(f"{path}: labels outside 0..10")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def _download(root: Path, split: str, fname: str) -> None:
    where = f"download {fname} from {SVHN_URL} into {root}"
    try:
        import torchvision.datasets as tvd  # optional: only for download = true
    except ImportError:
        raise UsageError(f"'data.options.download' = true needs torchvision, which is not installed, so SVHN "
                         f"cannot be downloaded here; {where}") from None
    try:
        tvd.SVHN(str(root), split=split, download=True)
    except Exception as exc:  # noqa: BLE001 - network errors all mean "do it by hand"
        raise UsageError(f"downloading SVHN with torchvision failed ({exc}); {where}") from None


def svhn_dataset(options: SvhnOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """SVHN digits (train / test / extra) from torchvision's .mat layout."""
    fname = f"{options.split}_32x32.mat"
    layout = f"ROOT/{fname} (torchvision's layout; ROOT/svhn/{fname} is accepted too), from {SVHN_URL}"
    root = require_root("svhn", root, layout)
    path = next((root / d / fname for d in FOLDERS if (root / d / fname).is_file()), None)
    if path is None and options.download:
        _download(root, options.split, fname)
        path = root / fname if (root / fname).is_file() else None
    if path is None:
        hint = "" if options.download else " Automatic download is off (data.options.download = true needs torchvision)."
        raise UsageError(f"SVHN file {fname} not found under {root}: {describe(root)}. Expected {layout}.{hint}")
    x, y = read_svhn_mat(path)
    if options.limit:
        x, y = x[: options.limit], y[: options.limit]
    return Uint8ImageDataset(torch.from_numpy(np.ascontiguousarray(x)), name=f"svhn-{options.split}",
                             scaling=options.scaling, labels=torch.from_numpy(y), n_classes=10)
