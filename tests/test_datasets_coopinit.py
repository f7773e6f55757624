"""The data of CoopInit's tables: seeded training-set subsets of CIFAR-10/100 (Tables 10-11),
CIFAR-100 labels, and FFHQ read from its image folders at 256 (Table 2), on tiny files written here.

Expected values come from the arrays the tests wrote and from the documented draw
(`numpy.random.default_rng(seed).permutation(n)`, first n kept, sorted back to file order).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coopcore import UsageError


def _write_cifar(root: Path, kind: str = "cifar10", per_file: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Fake pickles (CIFAR-10: five train batches + test; CIFAR-100: train + test); returns the
    train split's (data [N, 3072], labels) in file order."""
    rng = np.random.default_rng(7)
    if kind == "cifar10":
        folder, names, key, k = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "labels", 10
    else:
        folder, names, key, k = root / "cifar-100-python", ["train"], "fine_labels", 100
    folder.mkdir(parents=True)
    datas, labels = [], []
    for name in names + ["test_batch" if kind == "cifar10" else "test"]:
        n = per_file if kind == "cifar10" else 5 * per_file
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, k, size=n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, key: lab}, fh)
        if name in names:
            datas.append(data)
            labels.append(lab)
    return np.concatenate(datas), np.concatenate(labels)


def _all(ds) -> torch.Tensor:
    return ds.get_batch(torch.arange(len(ds)))


def _draw(n: int, size: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])


# -- Tables 10-11: seeded subsets of the training set ------------------------------------------
@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_subset_is_seeded_nested_sized_and_in_file_order(tmp_path, kind):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset, cifar100_dataset

    load = cifar10_dataset if kind == "cifar10" else cifar100_dataset
    data, labels = _write_cifar(tmp_path, kind)  # 20 training images
    images = data.reshape(-1, 3, 32, 32)

    def subset(n: int, seed: int = 0, **kw):
        return load(CifarOptions(subset=n, subset_seed=seed, scaling="raw255", **kw), tmp_path)

    ten, five = subset(10), subset(5)
    assert len(ten) == 10 and len(five) == 5
    keep = _draw(20, 10, 0)
    assert torch.equal(_all(ten), torch.from_numpy(images[keep]).float())  # pixels and labels move together
    assert ten.get_labels(torch.arange(10)).tolist() == labels[keep].tolist()
    assert torch.equal(_all(subset(10)), _all(ten))  # deterministic per seed
    assert not torch.equal(_all(subset(10, seed=1)), _all(ten))
    # nested: the 5 of subset = 5 are among the 10 of subset = 10 (prefixes of one permutation)
    picked = {bytes(r) for r in _all(five).to(torch.uint8).reshape(5, -1).numpy()}
    assert picked <= {bytes(r) for r in images[keep].reshape(10, -1)}
    # `limit` after the draw; `subset = 0` and the whole split give the unchanged dataset
    assert torch.equal(_all(subset(10, limit=3)), torch.from_numpy(images[keep[:3]]).float())
    assert torch.equal(_all(subset(0)), torch.from_numpy(images).float())
    assert torch.equal(_all(subset(20)), torch.from_numpy(images).float())
    with pytest.raises(UsageError, match="asks for more images"):
        subset(21)


def test_cifar_subset_of_image_folders_decodes_only_the_draw(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset, interleave_by_class

    rng = np.random.default_rng(3)
    for c in range(10):
        for i in range(2):
            arr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            path = tmp_path / "train" / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
    per_class = [sorted((tmp_path / "train" / f"class{c}").glob("*.png")) for c in range(10)]
    items = interleave_by_class(per_class)
    keep = _draw(len(items), 6, 4)
    ds = cifar10_dataset(CifarOptions(layout="folders", subset=6, subset_seed=4, scaling="raw255"), tmp_path)
    expected = np.stack([np.asarray(Image.open(items[i][0])).transpose(2, 0, 1) for i in keep])
    assert torch.equal(_all(ds), torch.from_numpy(expected).float())
    assert ds.get_labels(torch.arange(6)).tolist() == [items[i][1] for i in keep]


def test_cifar100_is_registered_with_fine_labels(registries, tmp_path):
    data, labels = _write_cifar(tmp_path, "cifar100")
    entry = registries.dataset.get("cifar100")
    ds = registries.dataset.create("cifar100", entry.options(scaling="raw255"), root=tmp_path)
    assert len(ds) == 20 and ds.get_labels(torch.arange(20)).tolist() == labels.tolist()


def test_celeba_seeded_order_is_the_shared_draw(tmp_path):
    """celeba's `split_seed` order is `seeded_draw`, the permutation it always used (bit-identical)."""
    from coop_datasets.celeba import select_files
    from coop_datasets.subsets import seeded_draw

    files = [tmp_path / f"{i:06d}.jpg" for i in range(1, 31)]
    old = [files[i] for i in np.random.default_rng(5).permutation(30)][:12]  # the pre-refactor formula
    assert select_files(files, 12, 5, tmp_path) == old
    assert [files[i] for i in seeded_draw(30, 12, 5)] == old
    assert select_files(files, 0, 5, tmp_path) == [files[i] for i in np.random.default_rng(5).permutation(30)]
    assert select_files(files, 12, None, tmp_path) == files[:12]


# -- Table 2: FFHQ from its image folders -------------------------------------------------------
def _write_ffhq(root: Path, side: int = 32, per_folder: int = 3, folders: int = 2) -> list[np.ndarray]:
    """FFHQ's official layout in miniature: images1024x1024/00000/00000.png, .../01000/01000.png."""
    rng = np.random.default_rng(11)
    out = []
    for f in range(folders):
        for i in range(per_folder):
            arr = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
            path = root / "ffhq" / "images1024x1024" / f"{f * 1000:05d}" / f"{f * 1000 + i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
            out.append(arr)
    (root / "ffhq" / "images1024x1024" / "LICENSE.txt").write_text("not an image")
    return out


@pytest.mark.parametrize("resample", ["bilinear", "lanczos", "box"])
def test_ffhq_folders_recursive_in_image_order_resized_with_the_stated_filter(tmp_path, resample):
    from coop_datasets.folders import ImageFolderOptions, image_folder_dataset

    arrays = _write_ffhq(tmp_path)
    opts = ImageFolderOptions(path="ffhq/images1024x1024", size=8, scaling="raw255", resample=resample)
    ds = image_folder_dataset(opts, tmp_path)
    filt = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS,
            "box": Image.Resampling.BOX}[resample]
    expected = np.stack([np.asarray(Image.fromarray(a).resize((8, 8), filt)).transpose(2, 0, 1) for a in arrays])
    assert len(ds) == 6  # both subfolders, LICENSE.txt skipped
    assert torch.equal(_all(ds), torch.from_numpy(expected).float())


def test_image_folder_keeps_images_already_at_size_and_the_default_filter(tmp_path):
    from coop_datasets.folders import ImageFolderOptions, image_folder_dataset

    arrays = _write_ffhq(tmp_path, side=16, per_folder=2, folders=1)
    same = image_folder_dataset(ImageFolderOptions(path="ffhq", size=16, scaling="raw255", resample="lanczos"),
                                tmp_path)
    assert torch.equal(_all(same), torch.from_numpy(np.stack([a.transpose(2, 0, 1) for a in arrays])).float())
    assert ImageFolderOptions().resample == "bilinear"
    with pytest.raises(ValueError, match="'resample' must be one of"):
        ImageFolderOptions(resample="nearest")
