"""The embedded default dataset: scikit-learn's bundled `load_digits` (1,797 8x8 images).

Needs no network and no files: the smoke scale and the golden tests run on it.  Images
(values 0..16) are scaled to [0, 1], resized bilinearly to `size` x `size` (28 by default,
the MNIST geometry) and mapped to [-1, 1] as x * 2 - 1, the MNIST scaling of TPAMI Table 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import torch
import torch.nn.functional as F

from coopcore import TensorImageDataset, non_negative, positive

N_DIGITS = 1797
N_TEST = 297  # the last 297 images; the first 1,500 are the training split


@attrs.frozen(kw_only=True)
class DigitsOptions:
    """scikit-learn digits, resized.

    Yields 1-channel images of shape ``[1, size, size]`` with values in [-1, 1] (x * 2 - 1 of
    the [0, 1]-scaled digit), with the class labels 0-9; embedded, so `root` is ignored.
    """

    size: int = attrs.field(default=28, validator=positive, metadata={
        "doc": "Side length in pixels the 8x8 digits are resized to (bilinear); 28 = the MNIST geometry."})
    split: Literal["train", "test", "validation", "all"] = attrs.field(default="train", metadata={
        "doc": "train = the first 1,500 images, test = the last 297, validation = the first "
               "`validation_size` training images, all = all 1,797."})
    limit: int = attrs.field(default=0, validator=non_negative, metadata={
        "doc": "Keep only the first `limit` images of the split (0 = all)."})
    validation_size: int = attrs.field(default=300, validator=positive, metadata={
        "doc": "Size of the validation split: the first images of the training split (they overlap "
               "training, as MNIST's validation set does in the Parzen protocol of TPAMI Table 2)."})


def load_digits_tensor(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0) * 2.0 - 1.0, torch.tensor(bunch.target, dtype=torch.long)


def digits_dataset(options: DigitsOptions, root: Optional[Path] = None) -> TensorImageDataset:
    """scikit-learn's bundled handwritten digits (embedded; no download)."""
    x, y = load_digits_tensor(options.size)
    n_train = N_DIGITS - N_TEST
    sl = {
        "train": slice(0, n_train),
        "test": slice(n_train, N_DIGITS),
        "validation": slice(0, options.validation_size),
        "all": slice(0, N_DIGITS),
    }[options.split]
    x, y = x[sl], y[sl]
    if options.limit:
        x, y = x[: options.limit], y[: options.limit]
    return TensorImageDataset(x, name=f"digits-{options.split}", labels=y, n_classes=10)
