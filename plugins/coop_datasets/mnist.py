"""MNIST from the standard idx files under a data root.

Accepted layouts (the first that exists wins), each file plain or gzipped:
  ROOT/MNIST/raw/train-images-idx3-ubyte[.gz]   (torchvision's layout)
  ROOT/mnist/train-images-idx3-ubyte[.gz]
  ROOT/train-images-idx3-ubyte[.gz]
and likewise train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte.

Splits follow TPAMI Table 2 / the authors' TensorFlow code: `train55k` = raw training
indices 5,000-59,999; `validation1k` = raw training indices 50,000-50,999 (they overlap
train55k; kept for fidelity); `train` = all 60,000; `test` = the 10,000 test images.
Pixels are scaled x / 255 * 2 - 1.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from coopcore import TensorImageDataset, UsageError, non_negative, positive

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLITS = {
    "train": ("train", slice(0, 60000)),
    "train55k": ("train", slice(5000, 60000)),
    "validation1k": ("train", slice(50000, 51000)),
    "test": ("test", slice(0, 10000)),
}


@attrs.frozen(kw_only=True)
class MnistOptions:
    """MNIST from idx files."""

    split: Literal["train", "train55k", "validation1k", "test"] = "train55k"
    size: int = attrs.field(default=28, validator=positive)
    limit: int = attrs.field(default=0, validator=non_negative)


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (plain or .gz) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4:
        raise UsageError(f"{path} is too short to be an idx file")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte idx file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UsageError(f"{path} is truncated: {body.size} values for shape {dims}")
    return body.reshape(dims)


def find_idx(root: Path, stem: str) -> Optional[Path]:
    for folder in (root / "MNIST" / "raw", root / "mnist", root):
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
    return None


def mnist_dataset(options: MnistOptions, root: Optional[Path] = None) -> TensorImageDataset:
    """MNIST handwritten digits read from idx(.gz) files under the data root."""
    part, sl = SPLITS[options.split]
    img_stem, lbl_stem = FILES[part]
    layout = (
        f"expected {img_stem}[.gz] and {lbl_stem}[.gz] in ROOT/MNIST/raw/ (torchvision's layout), "
        "ROOT/mnist/ or ROOT/ itself"
    )
    if root is None:
        raise UsageError(
            f"dataset 'mnist' needs a data root: pass --data-root DIR, set data.root in the recipe "
            f"or the COOP_DATA environment variable; {layout}"
        )
    img_path, lbl_path = find_idx(root, img_stem), find_idx(root, lbl_stem)
    if img_path is None or lbl_path is None:
        missing = img_stem if img_path is None else lbl_stem
        raise UsageError(f"MNIST file {missing} not found under {root}: {layout}")
    images = torch.from_numpy(read_idx(img_path)[sl].copy()).float().unsqueeze(1) / 255.0
    labels = torch.from_numpy(read_idx(lbl_path)[sl].astype(np.int64))
    if options.size != 28:
        images = F.interpolate(images, size=(options.size, options.size), mode="bilinear", align_corners=False)
    if options.limit:
        images, labels = images[: options.limit], labels[: options.limit]
    return TensorImageDataset(images * 2.0 - 1.0, name=f"mnist-{options.split}", labels=labels, n_classes=10)
