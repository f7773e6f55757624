"""Learning from incomplete images (divergence triangle, Section 4.4, Table 3).

Every training example i carries one fixed occlusion mask, drawn once from a generator seeded
by (seed, i) alone, so the mask of an example does not depend on the dataset size, the batch
order, the device or whether the run was resumed.  The imputed values of the missing pixels are
kept per example in a buffer:

- the buffer starts at `fill_value` (0: the paper's "zero-fill the occluded parts in the
  beginning"; 0 is mid-grey for images in [-1, 1]);
- the image a model sees is  x_train = M * x + (1 - M) * buffer  (M = 1 on observed pixels), so
  the observed pixels are always the data's and the ground truth of the missing pixels is never
  read;
- after each iteration the missing pixels of the batch's examples are replaced by their
  reconstructions ("then iterative update missing values using reconstructed images obtained
  from the generator model").

`recovery_error` is Table 3's metric: the per-pixel absolute difference between the recovered
image and the ground truth on the occluded pixels, relative to the range of pixel values.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor

from coopcore import UsageError
from coopcore.masks import parse_mask_name

# An odd 32-bit constant (the golden-ratio multiplier of Fibonacci hashing).
_SEED_STRIDE = 0x9E3779B1


def example_seed(seed: int, index: int) -> int:
    """The seed of example `index`'s mask generator.

    torch's CPU generator (mt19937) keeps only the low 32 bits of a seed, so (seed, index) is
    mapped into 32 bits as (index + seed * an odd constant) mod 2^32: for one seed, distinct
    indices get distinct streams (the map is a bijection of the index); another seed shifts all
    streams by a large odd offset."""
    if not 0 <= index < 2**32:
        raise ValueError(f"example index {index} is out of range")
    return (int(index) + int(seed) * _SEED_STRIDE) % 2**32


def example_masks(name: str, indices: Sequence[int], shape: Sequence[int], seed: int) -> Tensor:
    """Masks [len(indices), 1, H, W] (bool, True = observed) of the named kind, example i's
    drawn from a CPU generator seeded with `example_seed(seed, i)`."""
    spec = parse_mask_name(name)
    g = torch.Generator()
    out = []
    for i in indices:
        g.manual_seed(example_seed(seed, int(i)))
        out.append(spec.make(1, shape, g))
    if not out:
        h, w = int(shape[-2]), int(shape[-1])
        return torch.zeros(0, 1, h, w, dtype=torch.bool)
    return torch.cat(out).bool()


def _dtype(t: Tensor) -> torch.dtype:
    """float64 for the sums, except on devices without it (MPS)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def recovery_error_per_image(truth: Tensor, recovered: Tensor, mask: Tensor, pixel_range: float = 2.0) -> Tensor:
    """Per image: mean |recovered - truth| over its occluded entries (all channels), divided by
    the pixel range -> [N] (float64).  NaN for an image without occluded pixels."""
    dt = _dtype(truth)
    missing = (~mask.bool()).expand_as(truth).to(dt)
    diff = (recovered.to(dt) - truth.to(dt)).abs() * missing
    return diff.flatten(1).sum(1) / missing.flatten(1).sum(1) / pixel_range


def recovery_error(truth: Tensor, recovered: Tensor, mask: Tensor, pixel_range: float = 2.0) -> Tensor:
    """Table 3's recovery error of a batch: the per-image errors averaged over the images that
    have occluded pixels (0-d, float64; 0 when no image has any, so it is always finite).

    Averaging per image first weights every image equally, the convention of the inpainting
    metric; for masks with a fixed hole size (P.5, P.7, B20, B30) it equals the mean over all
    occluded entries of the batch."""
    dt = _dtype(truth)
    missing = (~mask.bool()).expand_as(truth).to(dt)
    count = missing.flatten(1).sum(1)
    diff = ((recovered.to(dt) - truth.to(dt)).abs() * missing).flatten(1).sum(1)
    has = count > 0
    per_image = torch.where(has, diff / count.clamp_min(1.0), torch.zeros_like(diff)) / pixel_range
    return per_image.sum() / has.sum().clamp_min(1)


