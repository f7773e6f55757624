"""Transposed convolutions that reach an exact output size, in any number of dimensions.

`coopcore.transposed_conv_padding` solves a symmetric PyTorch padding for the 2-D generators.  That
cannot express every layer of the papers: a stride-1 transposed convolution with an even kernel
that keeps the length (the spatial-temporal generator's last layer, temporal kernel 2: 64 -> 64
frames) needs one row cropped on one side only, and the authors' code crops asymmetrically in
general (TensorFlow 'SAME' and MatConvNet ``crop = [1, 2]`` both drop the smaller half before and
the larger half after).  `CroppedConvTranspose` therefore computes the full transposed
convolution and crops it exactly as that code does, or appends the rows a larger requested size
needs (they receive only the bias, as TensorFlow's 'VALID' transposed convolution with a larger
``output_shape`` and PyTorch's ``output_padding`` do).

`BatchNormShift` is the batch normalisation of the authors' TensorFlow generators
(``tf.contrib.layers.batch_norm`` with its defaults): batch statistics, eps 1e-3, a learned shift
and no learned scale.

The spatial-temporal nets' "spatially fully connected" layers (a filter spanning the whole
spatial map, convolutional in time only) are `nn.Conv3d` / `nn.ConvTranspose3d` subclasses with
the same parameters and results, computed as one matrix product per frame window: PyTorch's CPU
kernels for a 5 x 64 x 64 filter take 20-70 s for one backward pass at the paper's size, the
matrix product well under a second.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def transposed_crop(size_in: int, size_out: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(crop_before, crop_after, extra) of a transposed convolution from `size_in` to `size_out`.

    The full output has ``(size_in - 1) * stride + kernel`` rows.  A smaller `size_out` crops
    the difference, ``floor(d / 2)`` before and the rest after (the TensorFlow 'SAME' and
    MatConvNet convention); at most ``kernel - 1`` rows may go, so every input row still reaches
    the output.  A larger `size_out` appends ``extra < stride`` rows at the end.
    """
    if min(size_in, size_out, kernel, stride) < 1:
        raise ValueError(f"sizes, kernel and stride must be >= 1, got {size_in}, {size_out}, {kernel}, {stride}")
    full = (size_in - 1) * stride + kernel
    if size_out > full:
        extra = size_out - full
        if extra >= stride:
            raise ValueError(
                f"a transposed convolution with kernel {kernel} and stride {stride} reaches at most "
                f"{full + stride - 1} from {size_in}, not {size_out}"
            )
        return 0, 0, extra
    crop = full - size_out
    if crop > kernel - 1:
        raise ValueError(
            f"a transposed convolution with kernel {kernel} and stride {stride} from {size_in} gives at least "
            f"{full - (kernel - 1)}, not {size_out} (it would crop {crop} > kernel - 1 rows)"
        )
    return crop // 2, crop - crop // 2, 0


