"""Entry point of the built-in dataset plugin."""
from __future__ import annotations

from coopcore import hookimpl

from .digits import DigitsOptions, digits_dataset
from .mnist import MnistOptions, mnist_dataset
from .synthetic import SyntheticOptions, synthetic_dataset


@hookimpl
def coop_register_datasets(registry) -> None:
    registry.add("digits", digits_dataset, DigitsOptions,
                 "scikit-learn's bundled 8x8 digits resized to 28x28 (embedded default, no download)")
    registry.add("mnist", mnist_dataset, MnistOptions, "MNIST from idx(.gz) files under --data-root")
    registry.add("synthetic", synthetic_dataset, SyntheticOptions,
                 "seeded synthetic examples of any shape (no files; contract tests, benchmarks)")