class OcclusionState:
    """The fixed masks and the imputed missing pixels of every training example.

    Created lazily (on first use) because drawing one mask per example takes a moment for
    large datasets; a checkpoint restores both tensors instead of redrawing them.
    """

    def __init__(self, name: str, n: int, shape: Sequence[int], seed: int, fill_value: float,
                 device: torch.device) -> None:
        if len(shape) != 3:
            raise ValueError(f"occlusion needs images [C, H, W]; the data has examples of shape {tuple(shape)}")
        self.name = name
        self.n = int(n)
        self.shape = tuple(int(s) for s in shape)
        self.seed = int(seed)
        self.fill_value = float(fill_value)
        self.device = device
        self._masks: Optional[Tensor] = None
        self._imputed: Optional[Tensor] = None

    def _ensure(self) -> None:
        if self._masks is None:
            self._masks = example_masks(self.name, range(self.n), self.shape, self.seed).to(self.device)
            self._imputed = torch.full((self.n, *self.shape), self.fill_value, device=self.device)

    @property
    def masks(self) -> Tensor:
        """[n, 1, H, W] bool, True = observed."""
        self._ensure()
        assert self._masks is not None
        return self._masks

    @property
    def imputed(self) -> Tensor:
        """[n, C, H, W]: the current values of every example's missing pixels (observed
        positions hold `fill_value` and are never used)."""
        self._ensure()
        assert self._imputed is not None
        return self._imputed

    def compose(self, x: Tensor, index: Tensor) -> Tensor:
        """The training images of a batch: observed pixels of `x`, imputed values elsewhere."""
        return torch.where(self.masks[index], x, self.imputed[index].to(x.dtype))

    def update(self, index: Tensor, reconstruction: Tensor) -> None:
        """Replace the missing pixels of the batch's examples by `reconstruction`."""
        m = self.masks[index]
        self.imputed[index] = torch.where(m, self.imputed[index], reconstruction.detach().to(self.imputed.dtype))

    # -- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "masks": self.masks, "imputed": self.imputed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name or int(state.get("seed", -1)) != self.seed:
            raise ValueError(
                f"the checkpoint's occlusion is {state.get('name')!r} with seed {state.get('seed')}, "
                f"this run's is {self.name!r} with seed {self.seed}"
            )
        masks, imputed = state["masks"], state["imputed"]
        want_m, want_x = (self.n, 1, *self.shape[1:]), (self.n, *self.shape)
        if tuple(masks.shape) != want_m or tuple(imputed.shape) != want_x:
            raise ValueError(
                f"the checkpoint's occlusion state has masks {tuple(masks.shape)} and images "
                f"{tuple(imputed.shape)}; this run needs {want_m} and {want_x}"
            )
        self._masks = masks.to(self.device, torch.bool).clone()
        self._imputed = imputed.to(self.device, torch.float32).clone()


def occlusion_for(options: Any, n: int, shape: Sequence[int], device: torch.device) -> OcclusionState:
    """The occlusion an objective's options ask for (`occlusion`, `occlusion_seed`, `fill_value`),
    over `n` training examples of `shape`; a mask that does not fit the data is a usage error."""
    shape = tuple(shape)
    try:
        occ = OcclusionState(options.occlusion, n, shape, options.occlusion_seed, options.fill_value, device)
        parse_mask_name(options.occlusion).make(1, shape, torch.Generator())  # does it fit?
    except ValueError as exc:
        raise UsageError(f"objective.options.occlusion = {options.occlusion!r} does not fit the "
                         f"training data (examples of shape {shape}): {exc}") from None
    return occ


def require_occlusion(occ: Optional[OcclusionState]) -> OcclusionState:
    """The run's occlusion, for what only a run on occluded images has (the recovery error)."""
    if occ is None:
        raise UsageError("this run trained on complete images: set objective.options.occlusion "
                         "(e.g. \"B30\") to learn from occluded images and measure the recovery error")
    return occ


def load_occlusion_state(occ: Optional[OcclusionState], state: Mapping[str, Any], name: Optional[str]) -> None:
    """Restore `occ` from an objective's checkpoint state (its "occlusion" entry); a run on
    complete images (`occ` None) refuses a checkpoint that holds one."""
    if occ is None:
        if state.get("occlusion") is not None:
            raise UsageError("the checkpoint holds an occlusion state but this run has no objective.options.occlusion")
        return
    if "occlusion" not in state:
        raise UsageError("the checkpoint has no occlusion state (masks and imputed pixels) for this run's "
                         f"objective.options.occlusion = {name!r}")
    try:
        occ.load_state_dict(state["occlusion"])
    except ValueError as exc:
        raise UsageError(f"cannot resume the occlusion state: {exc}") from None


def recovery_error_over(occ: OcclusionState, dataset: Any, pixel_range: float, batch_size: int = 500,
                        refill: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> tuple[Tensor, Tensor]:
    """Table 3's recovery error over a whole training set (`dataset` supplies the ground truth and
    must be the set the masks were drawn for).

    The recovered images are the observed pixels plus the stored imputations; with `refill`,
    the holes are first filled by ``refill(recovered, index)`` (e.g. one more reconstruction from
    the final models), without changing the stored imputations.  Returns (mean over the images
    that have occluded pixels, per-image errors with NaN for images without any).  A dataset of
    another size than the masks' is a usage error."""
    if len(dataset) != occ.n:
        raise UsageError(f"recovery error: the dataset has {len(dataset)} examples, the run trained on {occ.n}")
    per_image = []
    for start in range(0, occ.n, batch_size):
        index = torch.arange(start, min(start + batch_size, occ.n))
        truth = dataset.get_batch(index).to(occ.device)
        idx = index.to(occ.device)
        recovered = occ.compose(truth, idx)
        if refill is not None:
            recovered = torch.where(occ.masks[idx], truth, refill(recovered, idx).to(recovered.dtype))
        per_image.append(recovery_error_per_image(truth, recovered, occ.masks[idx], pixel_range).cpu())
    errors = torch.cat(per_image)
    valid = errors[~torch.isnan(errors)]
    return (valid.mean() if valid.numel() else torch.zeros((), dtype=torch.float64)), errors
