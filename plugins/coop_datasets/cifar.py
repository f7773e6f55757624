"""CIFAR-10 and CIFAR-100 from the python pickles or from a folder of class folders.

Layouts (option ``layout``; ``"auto"`` takes the first one found, pickles first):

- ``"pickle"``: torchvision's on-disk layout, i.e. the official python archives extracted
  into the data root: ``ROOT/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``;
  ``ROOT/cifar-100-python/train`` and ``test``.  Read natively (pickle + numpy) with an
  unpickler that only accepts numpy arrays, so a foreign pickle cannot run code.
- ``"folders"``: ``<BASE>/train/<class>/*.png|jpg`` and ``<BASE>/test/<class>/...`` where BASE
  is the root itself or a folder directly under it whose name starts with ``cifar10``
  (``cifar100`` for CIFAR-100), ignoring case, '-' and '_' (e.g. ``ROOT/cifar10-jpg`` or
  ``ROOT/CIFAR-10-images``): the layout of the JPEG copies of CIFAR-10.  Exactly 10 (100)
  class folders; labels are the class folders in sorted order, which for both datasets is the
  official label order (airplane = 0 ... truck = 9; apple = 0 ... worm = 99).  Images must be
  32x32.  Note that a JPEG copy is lossy: its pixels are not CIFAR's.

Order: the pickle order (the batches in turn, train before test for ``split = "all"``); for
folders, class-interleaved (the first image of every class, then the second of every class,
...), so that a ``limit`` keeps the classes balanced, as a prefix of the shuffled pickles does.
``limit`` keeps the first ``limit`` images of the split in that order (0 = all).

``subset = n`` keeps n images of the split drawn at random with ``subset_seed`` (see
`subsets.py`: nested for one seed, kept in the order above) before ``limit`` applies: the
limited-data protocol of StyleGAN2-ADA that CoopInit's Tables 10-11 follow (50K / 20K / 10K
training images of CIFAR-10 and CIFAR-100).  0 = the whole split.

``download = true`` fetches the pickles with torchvision's downloader when torchvision is
installed; it is not a dependency of coopnets (it pins its own torch), so otherwise the
error says where to put the files.
"""
from __future__ import annotations

import codecs
import pickle
import re
from pathlib import Path
from typing import Any, Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import UsageError, non_negative

from .files import describe, list_images, natural_key, require_root, subfolders
from .imaging import convert, open_image, to_chw
from .scaling import SCALINGS, Scaling, one_of
from .storage import Uint8ImageDataset, decode_stacked
from .subsets import seeded_subset

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@attrs.frozen(kw_only=True)
class CifarOptions:
    """CIFAR-10 / CIFAR-100 options."""

    # "all" = train followed by test (60,000 images; the TPAMI Table 3 CIFAR protocol).
    split: Literal["train", "test", "all"] = attrs.field(default="train", validator=one_of("train", "test", "all"))
    # Keep only the first `limit` images of the split (0 = all).
    limit: int = attrs.field(default=0, validator=non_negative)
    # Keep `subset` images of the split drawn at random with `subset_seed` (0 = all; before `limit`).
    subset: int = attrs.field(default=0, validator=non_negative)
    # Seed of the subset's draw (numpy PCG64; nested subsets for one seed).
    subset_seed: int = attrs.field(default=0, validator=non_negative)
    # "minmax" per-image [-1, 1] (CoopNets code), "unit" x/127.5-1, "raw255" floats 0..255.
    scaling: Scaling = attrs.field(default="minmax", validator=one_of(*SCALINGS))
    layout: Literal["auto", "pickle", "folders"] = attrs.field(
        default="auto", validator=one_of("auto", "pickle", "folders"))
    # Fetch the pickles with torchvision's downloader when missing (needs torchvision).
    download: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


@attrs.frozen
class CifarSpec:
    """What differs between CIFAR-10 and CIFAR-100."""

    name: str
    title: str
    folder: str
    files: dict[str, tuple[str, ...]]
    label_key: str
    n_classes: int
    archive: str
    torchvision_class: str
    folder_prefix: str


CIFAR10 = CifarSpec(
    name="cifar10", title="CIFAR-10", folder="cifar-10-batches-py",
    files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key="labels", n_classes=10, archive="cifar-10-python.tar.gz", torchvision_class="CIFAR10",
    folder_prefix="cifar10",
)
CIFAR100 = CifarSpec(
    name="cifar100", title="CIFAR-100", folder="cifar-100-python",
    files={"train": ("train",), "test": ("test",)},
    label_key="fine_labels", n_classes=100, archive="cifar-100-python.tar.gz", torchvision_class="CIFAR100",
    folder_prefix="cifar100",
)


