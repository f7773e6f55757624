"""The dataset loaders on the developers' real data in ../shared/data (skipped when absent).

The CIFAR and CelebA archives are tar.gz files: each test extracts a handful of members into
tmp_path (streaming, stopping early) instead of all 60,000 / 10,000 images.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA

pytestmark = pytest.mark.shared_data

CIFAR_TAR = SHARED_DATA / "cifar10-jpg" / "cifar10_jpg_q75_YoongiKim.tar.gz"
CELEBA_TAR = SHARED_DATA / "celeba" / "celeba_aligned_89x109_000001-010000.tar.gz"
FOUNTAIN = SHARED_DATA / "dyntex" / "fountain_6486110.avi"
BRICK_PNG = SHARED_DATA / "textures" / "skimage_brick.png"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def _extract(tar: Path, dest: Path, keep, stop) -> list[str]:
    """Extract the members `keep(name)` accepts, reading the stream only until `stop(name)`."""
    names = []
    with tarfile.open(tar, "r|gz") as tf:
        for member in tf:
            if stop(member.name):
                break
            if member.isfile() and keep(member.name):
                tf.extract(member, dest, filter="data")
                names.append(member.name)
    return names


def test_lossy_cifar10_jpeg_folders(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    _need(CIFAR_TAR)
    # test/<class>/0000..0002.jpg of every class, then train/airplane/0000..0002 (the archive is sorted).
    names = _extract(CIFAR_TAR, tmp_path / "cifar10-jpg",
                     keep=lambda n: n.count("/") == 2 and n.rsplit("/", 1)[1] in ("0000.jpg", "0001.jpg", "0002.jpg"),
                     stop=lambda n: n.startswith("train/automobile"))
    assert len(names) == 33
    ds = cifar10_dataset(CifarOptions(split="test"), tmp_path)
    assert len(ds) == 30 and ds.shape == (3, 32, 32)
    assert ds.get_labels(torch.arange(30)).tolist() == list(range(10)) * 3
    x = ds.get_batch(torch.arange(30))
    flat = x.flatten(1)
    assert torch.allclose(flat.min(1).values, torch.tensor(-1.0)) and torch.allclose(flat.max(1).values, torch.tensor(1.0))
    raw = cifar10_dataset(CifarOptions(split="test", scaling="raw255", limit=10), tmp_path).get_batch(torch.arange(10))
    from PIL import Image

    ref = np.asarray(Image.open(tmp_path / "cifar10-jpg" / "test" / "truck" / "0000.jpg").convert("RGB"))
    assert torch.equal(raw[9], torch.from_numpy(ref.copy()).permute(2, 0, 1).float())


def test_celeba_89x109_copy(tmp_path):
    from coop_datasets.celeba import CelebaOptions, celeba_dataset

    _need(CELEBA_TAR)
    names = _extract(CELEBA_TAR, tmp_path, keep=lambda n: n.endswith(".jpg"), stop=lambda n: n >= "celebA/000013")
    assert len(names) == 12
    train = celeba_dataset(CelebaOptions(test_size=2), tmp_path)
    test = celeba_dataset(CelebaOptions(split="test", test_size=2, scaling="raw255", size=54), tmp_path)
    assert len(train) == 10 and len(test) == 2 and train.shape == (3, 64, 64)
    # size 54 on the half-size copy: the 54-pixel crop resampled 1:1 at offsets (17.5, 27.5),
    # i.e. the mean of the 2x2 neighbourhood around each pixel.
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "celebA" / "000011.jpg").convert("RGB")).astype(np.float64)
    quad = (img[27:81, 17:71] + img[28:82, 17:71] + img[27:81, 18:72] + img[28:82, 18:72]) / 4
    got = test.get_batch(torch.arange(1))[0].permute(1, 2, 0).numpy()
    assert np.abs(got - quad).max() <= 1.01


def test_fountain_video_eight_frames(tmp_path):
    from coop_datasets.video import VideoOptions, video_dataset

    _need(FOUNTAIN)
    ds = video_dataset(VideoOptions(path=str(FOUNTAIN), frames=8, size=32))
    x = ds.get_batch(torch.arange(1))
    assert ds.shape == (3, 8, 32, 32) and x.shape == (1, 3, 8, 32, 32)
    per_frame = x[0].permute(1, 0, 2, 3).reshape(8, -1)
    assert torch.all(per_frame.min(1).values == -1) and torch.all(per_frame.max(1).values == 1)
    assert (x[0, :, 1:] - x[0, :, :-1]).abs().mean() > 0  # frames differ
    from coopcore import UsageError

    with pytest.raises(UsageError, match="has 250 frames"):
        video_dataset(VideoOptions(path=str(FOUNTAIN), frames=8, start_frame=245))


def test_shared_brick_file_equals_the_embedded_brick(tmp_path):
    from coop_datasets.texture import TextureOptions, texture_dataset

    _need(BRICK_PNG)
    from_file = texture_dataset(TextureOptions(image="textures/skimage_brick.png", size=64), SHARED_DATA)
    embedded = texture_dataset(TextureOptions(image="brick", size=64))
    assert from_file.shape == embedded.shape == (1, 64, 64)
    assert torch.equal(from_file.get_batch(torch.arange(1)), embedded.get_batch(torch.arange(1)))
