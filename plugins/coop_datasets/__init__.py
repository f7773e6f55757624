"""Built-in dataset plugin of coopnets.

Embedded (no files): `digits` (scikit-learn), `texture` (scikit-image's brick/grass/gravel),
the bundled synthetic `video` clip and `synthetic`.  From a data root: `mnist`, `cifar10`,
`cifar100`, `celeba`, `lsun`, `svhn`, `imagenet32`, `imagenet64` (downsampled ImageNet npz
batches), `imagenet_folder`, `image_folder`, and `texture` / `video` files.  Seeded random
subsets (``subset``) are drawn by one helper, `subsets.py`.

Conventions shared by the file-backed image datasets: ``split`` picks a documented part in a
documented, sorted order; ``limit`` keeps the first ``limit`` examples of that split (0 = all);
``scaling`` is "minmax" (per-image min-max to [-1, 1], the CoopNets convention), "unit"
(x / 127.5 - 1) or "raw255" (floats 0..255, the multigrid code).  Missing files raise
`coopcore.UsageError` (exit 2) naming the expected layout and what was found.
"""