class SpatiallyFullConv3d(nn.Conv3d):
    """Conv3d whose filter covers the whole spatial map of its input (output 1 x 1 per frame).

    kernel = (k, H, W), stride = (s, 1, 1), padding = (p, 0, 0); inputs must be H x W.  Same
    parameters and outputs as `nn.Conv3d`, computed as a product with the unfolded frame windows.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, temporal_stride: int,
                 temporal_padding: int, spatial: Sequence[int]) -> None:
        h, w = spatial
        super().__init__(in_channels, out_channels, (temporal_kernel, h, w), (temporal_stride, 1, 1),
                         (temporal_padding, 0, 0))

    def forward(self, x: Tensor) -> Tensor:
        k, h, w = self.kernel_size
        if tuple(x.shape[3:]) != (h, w):
            raise ValueError(f"spatially fully connected layer expects {h}x{w} maps, got {tuple(x.shape[3:])}")
        p = self.padding[0]
        xp = F.pad(x, (0, 0, 0, 0, p, p))
        windows = xp.unfold(2, k, self.stride[0])  # [B, C, T', H, W, k]
        b, c, t = windows.shape[:3]
        flat = windows.permute(0, 2, 1, 5, 3, 4).reshape(b, t, c * k * h * w)
        y = F.linear(flat, self.weight.reshape(self.out_channels, -1), self.bias)  # [B, T', out]
        return y.transpose(1, 2).reshape(b, self.out_channels, t, 1, 1)


class SpatiallyFullConvTranspose3d(nn.ConvTranspose3d):
    """ConvTranspose3d from 1 x 1 maps whose kernel (k, H, W) spans the whole output map.

    stride = (s, 1, 1), no padding, optional temporal output padding.  Same parameters and
    outputs as `nn.ConvTranspose3d`, computed as one matrix product and a k-tap overlap-add in
    time.
    """

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int, temporal_stride: int,
                 spatial: Sequence[int], temporal_output_padding: int = 0) -> None:
        h, w = spatial
        super().__init__(in_channels, out_channels, (temporal_kernel, h, w), (temporal_stride, 1, 1),
                         output_padding=(temporal_output_padding, 0, 0))

    def forward(self, x: Tensor, output_size: None = None) -> Tensor:
        if tuple(x.shape[3:]) != (1, 1):
            raise ValueError(f"spatially fully connected transposed layer expects 1x1 maps, got {tuple(x.shape[3:])}")
        k, h, w = self.kernel_size
        s = self.stride[0]
        b, c, t = x.shape[:3]
        taps = x.reshape(b, c, t).transpose(1, 2) @ self.weight.reshape(c, -1)  # [B, T, out*k*H*W]
        taps = taps.reshape(b, t, self.out_channels, k, h, w).permute(0, 2, 3, 1, 4, 5)  # [B, out, k, T, H, W]
        length = (t - 1) * s + k + self.output_padding[0]
        y = torch.zeros(b, self.out_channels, length, h, w, dtype=taps.dtype, device=taps.device)
        for j in range(k):  # frame i of the input lands on output frames i * s + j
            y[:, :, j : j + (t - 1) * s + 1 : s] += taps[:, :, j]
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1, 1)
        return y


class CroppedConvTranspose(nn.Module):
    """ConvTranspose2d/3d from `size_in` to exactly `size_out` per spatial dimension.

    A 3-D layer from 1 x 1 maps whose kernel spans the whole output map (the spatially fully
    connected layer) runs as `SpatiallyFullConvTranspose3d`: same parameters, faster.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        size_in: Sequence[int],
        size_out: Sequence[int],
    ) -> None:
        super().__init__()
        dims = len(kernel)
        if not (len(stride) == len(size_in) == len(size_out) == dims) or dims not in (2, 3):
            raise ValueError("kernel, stride, size_in and size_out must all have 2 or all have 3 entries")
        geo = [transposed_crop(i, o, k, s) for i, o, k, s in zip(size_in, size_out, kernel, stride)]
        self.crops = tuple((before, after) for before, after, _ in geo)
        extra = tuple(e for _, _, e in geo)
        spatially_full = (
            dims == 3 and tuple(size_in[1:]) == (1, 1) and tuple(stride[1:]) == (1, 1)
            and tuple(kernel[1:]) == tuple(size_out[1:]) and tuple(size_out[1:]) != (1, 1)
        )
        self.conv: nn.Module
        if spatially_full:
            self.conv = SpatiallyFullConvTranspose3d(
                in_channels, out_channels, kernel[0], stride[0], kernel[1:], extra[0])
        else:
            conv = nn.ConvTranspose3d if dims == 3 else nn.ConvTranspose2d
            self.conv = conv(in_channels, out_channels, tuple(kernel), tuple(stride), padding=0, output_padding=extra)
        self.size_out = tuple(int(s) for s in size_out)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        index = [slice(None), slice(None)]
        for (before, after), n in zip(self.crops, y.shape[2:]):
            index.append(slice(before, n - after))
        return y[tuple(index)]

    def extra_repr(self) -> str:
        return f"crops={self.crops}, size_out={self.size_out}"


class BatchNormShift(nn.Module):
    """Batch normalisation over the batch and every spatial (and temporal) position, always with
    the batch's own statistics, then a learned per-channel shift beta and, optionally, a learned
    scale gamma.

    TensorFlow's ``tf.contrib.layers.batch_norm``, which the authors' CoopNets code calls with its
    defaults, has ``scale=False`` and ``epsilon=0.001``; PyTorch's ``nn.BatchNorm2d`` learns a
    scale and uses 1e-5.  With ``scale=False`` the layer has one parameter, ``bias`` (beta, 0 at
    the start); with ``scale=True`` also ``weight`` (gamma, 1 at the start).
    """

    def __init__(self, channels: int, eps: float = 1e-3, scale: bool = False) -> None:
        super().__init__()
        self.eps = float(eps)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.bias.numel()}, eps={self.eps}, scale={self.weight is not None}"
