"""The file-backed and embedded datasets of `coop_datasets`, on tiny files written here.

Every expected value is computed independently of the loaders: pixels straight from the
arrays the test wrote, scalings by their closed forms, crops by numpy slicing or from the
closed form of a linear ramp.
"""
from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coopcore import UsageError
from conftest import run_cli



def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return path


def _batch(ds) -> torch.Tensor:
    return ds.get_batch(torch.arange(len(ds)))


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- scalings ---------------------------------------------------------------------------
def test_scalings_closed_forms():
    from coop_datasets.scaling import scale_pixels

    x = torch.tensor([[[[0, 51], [102, 204]]], [[[7, 7], [7, 7]]]], dtype=torch.uint8)
    assert torch.equal(scale_pixels(x, "raw255"), x.float())
    assert torch.allclose(scale_pixels(x, "unit")[0, 0], torch.tensor([[-1.0, -0.6], [-0.2, 0.6]]), atol=1e-6)
    mm = scale_pixels(x, "minmax")
    assert torch.allclose(mm[0, 0], torch.tensor([[-1.0, -0.5], [0.0, 1.0]]), atol=1e-6)
    assert torch.equal(mm[1], torch.full((1, 2, 2), -1.0))  # a constant image has no range


# -- CIFAR pickles ----------------------------------------------------------------------
def _write_cifar10(root: Path, per_batch: int = 2, protocol: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Fake cifar-10-batches-py: 5 train batches + test; returns all (data, labels) in file order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = _rng(1)
    datas, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        # Keys as bytes, like the original Python 2 pickles read with encoding="bytes".
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": lab}, fh, protocol=protocol)
        datas.append(data)
        labels.append(lab)
    return np.concatenate(datas), np.concatenate(labels)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_pickles_pixels_labels_order_and_splits(tmp_path, protocol):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    data, labels = _write_cifar10(tmp_path, protocol=protocol)
    images = data.reshape(-1, 3, 32, 32)  # row-major R plane, G plane, B plane
    train = cifar10_dataset(CifarOptions(split="train", scaling="raw255"), tmp_path)
    assert len(train) == 10 and train.shape == (3, 32, 32)
    assert torch.equal(_batch(train), torch.from_numpy(images[:10]).float())
    assert train.get_labels(torch.arange(10)).tolist() == labels[:10].tolist()
    # Red plane of image 0, row 0, column 1 is byte 1 of the row.
    assert _batch(train)[0, 0, 0, 1].item() == data[0, 1]
    assert _batch(train)[0, 1, 0, 0].item() == data[0, 1024]
    test = cifar10_dataset(CifarOptions(split="test", scaling="raw255"), tmp_path)
    assert torch.equal(_batch(test), torch.from_numpy(images[10:]).float())
    everything = cifar10_dataset(CifarOptions(split="all", scaling="unit", limit=11), tmp_path)
    assert len(everything) == 11
    assert torch.allclose(_batch(everything), torch.from_numpy(images[:11]).float() / 127.5 - 1)
    mm = _batch(cifar10_dataset(CifarOptions(limit=3), tmp_path))
    flat = images[:3].reshape(3, -1).astype(np.float64)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    assert np.allclose(mm.reshape(3, -1).numpy(), (flat - lo) / (hi - lo) * 2 - 1, atol=1e-5)


def test_cifar100_pickles_use_fine_labels(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar100_dataset

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = _rng(2)
    for name, n in (("train", 5), ("test", 3)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": data, "fine_labels": [99 - i for i in range(n)], "coarse_labels": [0] * n}, fh)
    ds = cifar100_dataset(CifarOptions(split="all"), tmp_path)
    assert len(ds) == 8
    assert ds.get_labels(torch.arange(8)).tolist() == [99, 98, 97, 96, 95, 99, 98, 97]


def test_cifar_pickle_refuses_code(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    _write_cifar10(tmp_path)
    marker = tmp_path / "owned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as fh:
        pickle.dump({"data": Evil(), "labels": []}, fh)
    with pytest.raises(UsageError, match="not a CIFAR python pickle.*refusing"):
        cifar10_dataset(CifarOptions(), tmp_path)
    assert not marker.exists()


def test_cifar_missing_batch_is_named(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UsageError, match="data_batch_3 is missing"):
        cifar10_dataset(CifarOptions(), tmp_path)
    # A limit inside the first two batches does not need the third.
    assert len(cifar10_dataset(CifarOptions(limit=3), tmp_path)) == 3


# -- CIFAR image folders ----------------------------------------------------------------
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_cifar_folders(base: Path, split: str, per_class: list[int]) -> dict[tuple[int, int], np.ndarray]:
    """PNG (lossless) class folders; image k of class c gets a distinct random 32x32 picture."""
    rng = _rng(3)
    out = {}
    for c, (cls, n) in enumerate(zip(CLASSES, per_class)):
        for k in range(n):
            arr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            # natural order: 2.png before 10.png
            _png(base / split / cls / f"{[2, 10, 33][k]}.png", arr)
            out[(c, k)] = arr
    return out


def test_cifar_folders_interleave_classes_and_keep_pixels(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    counts = [3] + [2] * 9
    train = _write_cifar_folders(tmp_path / "CIFAR-10-images", "train", counts)
    ds = cifar10_dataset(CifarOptions(split="train", scaling="raw255"), tmp_path)
    expected_order = [(c, 0) for c in range(10)] + [(c, 1) for c in range(10)] + [(0, 2)]
    assert ds.get_labels(torch.arange(len(ds))).tolist() == [c for c, _ in expected_order]
    x = _batch(ds)
    for i, key in enumerate(expected_order):
        assert torch.equal(x[i], torch.from_numpy(train[key]).permute(2, 0, 1).float())
    assert len(cifar10_dataset(CifarOptions(split="train", limit=10), tmp_path)) == 10
    with pytest.raises(UsageError, match="test is missing"):
        cifar10_dataset(CifarOptions(split="test"), tmp_path)
    with pytest.raises(UsageError, match="cifar-10-batches-py"):
        cifar10_dataset(CifarOptions(layout="pickle"), tmp_path)


def test_cifar_folders_wrong_class_count_and_size(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset, cifar100_dataset

    _write_cifar_folders(tmp_path, "train", [1] * 10)
    with pytest.raises(UsageError, match="holds 10 class folders, CIFAR-100 has 100"):
        cifar100_dataset(CifarOptions(layout="folders"), tmp_path)
    _png(tmp_path / "train" / "truck" / "5.png", np.zeros((16, 16, 3)))
    with pytest.raises(UsageError, match="5.png is 16x16; CIFAR images must be 32x32"):
        cifar10_dataset(CifarOptions(layout="folders"), tmp_path)


def test_cifar_missing_names_both_layouts(tmp_path):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UsageError) as err:
        cifar10_dataset(CifarOptions(), tmp_path)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "data_batch_1" in msg and "train/<class>" in msg
    assert "contains notes.txt" in msg and "download" in msg
    with pytest.raises(UsageError, match="--data-root"):
        cifar10_dataset(CifarOptions(), None)


def test_cifar_download(tmp_path, monkeypatch):
    from coop_datasets.cifar import CifarOptions, cifar10_dataset

    monkeypatch.setitem(sys.modules, "torchvision", None)  # not importable
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(UsageError, match="needs torchvision.*cifar-10-python.tar.gz.*data_batch_1"):
        cifar10_dataset(CifarOptions(download=True), tmp_path)

    calls = []

    class FakeCIFAR10:  # stands in for torchvision's downloader: writes the pickles
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            if not (Path(root) / "cifar-10-batches-py").exists():
                _write_cifar10(Path(root))

    fake = types.ModuleType("torchvision.datasets")
    fake.CIFAR10 = FakeCIFAR10
    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.datasets", fake)
    ds = cifar10_dataset(CifarOptions(download=True, split="test"), tmp_path)
    assert len(ds) == 2 and calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]


# -- CelebA ------------------------------------------------------------------------------
def test_celeba_center_crop_is_the_108_square(tmp_path):
    from coop_datasets.celeba import CelebaOptions, celeba_dataset

    folder = tmp_path / "celeba" / "img_align_celeba"
    imgs = [_rng(i).integers(0, 256, size=(218, 178, 3), dtype=np.uint8) for i in range(3)]
    for i, a in enumerate(imgs):
        _png(folder / f"{i + 1:06d}.png", a)
    ds = celeba_dataset(CelebaOptions(split="all", size=108, scaling="raw255"), tmp_path)
    # 178x218 -> rows 55..162, columns 35..142 (the DCGAN-era crop), resampled 1:1.
    for i, a in enumerate(imgs):
        assert torch.equal(_batch(ds)[i], torch.from_numpy(a[55:163, 35:143]).permute(2, 0, 1).float())


def test_celeba_crop_scales_with_the_copy_resolution(tmp_path):
    """A linear ramp: the crop + resize of the full-size and the half-size copy both equal the
    ramp at the output pixel centres of the same 108-pixel region (closed form)."""
    from coop_datasets.celeba import CelebaOptions, celeba_dataset

    def ramp(w, h):  # intensity at continuous full-resolution coordinates (u, v)
        scale = 178 / w
        u = (np.arange(w) + 0.5) * scale
        v = (np.arange(h) + 0.5) * scale
        val = 20 + 0.6 * u[None, :] + 0.4 * v[:, None]
        return np.repeat(val[..., None], 3, axis=2)

    size = 27
    centre = (np.arange(size) + 0.5) * 108 / size
    expected = 20 + 0.6 * (35 + centre)[None, :] + 0.4 * (55 + centre)[:, None]
    for w, h, sub in ((178, 218, "full"), (89, 109, "half")):
        _png(tmp_path / sub / "celebA" / "000001.png", np.rint(ramp(w, h)))
        ds = celeba_dataset(CelebaOptions(split="all", size=size, scaling="raw255"), tmp_path / sub)
        got = _batch(ds)[0, 0].numpy()
        # Interior pixels: at the crop's edge the filter is cut off by the crop (as it should be).
        assert np.abs(got - expected)[1:-1, 1:-1].max() <= 1.01, sub


def test_celeba_split_limit_and_no_crop(tmp_path):
    from coop_datasets.celeba import CelebaOptions, celeba_dataset

    for i in range(5):  # constant images tagged by their value; 10 before 2 alphabetically
        _png(tmp_path / f"{[1, 2, 3, 10, 11][i]}.png", np.full((109, 89, 3), 10 * (i + 1)))
    opts = dict(size=8, scaling="raw255", test_size=2)
    tag = lambda ds: _batch(ds)[:, 0, 0, 0].tolist()  # noqa: E731
    assert tag(celeba_dataset(CelebaOptions(split="train", **opts), tmp_path)) == [10, 20, 30]
    assert tag(celeba_dataset(CelebaOptions(split="test", **opts), tmp_path)) == [40, 50]
    assert tag(celeba_dataset(CelebaOptions(split="all", limit=4, **opts), tmp_path)) == [10, 20, 30, 40]
    nocrop = celeba_dataset(CelebaOptions(split="all", crop="none", size=16, test_size=0), tmp_path)
    assert nocrop.shape == (3, 16, 16) and len(nocrop) == 5
    with pytest.raises(UsageError, match="test_size' = 5 leaves no training images"):
        celeba_dataset(CelebaOptions(test_size=5), tmp_path)


def test_celeba_missing(tmp_path):
    from coop_datasets.celeba import CelebaOptions, celeba_dataset

    (tmp_path / "celeba").mkdir()
    with pytest.raises(UsageError, match="img_align_celeba.*") as err:
        celeba_dataset(CelebaOptions(), tmp_path)
    assert "contains celeba/" in str(err.value)


# -- LSUN ----------------------------------------------------------------------------------
def _encoded(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _wide(value: int) -> np.ndarray:
    """24x12 image: a 12x12 centre square of `value`, borders 0 (centre crop keeps the square)."""
    a = np.zeros((12, 24, 3), np.uint8)
    a[:, 6:18] = value
    return a


def test_lsun_lmdb_key_order_crop_and_limit(tmp_path):
    import lmdb  # the `test` extra installs it
    from coop_datasets.lsun import LsunOptions, lsun_dataset

    env = lmdb.open(str(tmp_path / "bedroom_train_lmdb"), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for key, value in ((b"c", 30), (b"a", 10), (b"b", 20)):
            txn.put(key, _encoded(_wide(value), "PNG" if key != b"b" else "WEBP"))
    env.close()
    ds = lsun_dataset(LsunOptions(size=6, scaling="raw255"), tmp_path)
    assert len(ds) == 3 and ds.shape == (3, 6, 6)
    x = ds.get_batch(torch.tensor([2, 0, 1]))
    assert torch.allclose(x[0], torch.full((3, 6, 6), 30.0)) and torch.allclose(x[1], torch.full((3, 6, 6), 10.0))
    assert torch.allclose(x[2], torch.full((3, 6, 6), 20.0), atol=2)  # lossy webp
    assert len(lsun_dataset(LsunOptions(limit=2), tmp_path)) == 2


def test_lsun_folder_missing_and_no_lmdb_package(tmp_path, monkeypatch):
    from coop_datasets.lsun import LsunOptions, lsun_dataset

    with pytest.raises(UsageError, match="church_outdoor_train_lmdb"):
        lsun_dataset(LsunOptions(category="church_outdoor"), tmp_path)
    for i, v in enumerate((5, 7)):
        _png(tmp_path / "tower_val" / "sub" / f"{i}.png", _wide(v))
    ds = lsun_dataset(LsunOptions(category="tower", split="val", size=4, scaling="raw255"), tmp_path)
    assert _batch(ds)[:, 0, 0, 0].tolist() == [5.0, 7.0]
    (tmp_path / "bedroom_train_lmdb").mkdir()
    monkeypatch.setitem(sys.modules, "lmdb", None)
    with pytest.raises(UsageError, match="pip install lmdb"):
        lsun_dataset(LsunOptions(), tmp_path)


# -- SVHN ------------------------------------------------------------------------------------
def test_svhn_mat_layout_and_label_ten(tmp_path):
    import scipy.io

    from coop_datasets.svhn import SvhnOptions, svhn_dataset

    x = _rng(4).integers(0, 256, size=(32, 32, 3, 4), dtype=np.uint8)  # H, W, C, N
    y = np.array([[10], [1], [9], [10]], dtype=np.uint8)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": y})
    ds = svhn_dataset(SvhnOptions(split="test", scaling="raw255"), tmp_path)
    assert ds.get_labels(torch.arange(4)).tolist() == [0, 1, 9, 0]
    got = _batch(ds)
    assert got.shape == (4, 3, 32, 32)
    assert got[2, 1, 5, 7].item() == x[5, 7, 1, 2]  # [n, c, h, w] <- X[h, w, c, n]
    assert torch.equal(got, torch.from_numpy(x).permute(3, 2, 0, 1).float())
    assert len(svhn_dataset(SvhnOptions(split="test", limit=3), tmp_path)) == 3
    with pytest.raises(UsageError, match="train_32x32.mat not found.*contains test_32x32.mat"):
        svhn_dataset(SvhnOptions(split="train"), tmp_path)


# -- ImageNet-style folders and generic folders -------------------------------------------
def _write_classes(root: Path, n: int = 6) -> None:
    for c, cls in enumerate(("valley", "alp", "geyser")):
        for k in range(n):
            _png(root / "scenes" / cls / f"img{k}.JPEG", np.full((10, 6, 3), 10 * c + k))


def test_imagenet_folder_classes_per_class_and_seed(tmp_path):
    from coop_datasets.folders import ImagenetFolderOptions, imagenet_folder_dataset

    _write_classes(tmp_path)
    base = dict(path="scenes", size=4, scaling="raw255")
    ds = imagenet_folder_dataset(ImagenetFolderOptions(classes=("geyser", "alp"), per_class=2, **base), tmp_path)
    assert ds.shape == (3, 4, 4) and len(ds) == 4
    assert ds.get_labels(torch.arange(4)).tolist() == [0, 0, 1, 1]
    values = _batch(ds)[:, 0, 0, 0].tolist()
    assert all(20 <= v < 26 for v in values[:2]) and all(0 + 10 <= v < 16 for v in values[2:])

    def chosen(per_class, seed=0):
        d = imagenet_folder_dataset(ImagenetFolderOptions(per_class=per_class, seed=seed, **base), tmp_path)
        return _batch(d)[:, 0, 0, 0].tolist(), d.get_labels(torch.arange(len(d))).tolist()

    two, labels = chosen(2)
    four, _ = chosen(4)
    assert labels == [0, 0, 1, 1, 2, 2]  # sorted folders: alp, geyser, valley
    assert set(two) < set(four) and two == chosen(2)[0]  # nested and deterministic
    assert any(chosen(2, seed=s)[0] != two for s in range(1, 6))
    assert len(chosen(0)[0]) == 18
    with pytest.raises(UsageError, match="volcano not found.*contains alp/, geyser/, valley/"):
        imagenet_folder_dataset(ImagenetFolderOptions(classes=("volcano",), **base), tmp_path)
    with pytest.raises(UsageError, match="holds 6 images; 'data.options.per_class' = 7"):
        imagenet_folder_dataset(ImagenetFolderOptions(per_class=7, **base), tmp_path)


def test_image_folder_recursive_order_crop_channels(tmp_path):
    from coop_datasets.folders import ImageFolderOptions, image_folder_dataset

    _png(tmp_path / "pics" / "b" / "x10.png", _wide(40))
    _png(tmp_path / "pics" / "b" / "x2.png", _wide(30))
    _png(tmp_path / "pics" / "a.png", _wide(20))
    (tmp_path / "pics" / "readme.txt").write_text("not an image")
    opts = dict(path="pics", size=6, scaling="raw255")
    ds = image_folder_dataset(ImageFolderOptions(**opts), tmp_path)
    # a.png < b/x2.png < b/x10.png; the centre crop keeps only the uniform square
    assert torch.equal(_batch(ds), torch.tensor([20.0, 30.0, 40.0]).view(3, 1, 1, 1).expand(3, 3, 6, 6))
    whole = _batch(image_folder_dataset(ImageFolderOptions(crop="none", **opts), tmp_path))
    assert whole[0, 0, 0, 0].item() == 0.0 and whole[0, 0, 3, 3].item() == 20.0  # borders kept
    gray = image_folder_dataset(ImageFolderOptions(channels=1, limit=2, **opts), tmp_path)
    assert gray.shape == (1, 6, 6) and len(gray) == 2
    (tmp_path / "pics" / "empty").mkdir()
    with pytest.raises(UsageError, match="no images under .*empty is empty"):
        image_folder_dataset(ImageFolderOptions(path="pics/empty"), tmp_path)
    with pytest.raises(UsageError, match="nope does not exist"):
        image_folder_dataset(ImageFolderOptions(path="nope"), tmp_path)


# -- texture ---------------------------------------------------------------------------------
def test_embedded_textures_need_no_files():
    import skimage.data

    from coop_datasets.texture import TextureOptions, texture_dataset

    ds = texture_dataset(TextureOptions())
    x = _batch(ds)
    assert len(ds) == 1 and ds.shape == (1, 224, 224) and x.min() == -1 and x.max() == 1
    native = texture_dataset(TextureOptions(image="gravel", size=512, scaling="raw255"))
    assert torch.equal(_batch(native)[0, 0], torch.from_numpy(skimage.data.gravel()).float())
    rgb = _batch(texture_dataset(TextureOptions(image="grass", size=32, color="rgb")))
    assert rgb.shape == (1, 3, 32, 32) and torch.equal(rgb[0, 0], rgb[0, 2])


def test_texture_file_colour_modes(tmp_path):
    from coop_datasets.texture import TextureOptions, texture_dataset

    _png(tmp_path / "tex" / "c.png", np.tile(np.array([200, 100, 50], np.uint8), (8, 8, 1)))
    rgb = texture_dataset(TextureOptions(image="tex/c.png", size=8, scaling="raw255"), tmp_path)
    assert rgb.shape == (3, 8, 8) and _batch(rgb)[0, :, 0, 0].tolist() == [200.0, 100.0, 50.0]
    gray = texture_dataset(TextureOptions(image=str(tmp_path / "tex" / "c.png"), size=8, color="gray",
                                          scaling="unit"))
    luma = (200 * 299 + 100 * 587 + 50 * 114) / 1000  # ITU-R 601-2
    assert gray.shape == (1, 8, 8) and abs(_batch(gray)[0, 0, 0, 0].item() - (round(luma) / 127.5 - 1)) < 1e-6
    with pytest.raises(UsageError, match="missing.png not found.*brick, grass, gravel"):
        texture_dataset(TextureOptions(image="missing.png"), tmp_path)


# -- video -----------------------------------------------------------------------------------
def test_synthetic_clip_defaults_and_scalings():
    from coop_datasets.synthetic_clip import synthetic_clip
    from coop_datasets.video import VideoOptions, video_dataset

    ds = video_dataset(VideoOptions())
    x = _batch(ds)
    assert len(ds) == 1 and ds.shape == (3, 64, 128, 128)
    per_frame = x[0].permute(1, 0, 2, 3).reshape(64, -1)
    assert torch.all(per_frame.min(1).values == -1) and torch.all(per_frame.max(1).values == 1)
    raw = torch.from_numpy(synthetic_clip(list(range(4, 16, 3)), 16)).float()
    unit = _batch(video_dataset(VideoOptions(frames=4, size=16, start_frame=4, frame_step=3, scaling="unit")))
    assert torch.allclose(unit[0], raw / 127.5 - 1)
    clip = _batch(video_dataset(VideoOptions(frames=4, size=16, start_frame=4, frame_step=3, scaling="clip_minmax")))
    assert torch.allclose(clip[0], (raw - raw.min()) / (raw.max() - raw.min()) * 2 - 1, atol=1e-6)
    assert not np.array_equal(synthetic_clip([0], 16), synthetic_clip([1], 16))  # it moves
    with pytest.raises(UsageError, match="has 256 frames.*give 128 frames.*'data.options.frames' = 200"):
        video_dataset(VideoOptions(frames=200, frame_step=2))


def _write_video(path: Path, frames: np.ndarray) -> None:
    import av
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)  # lossless, so pixels can be compared exactly
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_file_frame_selection_is_exact(tmp_path):
    from coop_datasets.video import VideoOptions, video_dataset

    frames = _rng(5).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    _write_video(tmp_path / "clip.mkv", frames)
    ds = video_dataset(VideoOptions(path="clip.mkv", frames=3, size=16, start_frame=2, frame_step=4,
                                    scaling="unit"), tmp_path)
    expected = torch.from_numpy(frames[[2, 6, 10]]).permute(3, 0, 1, 2).float() / 127.5 - 1
    assert ds.shape == (3, 3, 16, 16) and torch.allclose(_batch(ds)[0], expected)
    with pytest.raises(UsageError, match="has 12 frames.*give 3 frames.*'data.options.frames' = 4"):
        video_dataset(VideoOptions(path="clip.mkv", frames=4, start_frame=2, frame_step=4), tmp_path)
    (tmp_path / "bad.avi").write_bytes(b"not a video")
    with pytest.raises(UsageError, match="cannot decode the video"):
        video_dataset(VideoOptions(path="bad.avi"), tmp_path)


def test_video_frame_folder_natural_order(tmp_path):
    from coop_datasets.video import VideoOptions, video_dataset

    for k in range(12):  # frame2 before frame10
        _png(tmp_path / "frames" / f"frame{k}.png", np.full((6, 8, 3), 20 * k))
    ds = video_dataset(VideoOptions(path=str(tmp_path / "frames"), frames=6, size=4, start_frame=1,
                                    frame_step=2, scaling="unit"))
    got = _batch(ds)[0, 0, :, 0, 0]
    assert torch.allclose(got, torch.tensor([20.0 * k for k in (1, 3, 5, 7, 9, 11)]) / 127.5 - 1)
    with pytest.raises(UsageError, match="nowhere not found"):
        video_dataset(VideoOptions(path="nowhere"), tmp_path)
    # Frames k = 1..4 ramp from 0 to 50k: per-frame min-max stretches each one to [-1, 1];
    # clip min-max keeps their brightness differences (max of frame k = 50k / 200 * 2 - 1).
    for k in range(1, 5):
        _png(tmp_path / "ramp" / f"{k}.png", np.tile(np.linspace(0, 50 * k, 8).round(), (8, 3, 1)).transpose(0, 2, 1))
    for scaling, expected in (("per_frame_minmax", [1.0, 1.0, 1.0, 1.0]), ("clip_minmax", [-0.5, 0.0, 0.5, 1.0])):
        x = _batch(video_dataset(VideoOptions(path="ramp", frames=4, size=8, scaling=scaling), tmp_path))[0]
        assert x.amin(dim=(0, 2, 3)).tolist() == [-1.0] * 4
        assert torch.allclose(x.amax(dim=(0, 2, 3)), torch.tensor(expected)), scaling


# -- options, registry and the CLI -------------------------------------------------------------
def test_options_reject_bad_values_naming_the_field():
    from coop_datasets.cifar import CifarOptions
    from coop_datasets.folders import ImageFolderOptions
    from coop_datasets.video import VideoOptions

    with pytest.raises(ValueError, match="'scaling' must be one of"):
        CifarOptions(scaling="zscore")
    with pytest.raises(ValueError, match="'channels' must be one of 3, 1"):
        ImageFolderOptions(channels=2)
    with pytest.raises(ValueError, match="'frame_step' must be > 0"):
        VideoOptions(frame_step=0)


ROOTED = {
    "cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "celeba": "img_align_celeba",
    "lsun": "bedroom_train_lmdb", "svhn": "train_32x32.mat", "imagenet_folder": "<class>/*.JPEG",
    "image_folder": "ROOT/<path>",
}


def test_every_dataset_names_its_layout_when_files_are_missing(registries, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name, layout in ROOTED.items():
        for root in (empty, None):
            with pytest.raises(UsageError) as err:
                registries.dataset.create(name, None, root=root)
            assert layout in str(err.value), (name, str(err.value))


def test_embedded_datasets_build_from_defaults_without_a_root(registries):
    for name in ("texture", "video"):
        ds = registries.dataset.create(name, None, root=None)
        assert len(ds) == 1 and torch.isfinite(ds.get_batch(torch.arange(1))).all()


def test_cli_exit_2_for_an_empty_root(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    code = run_cli(["train", "coopnets-digits", "--data-root", empty, "--out", tmp_path / "run", "--no-progress",
                    "--set", "data.name='cifar10'", "--set", "data.options={split='all'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cifar-10-batches-py" in err and str(empty) in err and "Traceback" not in err


def test_raw_pixel_datasets_declare_their_display_range(tmp_path):
    """Sample grids of raw 0..255 data (multigrid's convention) are drawn in 0..255, not
    saturated by the default [-1, 1] display range."""
    import numpy as np
    from PIL import Image

    from coopcore import TensorImageDataset, value_range
    from coopcore.images import save_grid
    from coop_datasets.storage import Uint8ImageDataset

    pixels = torch.full((2, 1, 4, 4), 128, dtype=torch.uint8)
    raw = Uint8ImageDataset(pixels, "raw", "raw255")
    assert value_range(raw) == (0.0, 255.0)
    assert value_range(Uint8ImageDataset(pixels, "unit", "unit")) == (-1.0, 1.0)
    assert value_range(TensorImageDataset(torch.zeros(1, 1, 2, 2), "t")) == (-1.0, 1.0)
    path = save_grid(raw.get_batch(torch.arange(2)), tmp_path / "g.png", scale=1, value_range=value_range(raw))
    arr = np.asarray(Image.open(path))
    assert set(np.unique(arr[2:6, 2:6])) == {128}  # mid grey, as stored


@pytest.mark.parametrize("recipe", ["coopinit-cifar10", "coopinit-cifar10-gan"])
def test_coopinit_cifar_recipes_train_on_the_real_pixels(tmp_path, recipe, registries):
    """StyleGAN2-ADA (CoopInit's base) trains on x / 127.5 - 1, and the recipes' FID-50k
    reference is their training set: neither may be the per-image min-max stretch."""
    from coopcore.experiment import resolve

    _write_cifar10(tmp_path)
    # Narrow the first batch's pixels to 40..200, so a per-image stretch would show.
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as fh:
        batch = pickle.load(fh)
    batch[b"data"] = (40 + batch[b"data"].astype(np.int64) * 160 // 255).astype(np.uint8)
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)
    resolved = resolve(recipe, registries=registries)
    dataset = resolved.data.create(root=tmp_path)
    expected = torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32)).float() / 127.5 - 1.0
    assert torch.allclose(dataset.get_batch(torch.arange(len(expected))), expected, atol=1e-6)
    fid = [e for e in resolved.config.eval if e.name == "fid"]
    assert fid and all(e.options.get("reference") is None for e in fid)  # the training set itself
