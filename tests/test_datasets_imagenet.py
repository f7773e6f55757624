"""Downsampled ImageNet (`imagenet32`, `imagenet64`) on tiny npz batches written here.

Expected pixels come straight from the arrays the test wrote, reshaped by hand from the
channel-planar rows (R plane row by row, then G, then B), never through the loader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from coopcore import UsageError


def _write_batches(root: Path, size: int, per_file: tuple[int, ...], val: int = 3,
                   layout: str = "official") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fake train batches (len(per_file) files, the rest of the ten are empty) and a val file.

    Returns (train data, train labels 1-based, val data, val labels 1-based) in file order."""
    rng = np.random.default_rng(size)
    counts = list(per_file) + [0] * (10 - len(per_file))
    datas, labels = [], []
    for i, n in enumerate(counts, start=1):
        if layout == "flat":
            folder = root
        elif size == 32:
            folder = root / "Imagenet32_train_npz"
        else:
            folder = root / ("Imagenet64_train_part1_npz" if i <= 5 else "Imagenet64_train_part2_npz")
        folder.mkdir(parents=True, exist_ok=True)
        data = rng.integers(0, 256, size=(n, 3 * size * size), dtype=np.uint8)
        lab = rng.integers(1, 1001, size=n)
        lab[:1] = 1000 if n else lab[:1]  # the top label 1000 must map to 999
        mean = data.mean(0) if n else np.zeros(3 * size * size)
        np.savez_compressed(folder / f"train_data_batch_{i}.npz", data=data, labels=lab.tolist(), mean=mean)
        datas.append(data)
        labels.append(lab)
    vfolder = root if layout == "flat" else root / f"Imagenet{size}_val_npz"
    vfolder.mkdir(parents=True, exist_ok=True)
    vdata = rng.integers(0, 256, size=(val, 3 * size * size), dtype=np.uint8)
    vlab = rng.integers(1, 1001, size=val)
    np.savez_compressed(vfolder / "val_data.npz", data=vdata, labels=vlab)
    return np.concatenate(datas), np.concatenate(labels), vdata, vlab


def _planar(rows: np.ndarray, size: int) -> np.ndarray:
    """[N, 3*S*S] channel-planar rows -> [N, 3, S, S], element by element from the definition."""
    n, s2 = rows.shape[0], size * size
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for c in range(3):
        for y in range(size):
            out[:, c, y, :] = rows[:, c * s2 + y * size: c * s2 + (y + 1) * size]
    return out


def _all(ds) -> torch.Tensor:
    return ds.get_batch(torch.arange(len(ds)))


@pytest.mark.parametrize("size", [32, 64])
def test_pixels_are_channel_planar_and_labels_zero_based(tmp_path, size):
    from coop_datasets.imagenet_downsampled import ImagenetDownsampledOptions, load_imagenet_downsampled

    data, labels, vdata, vlab = _write_batches(tmp_path, size, per_file=(2, 3) if size == 32 else (2, 0, 0, 0, 0, 2))
    ds = load_imagenet_downsampled(size, ImagenetDownsampledOptions(scaling="raw255"), tmp_path)
    assert len(ds) == len(data) and ds.shape == (3, size, size)
    x = _all(ds)
    assert torch.equal(x, torch.from_numpy(_planar(data, size)).float())
    # Green plane of image 1, row 2, column 3 is byte S*S + 2*S + 3 of its row.
    assert x[1, 1, 2, 3].item() == data[1, size * size + 2 * size + 3]
    assert ds.get_labels(torch.arange(len(ds))).tolist() == (labels - 1).tolist()
    assert ds.get_labels(torch.tensor([0])).item() == 999  # stored 1000
    val = load_imagenet_downsampled(size, ImagenetDownsampledOptions(split="val", scaling="unit"), tmp_path)
    assert torch.allclose(_all(val), torch.from_numpy(_planar(vdata, size)).float() / 127.5 - 1)
    assert val.get_labels(torch.arange(len(val))).tolist() == (vlab - 1).tolist()
    assert ds.pixels.dtype == torch.uint8  # kept 8-bit; floats only per batch


def test_registered_names_and_flat_layout(registries, tmp_path):
    data, labels, _, _ = _write_batches(tmp_path, 32, per_file=(2,), layout="flat")
    entry = registries.dataset.get("imagenet32")
    ds = registries.dataset.create("imagenet32", entry.options(scaling="raw255"), root=tmp_path)
    assert torch.equal(_all(ds), torch.from_numpy(_planar(data, 32)).float())
    # the 64x64 dataset finds no imagenet64 files in this root: exit-2 error naming the layout
    with pytest.raises(UsageError, match="Imagenet64_train_part1_npz"):
        registries.dataset.create("imagenet64", None, root=tmp_path)


