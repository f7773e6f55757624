"""Digit classifier score: how readable a model's digit samples are, beside the real digits'.

A small ConvNet is trained (seeded, so it is the same classifier for every run) on the training
split of the embedded digits at the samples' size, then classifies `n_samples` samples of the
trained model.  The value is the mean top-class probability; the details give the share of
samples classified with at least `confident` probability, how many of the ten classes receive
at least a quarter of a uniform share, the entropy of the predicted-class histogram (log2 10 =
3.32 bits when the classes are balanced), the histogram itself, and the same figures for the
real test digits together with the classifier's test accuracy, so a number is read beside the
real data's own.

This is a report of sample quality, not a training target: it measures what a person judges
by eye (a readable digit of some class, all classes present) with a fixed, independent model.
"""
from __future__ import annotations

import math
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coopcore import EvalContext, MetricResult, in_range, non_negative, positive, value_range
from coopcore.metrics import draw_samples

N_CLASSES = 10


@attrs.frozen(kw_only=True)
class DigitScoreOptions:
    """Readability of digit samples by a classifier trained on the real digits."""

    # Which samples of the objective to score ("revised", "generator", ...).
    samples: str = "revised"
    # How many samples to classify.
    n_samples: int = attrs.field(default=1000, validator=positive)
    # A sample counts as confidently classified from this top-class probability on.
    confident: float = attrs.field(default=0.9, validator=in_range(0.0, 1.0))
    # Training of the classifier: epochs over the 1,500 training digits, Adam learning rate, seed.
    epochs: int = attrs.field(default=30, validator=positive)
    lr: float = attrs.field(default=2e-3, validator=positive)
    seed: int = attrs.field(default=0, validator=non_negative)


class DigitClassifier(nn.Module):
    """conv3x3(16) -> ReLU -> maxpool2 -> conv3x3(32) -> ReLU -> average to 4x4 -> FC(10).

    The 4x4 grid keeps where the strokes are (a global average would not tell 6 from 9) and
    makes the head independent of the image size."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(32 * 16, N_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def _images_and_labels(context: EvalContext, split: str, size: int) -> tuple[Tensor, Tensor]:
    """The embedded digits of one split at `size`, through the registry (in [-1, 1])."""
    ds = context.build_dataset("digits", {"split": split, "size": size}, f"digit_score.{split}")
    index = torch.arange(len(ds))
    return ds.get_batch(index).float(), ds.get_labels(index)


def train_classifier(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                     options: DigitScoreOptions) -> tuple[DigitClassifier, float]:
    """The classifier trained on `train` (seeded) and its accuracy on `test`."""
    (x, y), (x_test, y_test) = train, test
    gen = torch.Generator().manual_seed(options.seed)
    with torch.random.fork_rng():  # the classifier's init must not draw from the run's RNG
        torch.manual_seed(options.seed)
        model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=options.lr)
    for _ in range(options.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(100):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return model, accuracy


def readability(model: DigitClassifier, images: Tensor, confident: float) -> dict[str, Any]:
    """Top-class probability, confident share, classes covered and class entropy of `images`."""
    with torch.no_grad():
        prob = torch.cat([model(b).softmax(1) for b in images.split(500)])
    top, label = prob.max(1)
    counts = torch.bincount(label, minlength=N_CLASSES).float()
    share = counts / counts.sum()
    nonzero = share[share > 0]
    return {
        "mean_confidence": float(top.mean()),
        "confident_fraction": float((top >= confident).float().mean()),
        "classes_covered": int((share >= 0.25 / N_CLASSES).sum()),
        "class_entropy_bits": float(-(nonzero * nonzero.log2()).sum()),
        "class_histogram": [int(c) for c in counts],
    }


class DigitScore:
    """The metric: see the module docstring."""

    name = "digit_score"

    def __init__(self, options: DigitScoreOptions) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        x = draw_samples(context.objective, o.samples, o.n_samples, context.generator).float()
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != x.shape[3]:
            from coopcore import UsageError

            raise UsageError(f"digit_score needs square 1-channel images, got samples of shape {list(x.shape[1:])}")
        lo, hi = value_range(context.train_dataset) if context.train_dataset is not None else (-1.0, 1.0)
        x = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)  # the classifier's range, [-1, 1]
        context.progress(f"training the digit classifier ({o.epochs} epochs at {x.shape[-1]}px)")
        size = int(x.shape[-1])
        test = _images_and_labels(context, "test", size)
        model, accuracy = train_classifier(_images_and_labels(context, "train", size), test, o)
        ours = readability(model, x, o.confident)
        reference = readability(model, test[0], o.confident)
        return MetricResult(
            name=f"digit_score[{o.samples}]", value=ours["mean_confidence"], n_samples=o.n_samples,
            backend=f"digits ConvNet, test accuracy {accuracy:.3f}",
            details={**ours, "real_test_digits": reference, "classifier_test_accuracy": accuracy,
                     "max_entropy_bits": math.log2(N_CLASSES)},
        )