# -- the restricted unpickler -----------------------------------------------------------
def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled numpy array needs, under their numpy 1.x and 2.x module names:
    `_reconstruct` (protocols 0-4), `_frombuffer` (protocol 5), `scalar`, plus `_codecs.encode`,
    which protocol 2 uses for the raw bytes."""
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                           ("_codecs", "encode"): codecs.encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}") from None


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle -> (uint8 [N, 3, 32, 32], int64 [N])."""
    try:
        with open(path, "rb") as fh:
            raw = _ArrayUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UsageError(f"{path} is not a CIFAR python pickle ({exc})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path} is not a CIFAR python pickle: it holds a {type(raw).__name__}, not a dict")
    entry = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}
    if "data" not in entry or label_key not in entry:
        raise UsageError(f"{path} lacks the keys 'data' and '{label_key}' of a CIFAR pickle "
                         f"(found {sorted(map(str, entry))})")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape[0] != data.shape[0]:
        raise UsageError(f"{path}: expected uint8 data [N, 3072] and N labels, got {data.dtype} "
                         f"{list(data.shape)} and {labels.shape[0]} labels")
    return data.reshape(-1, 3, 32, 32), labels


# -- layouts ----------------------------------------------------------------------------
def _split_parts(split: str) -> tuple[str, ...]:
    return ("train", "test") if split == "all" else (split,)


def _pickle_layout(spec: CifarSpec) -> str:
    files = ", ".join(f for part in ("train", "test") for f in spec.files[part])
    return (f"ROOT/{spec.folder}/{{{files}}} (torchvision's layout: {spec.archive} from {CIFAR_URL} "
            f"extracted into ROOT)")


def _folders_layout(spec: CifarSpec) -> str:
    return (f"ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/... with {spec.n_classes} class folders, "
            f"or the same one level down in a folder named {spec.folder_prefix}* "
            f"(e.g. ROOT/{spec.folder_prefix}-jpg/train/...)")


