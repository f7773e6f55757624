"""Feature probe: classification with frozen descriptor features (multigrid Table 2).

The descriptor's top feature map (``descriptor.features(x)``, frozen, computed once) feeds a
small classifier trained with Adam on `n` class-balanced labelled training images, for each `n`
in `n_labels`; the test error on a labelled test set is reported per `n`.  The multigrid paper
concatenates the top maps of its three grids (each through its own 3x3 conv); here one
descriptor (one grid) is probed: conv 3x3 stride 1 with `conv_channels` (64) outputs, ReLU,
then one fully connected layer to the classes.

Choices the paper leaves open: ReLU after the probe conv; no validation set or early stopping
(the error after the last epoch is reported); cross-entropy loss; class balance puts
n // n_classes images in each class and gives the remainder to the lowest class labels; the
labelled subsets are nested (the first k images per class of one random permutation).
Seeded from the evaluation generator and deterministic on the CPU (GPU convolutions may not be).
"""
from __future__ import annotations

from typing import Any, Optional

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from coopcore import EvalContext, MetricResult, UsageError, all_positive, non_negative, positive

from .parzen import DatasetRef


@attrs.frozen(kw_only=True)
class FeatureProbeOptions:
    """Test error of a small classifier on frozen descriptor features."""

    # Labelled training set to draw the labelled images from; "none" = the run's training set.
    train: Optional[DatasetRef] = None
    test: DatasetRef = DatasetRef(name="svhn", options={"split": "test"})
    # One classifier per count; value = test error of the first.
    n_labels: list[int] = attrs.field(factory=lambda: [1000, 2000, 4000], validator=all_positive)
    # Number of classes; "none" = max label + 1 over the training and test labels.
    n_classes: Optional[int] = None
    epochs: int = attrs.field(default=50, validator=positive)
    lr: float = attrs.field(default=1e-3, validator=positive)
    batch_size: int = attrs.field(default=100, validator=positive)
    conv_channels: int = attrs.field(default=64, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    # Use the first N test images only (0 = all).
    test_limit: int = attrs.field(default=0, validator=non_negative)
    feature_batch: int = attrs.field(default=256, validator=positive)
    descriptor: str = "descriptor"

    def __attrs_post_init__(self) -> None:
        if not self.n_labels:
            raise ValueError("'n_labels' must list at least one label count")


class ProbeHead(nn.Module):
    """conv3x3 s1 (same padding) -> ReLU -> FC to the classes."""

    def __init__(self, in_channels: int, height: int, width: int, channels: int, n_classes: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, 3, 1, padding=1)
        self.fc = nn.Linear(channels * height * width, n_classes)
        # PyTorch's default initialisation, drawn from an explicit generator
        for layer in (self.conv, self.fc):
            nn.init.kaiming_uniform_(layer.weight, a=5**0.5, generator=generator)
            fan_in = layer.weight[0].numel()
            bound = 1.0 / fan_in**0.5
            nn.init.uniform_(layer.bias, -bound, bound, generator=generator)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(torch.relu(self.conv(f)).flatten(1))


def _labels(ds: Any, n: int, metric: str, what: str) -> Tensor:
    if not hasattr(ds, "get_labels"):
        raise UsageError(f"{metric}: the {what} set '{getattr(ds, 'name', '?')}' has no labels (no get_labels)")
    return ds.get_labels(torch.arange(n)).to(torch.long).cpu()


def balanced_subset(labels: Tensor, n: int, n_classes: int, generator: torch.Generator,
                    metric: str = "feature_probe") -> Tensor:
    """Indices of `n` images, n // n_classes per class (the remainder to the lowest classes), the
    first k of one random permutation per class (so subsets for growing n are nested)."""
    per = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
    out = []
    for c, k in enumerate(per):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < k:
            raise UsageError(f"{metric}: class {c} has {idx.numel()} labelled training images, {k} are needed "
                             f"for n_labels={n}")
        out.append(idx[torch.randperm(idx.numel(), generator=generator)[:k]])
    return torch.cat(out)


def train_probe(feats: Tensor, labels: Tensor, n_classes: int, o: FeatureProbeOptions, seed: int,
                device: torch.device) -> ProbeHead:
    g = torch.Generator().manual_seed(seed)
    _, c, h, w = feats.shape
    head = ProbeHead(c, h, w, o.conv_channels, n_classes, g).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    feats, labels = feats.to(device), labels.to(device)
    n = feats.shape[0]
    for _ in range(o.epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for i in range(0, n, o.batch_size):
            b = perm[i : i + o.batch_size]
            loss = nn.functional.cross_entropy(head(feats[b]), labels[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head


class FeatureProbe:
    """Test error of a classifier on frozen descriptor features (multigrid Table 2 protocol)."""

    name = "feature_probe"

    def __init__(self, options: FeatureProbeOptions = FeatureProbeOptions()) -> None:
        self.options = options

    def _features(self, model: nn.Module, ds: Any, index: Tensor, ctx: EvalContext) -> Tensor:
        out = []
        with torch.no_grad():
            for i in range(0, index.numel(), self.options.feature_batch):
                x = ds.get_batch(index[i : i + self.options.feature_batch]).to(ctx.device)
                f = model.features(x)
                if f.dim() != 4:
                    raise UsageError(f"{self.name}: descriptor.features(x) must give feature maps [B, C, H, W]; "
                                     f"got shape {tuple(f.shape)}")
                out.append(f.detach())
        return torch.cat(out)

    def compute(self, context: EvalContext) -> MetricResult:
        o = self.options
        model = context.models.get(o.descriptor) if context.models else None
        if model is None:
            raise UsageError(f"{self.name}: needs a descriptor in the role '{o.descriptor}'; this run has: "
                             f"{', '.join(sorted(context.models)) or 'none'}")
        if not isinstance(getattr(model, "features", None), nn.Module):
            raise UsageError(f"{self.name}: the '{o.descriptor}' model ({type(model).__name__}) has no `features` "
                             "module; the probe needs descriptor.features(x) -> the top feature map [B, C, H, W] "
                             "(as coopnets' ConvDescriptor has)")
        if o.train is None:
            train = context.train_dataset
            if train is None or not hasattr(train, "get_batch"):
                raise UsageError(f"{self.name}: no labelled training set: the run's training set is not available "
                                 "here; pass --set train={name='...', options={...}}")
        else:
            train = context.build_dataset(o.train.name, o.train.options, f"{self.name}.train")
        test = context.build_dataset(o.test.name, o.test.options, f"{self.name}.test")
        train_labels = _labels(train, len(train), self.name, "training")
        n_test = len(test) if not o.test_limit else min(o.test_limit, len(test))
        if n_test < 1:
            raise UsageError(f"{self.name}: the test set is empty")
        test_labels = _labels(test, n_test, self.name, "test")
        n_classes = o.n_classes or int(max(train_labels.max(), test_labels.max())) + 1
        if int(min(train_labels.min(), test_labels.min())) < 0 or int(max(train_labels.max(), test_labels.max())) >= n_classes:
            raise UsageError(f"{self.name}: labels must lie in 0..{n_classes - 1}")
        seed = int(torch.randint(0, 2**62, (1,), generator=context.generator, device=context.generator.device))
        g = torch.Generator().manual_seed(seed)
        largest = balanced_subset(train_labels, max(o.n_labels), n_classes, g, self.name)
        # per class, the first k of the largest subset's permutation -> nested subsets
        order = {c: largest[train_labels[largest] == c] for c in range(n_classes)}
        test_feats = self._features(model, test, torch.arange(n_test), context)
        context.progress(f"{self.name}: test features {tuple(test_feats.shape)}")
        errors: dict[str, float] = {}
        for k, n in enumerate(o.n_labels):
            per = [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
            index = torch.cat([order[c][: per[c]] for c in range(n_classes)])
            feats = self._features(model, train, index, context)
            head = train_probe(feats, train_labels[index], n_classes, o, seed + 1 + k, context.device)
            with torch.no_grad():
                pred = torch.cat([head(test_feats[i : i + o.feature_batch]).argmax(1).cpu()
                                  for i in range(0, n_test, o.feature_batch)])
            errors[str(n)] = float((pred != test_labels).double().mean())
            context.progress(f"{self.name}: n_labels={n}: test error {errors[str(n)]:.4f}")
        first = errors[str(o.n_labels[0])]
        return MetricResult(
            name=f"feature_probe[n_labels={o.n_labels[0]}]", value=first,
            std_error=float(np.sqrt(first * (1 - first) / n_test)), n_samples=n_test, higher_is_better=False,
            backend=f"frozen {o.descriptor}.features -> conv3x3 s1 {o.conv_channels} -> ReLU -> FC; Adam "
                    f"lr={o.lr:g}, {o.epochs} epochs, batch {o.batch_size}",
            details={"test_error": errors, "n_classes": n_classes, "n_test": n_test,
                     "feature_shape": list(test_feats.shape[1:]), "seed": seed,
                     "std_error": "binomial sqrt(e(1-e)/n_test) of the first error"},
        )
