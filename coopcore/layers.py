"""Network-building helpers: normal weight initialisation and convolution padding geometry.

The padding helpers solve, for one spatial dimension, the padding a layer needs to take an
input of `size_in` to the listed `size_out` (the papers' tables list output sizes, not
paddings).  PyTorch's output sizes are, for a convolution,
``floor((size_in + 2 p - kernel) / stride) + 1`` and, for a transposed convolution,
``(size_in - 1) * stride - 2 p + kernel + output_padding``.
"""
from __future__ import annotations

import math
from typing import Optional

from torch import nn

__all__ = ["conv_padding", "init_normal", "same_padding", "transposed_conv_padding", "transposed_conv_stride"]

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def init_normal(module: nn.Module, std: Optional[float], *, norm_std: float = 0.0, zero_bias: bool = True) -> None:
    """Initialise every (transposed) convolution and linear layer of `module` with N(0, std) weights.

    Layers are visited in ``module.modules()`` order, each drawing from PyTorch's global
    generator: convolution / linear weights ~ N(0, std) and biases 0; affine batch-norm layers
    get gamma ~ N(1, norm_std) (exactly 1, drawing nothing, when ``norm_std == 0``) and beta 0.

    Args:
        module: The network to initialise in place.
        std: Standard deviation of the weights; None leaves PyTorch's default initialisation.
        norm_std: Standard deviation of the batch-norm scales around 1 (DCGAN and the
            divergence-triangle code use ``norm_std = std``; CoopNets uses 0).
        zero_bias: Set the convolution / linear biases to 0 (TensorFlow's initialiser); False
            leaves them as PyTorch drew them when the layers were built (the DCGAN-style
            PyTorch code of the divergence triangle initialises the weights only).

    Raises:
        ValueError: If `std` is given but not > 0.
    """
    if std is None:
        return
    if not std > 0:
        raise ValueError(f"'init_std' must be > 0 or omitted, got {std}")
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None and zero_bias:
                nn.init.zeros_(m.bias)
        elif isinstance(m, _NORMS) and m.affine:
            if norm_std > 0:
                nn.init.normal_(m.weight, 1.0, norm_std)
            else:
                nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding of a convolution: the output has ``ceil(size / stride)`` entries.

    Args:
        size: Input length.
        kernel: Kernel length.
        stride: Stride.

    Returns:
        ``(pad_before, pad_after, size_out)``; an odd total puts the extra entry after.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


def conv_padding(size_in: int, size_out: int, kernel: int, stride: int) -> int:
    """The smallest symmetric padding p with ``floor((size_in + 2 p - kernel) / stride) + 1 == size_out``.

    Args:
        size_in: Input length.
        size_out: Wanted output length.
        kernel: Kernel length.
        stride: Stride.

    Returns:
        The padding p (``0 <= p < kernel``).

    Raises:
        ValueError: If no such padding exists.
    """
    for p in range(kernel):
        if (size_in + 2 * p - kernel) >= 0 and (size_in + 2 * p - kernel) // stride + 1 == size_out:
            return p
    raise ValueError(f"no padding takes a {kernel}x{kernel} stride-{stride} conv from {size_in} to {size_out}")


def transposed_conv_padding(size_in: int, size_out: int, kernel: int, stride: int) -> tuple[int, int]:
    """``(padding, output_padding)`` of a transposed convolution taking `size_in` to `size_out`.

    Solves ``size_out = (size_in - 1) * stride - 2 padding + kernel + output_padding`` with the
    smallest ``padding >= 0`` and ``0 <= output_padding < stride``.

    Args:
        size_in: Input length.
        size_out: Wanted output length.
        kernel: Kernel length.
        stride: Stride.

    Returns:
        ``(padding, output_padding)``, the arguments of ``nn.ConvTranspose2d``.

    Raises:
        ValueError: If no such padding exists.
    """
    need = (size_in - 1) * stride + kernel - size_out  # = 2 p - op
    pad = max(0, math.ceil(need / 2))
    out_pad = 2 * pad - need
    if not 0 <= out_pad < stride:
        raise ValueError(
            f"no padding takes a {kernel}x{kernel} stride-{stride} transposed conv from {size_in} to {size_out}"
        )
    return pad, out_pad


def transposed_conv_stride(size_in: int, size_out: int) -> int:
    """The stride of an up-sampling transposed convolution: ``ceil(size_out / size_in)``, at least 1.

    A 1 x 1 input (the projection of a latent vector) uses stride 1, the kernel alone making
    the output size.

    Args:
        size_in: Input length.
        size_out: Wanted output length.

    Returns:
        The stride.
    """
    return 1 if size_in == 1 else max(1, math.ceil(size_out / size_in))
