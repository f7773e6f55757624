"""Entry point of the built-in dataset plugin."""
from __future__ import annotations

from coopcore import hookimpl

from .celeba import CelebaOptions, celeba_dataset
from .cifar import CifarOptions, cifar10_dataset, cifar100_dataset
from .digits import DigitsOptions, digits_dataset
from .folders import ImageFolderOptions, ImagenetFolderOptions, image_folder_dataset, imagenet_folder_dataset
from .imagenet_downsampled import ImagenetDownsampledOptions, imagenet32_dataset, imagenet64_dataset
from .lsun import LsunOptions, lsun_dataset
from .mnist import MnistOptions, mnist_dataset
from .svhn import SvhnOptions, svhn_dataset
from .synthetic import SyntheticOptions, synthetic_dataset
from .texture import TextureOptions, texture_dataset
from .unpaired import UnpairedDigitsOptions, UnpairedFoldersOptions, unpaired_digits_dataset, unpaired_folders_dataset
from .video import VideoOptions, video_dataset


@hookimpl
def coop_register_datasets(registry) -> None:
    registry.add("digits", digits_dataset, DigitsOptions,
                 "scikit-learn's bundled 8x8 digits resized to 28x28 (embedded default, no download)")
    registry.add("mnist", mnist_dataset, MnistOptions, "MNIST from idx(.gz) files under --data-root")
    registry.add("synthetic", synthetic_dataset, SyntheticOptions,
                 "seeded synthetic examples of any shape (no files; contract tests, benchmarks)")
    registry.add("cifar10", cifar10_dataset, CifarOptions,
                 "CIFAR-10 from cifar-10-batches-py pickles or train/<class>/ image folders under --data-root")
    registry.add("cifar100", cifar100_dataset, CifarOptions,
                 "CIFAR-100 (fine labels) from cifar-100-python pickles or image folders under --data-root")
    registry.add("celeba", celeba_dataset, CelebaOptions,
                 "aligned CelebA faces (img_align_celeba or a folder of JPEGs), centre crop + resize")
    registry.add("lsun", lsun_dataset, LsunOptions,
                 "one LSUN category from <category>_train_lmdb (needs lmdb) or an image folder; decoded lazily")
    registry.add("svhn", svhn_dataset, SvhnOptions, "SVHN from train/test/extra_32x32.mat under --data-root")
    registry.add("imagenet_folder", imagenet_folder_dataset, ImagenetFolderOptions,
                 "ImageNet-style <class>/*.JPEG folders with seeded per-class subsampling (TPAMI Table 1)")
    registry.add("imagenet32", imagenet32_dataset, ImagenetDownsampledOptions,
                 "downsampled ImageNet 32x32 (1,000 classes) from the official Imagenet32 npz batches")
    registry.add("imagenet64", imagenet64_dataset, ImagenetDownsampledOptions,
                 "downsampled ImageNet 64x64 (1,000 classes) from the official Imagenet64 npz batches")
    registry.add("image_folder", image_folder_dataset, ImageFolderOptions,
                 "every image under a folder (recursive, sorted), resized; no labels")
    registry.add("texture", texture_dataset, TextureOptions,
                 "one texture image: embedded brick/grass/gravel (scikit-image) or a file (TPAMI Exp. 1)")
    registry.add("video", video_dataset, VideoOptions,
                 "one video clip [3, T, H, W] from a file (PyAV), a frame folder or the bundled synthetic clip")
    registry.add("unpaired_folders", unpaired_folders_dataset, UnpairedFoldersOptions,
                 "two unpaired image domains in CUT's trainA/trainB/testA/testB folders (source batches, `target` set)")
    registry.add("unpaired_digits", unpaired_digits_dataset, UnpairedDigitsOptions,
                 "embedded unpaired digits: A = digits, B = inverted digits of the other half (no files)")