def _norm(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def find_folders_base(spec: CifarSpec, root: Path) -> Optional[Path]:
    """The folder holding train/ and test/ class folders, or None."""
    candidates = [root]
    for child in subfolders(root):
        n = _norm(child.name)
        if n.startswith(spec.folder_prefix) and not (spec.n_classes == 10 and n.startswith("cifar100")):
            candidates.append(child)
    for base in candidates:
        if (base / "train").is_dir() or (base / "test").is_dir():
            return base
    return None


def _load_pickles(spec: CifarSpec, folder: Path, split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    for part in _split_parts(split):
        for fname in spec.files[part]:
            if limit and have >= limit:
                break
            path = folder / fname
            if not path.is_file():
                raise UsageError(f"{spec.title} file {path} is missing ({describe(folder)}); expected "
                                 f"{_pickle_layout(spec)}")
            x, y = read_batch(path, spec.label_key)
            xs.append(x)
            ys.append(y)
            have += len(x)
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit:
        x, y = x[:limit], y[:limit]
    if y.size and (y.min() < 0 or y.max() >= spec.n_classes):
        raise UsageError(f"{spec.title} labels in {folder} fall outside 0..{spec.n_classes - 1}")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def interleave_by_class(per_class: list[list[Path]]) -> list[tuple[Path, int]]:
    """(file, label) with the classes interleaved: rank 0 of every class, then rank 1, ..."""
    out: list[tuple[Path, int]] = []
    longest = max((len(f) for f in per_class), default=0)
    for rank in range(longest):
        for label, files in enumerate(per_class):
            if rank < len(files):
                out.append((files[rank], label))
    return out


def _decode_cifar_file(path: Path) -> np.ndarray:
    img = convert(open_image(path), "rgb")
    if img.size != (32, 32):
        raise UsageError(f"{path} is {img.size[0]}x{img.size[1]}; CIFAR images must be 32x32")
    return to_chw(img)


def _load_folders(spec: CifarSpec, base: Path, split: str, limit: int, subset: int = 0,
                  subset_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    items: list[tuple[Path, int]] = []
    for part in _split_parts(split):
        part_dir = base / part
        if not part_dir.is_dir():
            raise UsageError(f"{spec.title} split folder {part_dir} is missing ({describe(base)}); expected "
                             f"{_folders_layout(spec)}")
        classes = sorted(subfolders(part_dir), key=lambda p: natural_key(p.name))
        if len(classes) != spec.n_classes:
            raise UsageError(f"{part_dir} holds {len(classes)} class folders, {spec.title} has "
                             f"{spec.n_classes} ({describe(part_dir)}); expected {_folders_layout(spec)}")
        per_class = [list_images(c) for c in classes]
        empty = [c.name for c, f in zip(classes, per_class) if not f]
        if empty:
            raise UsageError(f"{spec.title} class folders without images under {part_dir}: {', '.join(empty)}")
        items.extend(interleave_by_class(per_class))
    if subset:  # chosen before decoding, so only the subset's files are read
        items = [items[i] for i in seeded_subset(len(items), subset, subset_seed, f"{spec.title} {split} ({base})")]
    if limit:
        items = items[:limit]
    x = decode_stacked(_decode_cifar_file, [p for p, _ in items], (3, 32, 32))
    y = torch.tensor([label for _, label in items], dtype=torch.long)
    return x, y


def _download(spec: CifarSpec, root: Path) -> None:
    where = (f"download {spec.archive} from {CIFAR_URL} and extract it into {root} so that "
             f"{root / spec.folder / spec.files['train'][0]} exists")
    try:
        import torchvision.datasets as tvd  # optional: only for download = true
    except ImportError:
        raise UsageError(f"'data.options.download' = true needs torchvision, which is not installed, so "
                         f"{spec.title} cannot be downloaded here; {where}") from None
    try:
        factory = getattr(tvd, spec.torchvision_class)
        for train in (True, False):
            factory(str(root), train=train, download=True)
    except Exception as exc:  # noqa: BLE001 - network and archive errors all mean "do it by hand"
        raise UsageError(f"downloading {spec.title} with torchvision failed ({exc}); {where}") from None


def load_cifar(spec: CifarSpec, options: CifarOptions, root: Optional[Path]) -> Uint8ImageDataset:
    layouts = {"pickle": _pickle_layout(spec), "folders": _folders_layout(spec)}
    expected = (layouts[options.layout] if options.layout != "auto"
                else f"either {layouts['pickle']} or {layouts['folders']}")
    root = require_root(spec.name, root, expected)
    pickle_dir = root / spec.folder
    if options.layout in ("auto", "pickle") and not pickle_dir.is_dir() and options.download:
        _download(spec, root)
    name = f"{spec.name}-{options.split}"
    if options.layout in ("auto", "pickle") and pickle_dir.is_dir():
        if not options.subset:
            x, y = _load_pickles(spec, pickle_dir, options.split, options.limit)
        else:  # the draw needs the whole split; the pickles are small (60,000 images = 184 MB)
            x, y = _load_pickles(spec, pickle_dir, options.split, 0)
            keep = torch.from_numpy(seeded_subset(len(x), options.subset, options.subset_seed,
                                                  f"{spec.title} {options.split} ({pickle_dir})"))
            x, y = x.index_select(0, keep), y.index_select(0, keep)
            if options.limit:
                x, y = x[: options.limit], y[: options.limit]
        return Uint8ImageDataset(x, name=name, scaling=options.scaling, labels=y, n_classes=spec.n_classes)
    base = find_folders_base(spec, root) if options.layout in ("auto", "folders") else None
    if base is not None:
        x, y = _load_folders(spec, base, options.split, options.limit, options.subset, options.subset_seed)
        return Uint8ImageDataset(x, name=name, scaling=options.scaling, labels=y, n_classes=spec.n_classes)
    hint = "" if options.download else (" Automatic download is off: set data.options.download = true to use "
                                        "torchvision's downloader (needs torchvision installed).")
    raise UsageError(f"{spec.title} not found under {root}: {describe(root)}. Expected {expected} "
                     f"(data.options.layout = {options.layout!r}).{hint}")


def cifar10_dataset(options: CifarOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """CIFAR-10 from torchvision's pickle layout or train/<class>/ image folders."""
    return load_cifar(CIFAR10, options, root)


def cifar100_dataset(options: CifarOptions, root: Optional[Path] = None) -> Uint8ImageDataset:
    """CIFAR-100 (fine labels) from torchvision's pickle layout or train/<class>/ image folders."""
    return load_cifar(CIFAR100, options, root)
