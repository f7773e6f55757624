"""`triangle.recovery_error`: Table 3's recovery error of a run that learned from occluded images.

The recovered training images are the observed pixels plus the objective's current imputations
of the holes (the reconstructions written back during training); the error is the per-pixel
|recovered - truth| on the occluded pixels, relative to the pixel range, per image, averaged
over the training images.  The ground truth comes from the run's own training dataset.
"""
from __future__ import annotations

import math
from typing import Literal

import attrs

from coopcore import EvalContext, MetricResult, UsageError, positive


@attrs.frozen(kw_only=True)
class RecoveryErrorOptions:
    """Recovery error on the occluded pixels of the training images (triangle Table 3)."""

    batch_size: int = attrs.field(default=500, validator=positive)
    # "buffer": the imputations written during training (the paper's iterative recovery);
    # "refresh": fill the holes once more with G(mu(x)) of the final models first.
    source: Literal["buffer", "refresh"] = "buffer"


class RecoveryError:
    """Triangle Table 3: per-pixel |recovered - truth| / range on the occluded training pixels."""

    name = "triangle.recovery_error"

    def __init__(self, options: RecoveryErrorOptions = RecoveryErrorOptions()) -> None:
        self.options = options

    def compute(self, context: EvalContext) -> MetricResult:
        obj = context.objective
        if not hasattr(obj, "recovery_error_on"):
            raise UsageError(f"{self.name} needs the 'triangle', 'abp' or 'vae' objective trained with "
                             "objective.options.occlusion; "
                             f"this run's objective is {type(obj).__name__}")
        if context.train_dataset is None:
            raise UsageError(f"{self.name} needs the run's training dataset (the ground truth of the holes)")
        mean, per_image = obj.recovery_error_on(context.train_dataset, self.options.batch_size,
                                                refresh=self.options.source == "refresh",
                                                generator=context.generator)
        valid = per_image[~per_image.isnan()]
        n = int(valid.numel())
        o = obj.options
        return MetricResult(
            name="recovery_error", value=float(mean), n_samples=n, higher_is_better=False,
            std_error=float(valid.std() / math.sqrt(n)) if n > 1 else None,
            backend=f"per-image mean |diff| / {o.pixel_range:g} on the occluded pixels (float64)",
            details={"occlusion": o.occlusion, "occlusion_seed": o.occlusion_seed, "source": self.options.source,
                     "pixel_range": o.pixel_range, "impute_with": getattr(o, "impute_with", "generator(latents)")},
        )
