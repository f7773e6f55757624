"""The bundled video: a procedural dynamic texture, computed, not stored.

256 RGB frames of travelling sine waves (a different direction and speed per channel) under a
bright Gaussian blob that circles the centre once every 64 frames.  Every pixel is a closed-form
function of its continuous position ((i + 0.5) / size) and the frame number, rendered
directly at the requested size and quantised to 8 bits, so the clip is identical on every
machine, needs no file and no decoder, and looks the same at every resolution.  It gives the
spatial-temporal models (TPAMI Experiment 7) and the smoke tests a clip with both spatial
texture and coherent motion.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

N_FRAMES = 256
# Per channel: wave vector (cycles per image in x, y) and temporal frequency (cycles per frame).
_WAVES = (((3.0, 1.0), 1 / 32), ((-1.0, 4.0), 1 / 48), ((2.0, -2.0), -1 / 40))
_BLOB_PERIOD = 64  # frames per orbit
_BLOB_RADIUS, _BLOB_WIDTH = 0.25, 0.12  # in image widths


def synthetic_clip(frames: Sequence[int], size: int) -> np.ndarray:
    """Frames `frames` (indices in 0..255) of the procedural clip: uint8 [3, T, size, size]."""
    for f in frames:
        if not 0 <= f < N_FRAMES:
            raise ValueError(f"frame {f} outside the synthetic clip's 0..{N_FRAMES - 1}")
    t = np.asarray(frames, dtype=np.float64)[:, None, None]
    c = (np.arange(size, dtype=np.float64) + 0.5) / size
    y, x = c[None, :, None], c[None, None, :]
    angle = 2 * np.pi * t / _BLOB_PERIOD
    bx, by = 0.5 + _BLOB_RADIUS * np.cos(angle), 0.5 + _BLOB_RADIUS * np.sin(angle)
    blob = np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * _BLOB_WIDTH**2))
    channels = []
    for (kx, ky), w in _WAVES:
        wave = 0.5 + 0.3 * np.sin(2 * np.pi * (kx * x + ky * y - w * t))
        channels.append(np.clip(0.7 * wave + 0.5 * blob, 0.0, 1.0))
    return np.rint(np.stack(channels) * 255.0).astype(np.uint8)
