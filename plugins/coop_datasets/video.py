"""A video clip for spatial-temporal CoopNets (TPAMI Experiment 7, Table 6): a dataset of length 1.

``path`` is a video file (any format FFmpeg reads: avi, mp4, ...; decoded with PyAV, the `av`
package), a folder of frame images (natural order: frame2.png before frame10.png), or empty
for the bundled procedural clip (`synthetic_clip`, 256 frames, no file).  Relative paths are
under the data root.

Frames ``start_frame``, ``start_frame + frame_step``, ... are taken, ``frames`` of them (64 in
Table 6); asking for more than the clip holds is an error naming both numbers.  Each frame is
resized to ``size`` x ``size`` with Pillow's bilinear filter and no crop (the paper resizes the
DynTex videos to 128 x 128; a 352x288 frame is stretched).  Scaling: ``per_frame_minmax``
(default) stretches each frame to [-1, 1] on its own, as the paper's code does ("per-frame
mm[-1,1]"); ``clip_minmax`` uses the min and max of the whole clip (keeps flicker and fades);
``unit`` is x / 127.5 - 1.

The example has shape [3, T, H, W]: channels first, then time, the layout `nn.Conv3d` takes
(batches are [B, 3, T, H, W]).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import attrs
import numpy as np
import torch

from coopcore import TensorImageDataset, UsageError, minmax_to_unit_range, non_negative, positive

from .files import ROOT_HINT, describe, list_images, resolve_user_path
from .imaging import convert, open_image, resize, to_chw
from .scaling import one_of
from .synthetic_clip import N_FRAMES, synthetic_clip


@attrs.frozen(kw_only=True)
class VideoOptions:
    """One video clip ([3, T, H, W])."""

    # Video file or folder of frames (absolute or under the data root); "" = the bundled clip.
    path: str = ""
    frames: int = attrs.field(default=64, validator=positive)
    size: int = attrs.field(default=128, validator=positive)
    start_frame: int = attrs.field(default=0, validator=non_negative)
    frame_step: int = attrs.field(default=1, validator=positive)
    scaling: Literal["per_frame_minmax", "clip_minmax", "unit"] = attrs.field(
        default="per_frame_minmax", validator=one_of("per_frame_minmax", "clip_minmax", "unit"))


def frame_indices(options: VideoOptions) -> list[int]:
    return [options.start_frame + k * options.frame_step for k in range(options.frames)]


def too_short(what: str, total: int, options: VideoOptions) -> UsageError:
    available = max(0, -(-(total - options.start_frame) // options.frame_step))
    return UsageError(
        f"{what} has {total} frames, which with start_frame = {options.start_frame} and frame_step = "
        f"{options.frame_step} give {available} frames, but 'data.options.frames' = {options.frames}: lower "
        "frames, start_frame or frame_step")


def frame_to_array(img: object, size: int) -> np.ndarray:
    return to_chw(resize(convert(img, "rgb"), size))  # type: ignore[arg-type]


def decode_video_file(path: Path, options: VideoOptions) -> np.ndarray:
    """The selected frames of a video file, resized: uint8 [T, 3, size, size] (PyAV)."""
    try:
        import av
    except ImportError:
        raise UsageError(f"decoding the video {path} needs PyAV (pip install av), or give a folder of frame "
                         "images as 'data.options.path'") from None
    wanted = frame_indices(options)
    out: list[np.ndarray] = []
    seen = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UsageError(f"{path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if seen == wanted[len(out)]:
                    out.append(frame_to_array(frame.to_image(), options.size))
                    if len(out) == len(wanted):
                        break
                seen += 1
    except (av.FFmpegError, OSError) as exc:
        raise UsageError(f"cannot decode the video {path}: {exc}") from None
    if len(out) < len(wanted):
        raise too_short(f"the video {path}", seen, options)
    return np.stack(out)


def read_frame_folder(folder: Path, options: VideoOptions) -> np.ndarray:
    files = list_images(folder)
    if not files:
        raise UsageError(f"no frame images in {folder} ({describe(folder)}); 'data.options.path' must be a video "
                         "file or a folder of frame images")
    wanted = frame_indices(options)
    if wanted[-1] >= len(files):
        raise too_short(f"the frame folder {folder}", len(files), options)
    return np.stack([frame_to_array(open_image(files[i]), options.size) for i in wanted])


def scale_clip(frames: torch.Tensor, scaling: str) -> torch.Tensor:
    """uint8 [T, 3, H, W] -> float [3, T, H, W] in the chosen scaling."""
    x = frames.to(torch.float32)
    if scaling == "per_frame_minmax":
        x = minmax_to_unit_range(x, per_image=True)
    elif scaling == "clip_minmax":
        x = minmax_to_unit_range(x, per_image=False)
    else:
        x = x / 127.5 - 1.0
    return x.permute(1, 0, 2, 3).contiguous()


def video_dataset(options: VideoOptions, root: Optional[Path] = None) -> TensorImageDataset:
    """One video clip [3, T, H, W] from a video file, a frame folder or the bundled procedural clip."""
    if not options.path:
        wanted = frame_indices(options)
        if wanted[-1] >= N_FRAMES:
            raise too_short("the bundled synthetic clip", N_FRAMES, options)
        frames = synthetic_clip(wanted, options.size).transpose(1, 0, 2, 3)
        name = "video-synthetic"
    else:
        path = resolve_user_path(root, options.path)
        if path.is_dir():
            frames = read_frame_folder(path, options)
        elif path.is_file():
            frames = decode_video_file(path, options)
        else:
            hint = "" if root is not None or path.is_absolute() else f" (relative paths are under the data root: {ROOT_HINT})"
            raise UsageError(f"video {path} not found ({describe(path.parent)}); 'data.options.path' must be a "
                             f"video file or a folder of frame images{hint}")
        name = f"video-{path.stem}"
    clip = scale_clip(torch.from_numpy(np.ascontiguousarray(frames)), options.scaling)
    return TensorImageDataset(clip.unsqueeze(0), name=name)