def test_nested_folder_and_wrong_resolution(tmp_path):
    from coop_datasets.imagenet_downsampled import ImagenetDownsampledOptions, load_imagenet_downsampled

    # the official zips unpacked one level down, in ROOT/imagenet64/
    data, _, _, _ = _write_batches(tmp_path / "imagenet64", 64, per_file=(1, 1))
    ds = load_imagenet_downsampled(64, ImagenetDownsampledOptions(scaling="raw255"), tmp_path)
    assert torch.equal(_all(ds), torch.from_numpy(_planar(data, 64)).float())
    # 32x32 rows where 64x64 ones are expected: the error says which resolution the files hold
    flat = tmp_path / "flat"
    _write_batches(flat, 32, per_file=(2,), layout="flat")
    with pytest.raises(UsageError, match="32x32 images.*imagenet32"):
        load_imagenet_downsampled(64, ImagenetDownsampledOptions(), flat)


def test_limit_reads_a_prefix_and_subset_is_seeded_nested_and_in_file_order(tmp_path):
    from coop_datasets.imagenet_downsampled import ImagenetDownsampledOptions, load_imagenet_downsampled

    data, labels, _, _ = _write_batches(tmp_path, 32, per_file=(4, 3, 5))
    images = _planar(data, 32)
    lim = load_imagenet_downsampled(32, ImagenetDownsampledOptions(limit=6, scaling="raw255"), tmp_path)
    assert torch.equal(_all(lim), torch.from_numpy(images[:6]).float())

    def subset(n: int, seed: int, limit: int = 0):
        return load_imagenet_downsampled(
            32, ImagenetDownsampledOptions(subset=n, subset_seed=seed, limit=limit, scaling="raw255"), tmp_path)

    five = subset(5, 0)
    keep = np.sort(np.random.default_rng(0).permutation(12)[:5])  # the documented draw
    assert torch.equal(_all(five), torch.from_numpy(images[keep]).float())
    assert five.get_labels(torch.arange(5)).tolist() == (labels[keep] - 1).tolist()
    assert torch.equal(_all(subset(5, 0)), _all(five))  # deterministic per seed
    assert not torch.equal(_all(subset(5, 1)), _all(five))
    eight = np.sort(np.random.default_rng(0).permutation(12)[:8])
    assert set(keep) <= set(eight)  # nested for one seed
    assert torch.equal(_all(subset(5, 0, limit=2)), torch.from_numpy(images[keep[:2]]).float())
    with pytest.raises(UsageError, match="asks for more images"):
        subset(13, 0)


def test_missing_files_bad_labels_and_missing_root(tmp_path):
    from coop_datasets.imagenet_downsampled import (ImagenetDownsampledOptions, imagenet32_dataset,
                                                    load_imagenet_downsampled)

    (tmp_path / "stuff.txt").write_text("x")
    with pytest.raises(UsageError) as err:
        imagenet32_dataset(ImagenetDownsampledOptions(), tmp_path)
    msg = str(err.value)
    assert "train_data_batch_1.npz" in msg and "Imagenet32_train_npz" in msg and "stuff.txt" in msg
    with pytest.raises(UsageError, match="needs a data root"):
        imagenet32_dataset(ImagenetDownsampledOptions(), None)
    bad = tmp_path / "bad"
    _write_batches(bad, 32, per_file=(2,), layout="flat")
    np.savez_compressed(bad / "val_data.npz", data=np.zeros((2, 3072), np.uint8), labels=np.array([0, 5]))
    with pytest.raises(UsageError, match=r"1\.\.1000"):
        load_imagenet_downsampled(32, ImagenetDownsampledOptions(split="val"), bad)
    (bad / "val_data.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a readable npz"):
        load_imagenet_downsampled(32, ImagenetDownsampledOptions(split="val"), bad)


def test_options_validate():
    from coop_datasets.imagenet_downsampled import ImagenetDownsampledOptions

    with pytest.raises(ValueError, match="'split' must be one of"):
        ImagenetDownsampledOptions(split="test")
    with pytest.raises(ValueError):
        ImagenetDownsampledOptions(subset=-1)
