"""The paper's architectures as option presets (Appendix, Tables 4-6), one per network and table.

Each entry transcribes its table row by row: per layer the output channels, output side,
kernel and stride; `networks.py` solves the paddings.  Where a table is inconsistent the
preset follows the reading documented in `networks.py` (Table 6's 3x3 -> 1x1 head, Table 4's
output activations).
"""
from __future__ import annotations

from typing import Any

# name suffix -> (summary, option defaults)
GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist": (
        "Divergence triangle Table 6 generator (28x28): z100 -> 3x3x1024 -> 7x7x512 -> 14x14x256 -> 28x28x1, tanh",
        dict(latent_dim=100, out_channels=1, channels=(1024, 512, 256), sizes=(3, 7, 14, 28),
             kernels=(3, 4, 4, 4), strides=(1, 2, 2, 2), batch_norm=True),
    ),
    "cifar": (
        "Divergence triangle Table 5 generator (32x32): z100 -> 4x4x512 -> 8x8x512 -> 16x16x256 -> 32x32x128 "
        "-> 3x3 convT 32x32x3, tanh",
        dict(latent_dim=100, out_channels=3, channels=(512, 512, 256, 128), sizes=(4, 8, 16, 32, 32),
             kernels=(4, 4, 4, 4, 3), strides=(1, 2, 2, 2, 1), batch_norm=True),
    ),
    "celeba": (
        "Divergence triangle Table 4 generator (64x64): z100 -> 4x4x512 -> 8x8x512 -> 16x16x256 -> 32x32x128 "
        "-> 64x64x3, tanh (table: ReLU)",
        dict(latent_dim=100, out_channels=3, channels=(512, 512, 256, 128), sizes=(4, 8, 16, 32, 64),
             kernels=(4, 4, 4, 4, 4), strides=(1, 2, 2, 2, 2), batch_norm=True),
    ),
}

_MNIST_DOWN = dict(in_channels=1, input_size=28, sizes=(14, 7, 3), kernels=(4, 4, 4), strides=(2, 2, 2),
                   head_kernel=3, batch_norm=False)
_CIFAR_DOWN = dict(in_channels=3, input_size=32, sizes=(32, 16, 8, 4), kernels=(3, 4, 4, 4), strides=(1, 2, 2, 2),
                   head_kernel=4, batch_norm=False)
_CELEBA_DOWN = dict(in_channels=3, input_size=64, sizes=(32, 16, 8, 4), kernels=(4, 4, 4, 4), strides=(2, 2, 2, 2),
                    head_kernel=4, batch_norm=True)

ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist": (
        "Divergence triangle Table 6 inference model (28x28): 4x4 s2 conv 128-256-512 (14-7-3), heads mu/logvar 100",
        dict(_MNIST_DOWN, channels=(128, 256, 512), latent_dim=100),
    ),
    "cifar": (
        "Divergence triangle Table 5 inference model (32x32): 3x3 s1 conv 64, 4x4 s2 128-256-512 (16-8-4), "
        "4x4 heads mu/logvar 100",
        dict(_CIFAR_DOWN, channels=(64, 128, 256, 512), latent_dim=100),
    ),
    "celeba": (
        "Divergence triangle Table 4 inference model (64x64): 4x4 s2 conv+BN 64-128-256-512 (32-16-8-4), "
        "4x4 heads mu/logvar 100",
        dict(_CELEBA_DOWN, channels=(64, 128, 256, 512), latent_dim=100),
    ),
}

EBMS: dict[str, tuple[str, dict[str, Any]]] = {
    "mnist": (
        "Divergence triangle Table 6 EBM (28x28): 4x4 s2 conv 128-256-512 (14-7-3), conv(1) = energy",
        dict(_MNIST_DOWN, channels=(128, 256, 512)),
    ),
    "cifar": (
        "Divergence triangle Table 5 EBM (32x32): 3x3 s1 conv 64, 4x4 s2 128-256-256 (16-8-4), 4x4 conv(1) = energy",
        dict(_CIFAR_DOWN, channels=(64, 128, 256, 256)),
    ),
    "celeba": (
        "Divergence triangle Table 4 EBM (64x64): 4x4 s2 conv+BN 64-128-256-256 (32-16-8-4), 4x4 conv(1) = energy",
        dict(_CELEBA_DOWN, channels=(64, 128, 256, 256)),
    ),
}
