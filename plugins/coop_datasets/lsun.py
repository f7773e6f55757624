"""One LSUN scene category, from its lmdb database or from a folder of exported images.

Layouts (the first found wins):
- ``ROOT/<category>_<split>_lmdb/`` (data.mdb inside): torchvision's LSUN layout, the
  databases as distributed.  Needs the optional ``lmdb`` package.  Images are taken in key
  order (the database's order).
- ``ROOT/<category>_<split>/``: a folder (searched recursively) of the images, e.g. as written
  by LSUN's export script; natural order of the relative paths.

LSUN is large (bedroom: 3,033,042 images), so images are decoded when a batch asks for them,
not held in memory.  Each image is cropped to its centred square (the shorter side) and resized
bilinearly to ``size``, which is the DCGAN preprocessing (resize the shorter side, centre crop)
done in one resampling step; the papers do not say more than "resized to 64x64".
``limit`` keeps the first ``limit`` images (the key listing stops there, which matters for the
3M-key databases).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import attrs
import numpy as np

from coopcore import UsageError, non_negative, positive

from .files import describe, list_images, require_root
from .imaging import center_box, convert, open_image, resize, to_chw
from .scaling import SCALINGS, Scaling, one_of
from .storage import LazyImageDataset


def _category(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not value or "/" in value or "\\" in value or value.startswith("."):
        raise ValueError(f"'{attribute.name}' must be an LSUN category name such as 'bedroom'; got {value!r}")


@attrs.frozen(kw_only=True)
class LsunOptions:
    """LSUN category options."""

    category: str = attrs.field(default="bedroom", validator=_category)
    split: Literal["train", "val"] = attrs.field(default="train", validator=one_of("train", "val"))
    size: int = attrs.field(default=64, validator=positive)
    limit: int = attrs.field(default=0, validator=non_negative)
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))


def square_resize(data: object, size: int, what: str) -> np.ndarray:
    """Decode, crop the centred square and resize: uint8 [3, size, size]."""
    img = convert(open_image(data, what), "rgb")  # type: ignore[arg-type]
    return to_chw(resize(img, size, center_box(*img.size)))


_ENVS: dict[str, Any] = {}
_ENVS_LOCK = threading.Lock()


def _open_env(lmdb: Any, path: Path) -> Any:
    """One read-only environment per database and process (lmdb refuses to open one twice)."""
    key = str(path.resolve())
    with _ENVS_LOCK:
        if key not in _ENVS:
            _ENVS[key] = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=64)
        return _ENVS[key]


class LmdbImages:
    """Encoded images of an lmdb database, addressed by position in key order."""

    def __init__(self, path: Path, limit: int) -> None:
        try:
            import lmdb  # optional dependency
        except ImportError:
            raise UsageError(f"reading the LSUN database {path} needs the 'lmdb' package (pip install lmdb), "
                             f"or export its images into the folder {str(path)[:-len('_lmdb')]}/") from None
        try:
            self.env = _open_env(lmdb, path)
        except lmdb.Error as exc:
            raise UsageError(f"{path} is not a readable lmdb database ({exc})") from None
        self.path = path
        with self.env.begin(write=False) as txn:
            keys = []
            for key in txn.cursor().iternext(keys=True, values=False):
                keys.append(bytes(key))
                if limit and len(keys) >= limit:
                    break
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, i: int) -> bytes:
        with self.env.begin(write=False, buffers=False) as txn:
            value = txn.get(self.keys[i])
        if value is None:
            raise UsageError(f"{self.path}: key {self.keys[i]!r} vanished from the database")
        return value


def lsun_dataset(options: LsunOptions, root: Optional[Path] = None) -> LazyImageDataset:
    """One LSUN category (default bedroom) from its lmdb database or an image folder; decoded lazily."""
    stem = f"{options.category}_{options.split}"
    layout = (f"torchvision's layout ROOT/{stem}_lmdb/ (the lmdb database, data.mdb inside) or a folder of "
              f"images ROOT/{stem}/")
    root = require_root("lsun", root, layout)
    db, folder = root / f"{stem}_lmdb", root / stem
    name = f"lsun-{stem}"
    load: Callable[[int], np.ndarray]
    if db.is_dir():
        images = LmdbImages(db, options.limit)
        n = len(images)
        load = lambda i: square_resize(images.get(i), options.size, f"{db} entry {images.keys[i]!r}")  # noqa: E731
    elif folder.is_dir():
        files = list_images(folder, recursive=True)
        if options.limit:
            files = files[: options.limit]
        n = len(files)
        load = lambda i: square_resize(files[i], options.size, str(files[i]))  # noqa: E731
    else:
        raise UsageError(f"LSUN '{stem}' not found under {root}: {describe(root)}. Expected {layout}.")
    if n == 0:
        raise UsageError(f"LSUN '{stem}' under {root} holds no images; expected {layout}")
    return LazyImageDataset(n, (3, options.size, options.size), load, name=name, scaling=options.scaling)
