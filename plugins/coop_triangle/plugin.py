"""Entry point of the divergence-triangle plugin: the MNIST networks of Table 6 and the
`triangle` objective (Algorithm 1)."""
from __future__ import annotations

from coopcore import hookimpl

from .networks import (
    TriangleEBM,
    TriangleEBMOptions,
    TriangleEncoder,
    TriangleEncoderOptions,
    TriangleGenerator,
    TriangleGeneratorOptions,
)
from .objective import Triangle, TriangleOptions


@hookimpl
def coop_register_energy_models(registry) -> None:
    registry.add("triangle.ebm.mnist", TriangleEBM, TriangleEBMOptions,
                 "Divergence triangle Table 6 EBM (28x28): conv 128-256-512 s2, conv(1) = energy")


@hookimpl
def coop_register_generators(registry) -> None:
    registry.add("triangle.generator.mnist", TriangleGenerator, TriangleGeneratorOptions,
                 "Divergence triangle Table 6 generator (28x28): z100 -> 3x3x1024 -> 7x7x512 -> 14x14x256 -> 28x28x1")


@hookimpl
def coop_register_encoders(registry) -> None:
    registry.add("triangle.encoder.mnist", TriangleEncoder, TriangleEncoderOptions,
                 "Divergence triangle Table 6 inference model (28x28): conv 128-256-512 s2, mu/logvar heads")


@hookimpl
def coop_register_objectives(registry) -> None:
    registry.add("triangle", Triangle, TriangleOptions,
                 "Divergence triangle, TPAMI 2020 Algorithm 1 (EBM + generator + inference model, no MCMC)")
