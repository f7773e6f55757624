"""Per-grid descriptors of multi-grid minimal CD (Gao et al., Section 7.1).

Paper version (default, `variant = "paper"`):
  grid1 (4x4):   96 5x5 s2 - 128 3x3 s1 - 256 3x3 s1
  grid2 (16x16): 96 5x5 s2 - 128 3x3 s1 - 256 3x3 s1 - 512 3x3 s1
  grid3 (64x64): 96 5x5 s2 - 128 3x3 s2 - 256 3x3 s1
  then a fully connected layer to 1 output = f(Y); batch normalisation + ReLU after every conv.
Authors' code version (`variant = "code"`, per recipes.md): grid3 = 64-128-256-512, all 5x5
stride 2; LeakyReLU 0.2; grids 1-2 as in the paper.  Both versions use batch normalisation with
batch statistics (observed and synthesised batches are scored separately, so each is
normalised by its own statistics, as in the code) and Xavier initialisation (the code's; the
paper does not say).  Every choice is an option; `channels`/`kernels`/`strides` override the
variant's table (used for tiny test networks).

The reference distribution is uniform (`reference_std = None`): the Langevin step uses grad f only.
Convolutions use TensorFlow 'SAME' padding (output ceil(size / stride)), as the code does.
"""
from __future__ import annotations

from typing import Literal, Optional

import attrs
import torch.nn.functional as F
from torch import Tensor, nn

from coopcore import EnergyModelBase, in_range, non_negative, same_padding

# variant -> grid -> (channels, kernels, strides)
ARCHITECTURES: dict[str, dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]] = {
    "paper": {
        1: ((96, 128, 256), (5, 3, 3), (2, 1, 1)),
        2: ((96, 128, 256, 512), (5, 3, 3, 3), (2, 1, 1, 1)),
        3: ((96, 128, 256), (5, 3, 3), (2, 2, 1)),
    },
    "code": {
        1: ((96, 128, 256), (5, 3, 3), (2, 1, 1)),
        2: ((96, 128, 256, 512), (5, 3, 3, 3), (2, 1, 1, 1)),
        3: ((64, 128, 256, 512), (5, 5, 5, 5), (2, 2, 2, 2)),
    },
}


def _optional_ints(instance, attribute, value) -> None:
    """Validator: none, or a non-empty list of positive integers."""
    if value is not None and (len(value) == 0 or any(v <= 0 for v in value)):
        raise ValueError(f"'{attribute.name}' must be a non-empty list of positive integers, got {value!r}")


@attrs.frozen(kw_only=True)
class MultigridDescriptorOptions:
    """A per-grid descriptor of multi-grid minimal CD."""

    # Which grid (1 = 4x4, 2 = 16x16, 3 = 64x64 in the paper) selects the architecture and, when
    # `input_shape` is omitted, the input size (factor**grid with factor 4).
    grid: int = attrs.field(default=1, validator=in_range(1, 3))
    # "paper": Section 7.1 (BN + ReLU); "code": the authors' code (grid3 64-128-256-512 5x5 s2, LeakyReLU 0.2).
    variant: Literal["paper", "code"] = "paper"
    input_shape: Optional[tuple[int, int, int]] = None
    # Overrides of the variant's table (all three must have the same length when given).
    channels: Optional[tuple[int, ...]] = attrs.field(default=None, validator=_optional_ints)
    kernels: Optional[tuple[int, ...]] = attrs.field(default=None, validator=_optional_ints)
    strides: Optional[tuple[int, ...]] = attrs.field(default=None, validator=_optional_ints)
    # None = the variant's (relu for "paper", leaky_relu for "code").
    activation: Optional[Literal["relu", "leaky_relu"]] = None
    leak: float = attrs.field(default=0.2, validator=non_negative)
    batch_norm: bool = True
    # True: always normalise with the batch's own statistics (the code); False: standard BN
    # (running statistics in eval mode).
    batch_stats: bool = True
    # "xavier" (the code's), or "default" (PyTorch's).
    init: Literal["xavier", "default"] = "xavier"
    # None = uniform reference (the paper); a float gives a Gaussian reference N(0, s^2 I).
    reference_std: Optional[float] = None

    def __attrs_post_init__(self) -> None:
        given = [v for v in (self.channels, self.kernels, self.strides) if v is not None]
        if given and len({len(v) for v in given}) != 1:
            raise ValueError("'channels', 'kernels' and 'strides' must have the same length")

    def resolved(self) -> tuple[tuple[int, int, int], tuple[int, ...], tuple[int, ...], tuple[int, ...], str]:
        ch, k, s = ARCHITECTURES[self.variant][self.grid]
        ch = self.channels or ch
        n = len(ch)
        k = self.kernels or (k if len(k) == n else (3,) * n)
        s = self.strides or (s if len(s) == n else (1,) * n)
        size = 4**self.grid
        shape = self.input_shape or (3, size, size)
        act = self.activation or ("relu" if self.variant == "paper" else "leaky_relu")
        return tuple(shape), tuple(ch), tuple(k), tuple(s), act


class _SameConv(nn.Module):
    """Conv2d with TensorFlow 'SAME' padding (output ceil(size / stride))."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, bias=bias)
        before, after, out = same_padding(size, kernel, stride)
        self.pad = (before, after, before, after)
        self.out_size = out

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))


class MultigridDescriptor(EnergyModelBase):
    """Bottom-up ConvNet f(Y) for one grid: convs (+ BN + activation), then fc to 1."""

    def __init__(self, options: MultigridDescriptorOptions = MultigridDescriptorOptions()) -> None:
        shape, channels, kernels, strides, act = options.resolved()
        super().__init__(shape, options.reference_std)
        self.options = options
        layers: list[nn.Module] = []
        cin, size = shape[0], shape[1]
        for cout, k, s in zip(channels, kernels, strides):
            conv = _SameConv(cin, cout, k, s, size, bias=not options.batch_norm)  # BN cancels a bias
            layers.append(conv)
            if options.batch_norm:
                layers.append(nn.BatchNorm2d(cout, track_running_stats=not options.batch_stats))
            layers.append(nn.ReLU() if act == "relu" else nn.LeakyReLU(options.leak))
            cin, size = cout, conv.out_size
        self.features = nn.Sequential(*layers)
        # No fc bias: a constant in f cancels against log Z and gets no gradient from the CD loss.
        self.fc = nn.Linear(cin * size * size, 1, bias=False)
        if options.init == "xavier":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def score(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1)).squeeze(1)
