"""Entry point of the divergence-triangle plugin: the networks of Tables 4-6 (one configurable
class per role, the tables as presets), the `triangle` objective (Algorithm 1, with learning
from occluded images), the `vae` baseline (also from occluded images: Table 3's VAE row), the
`abp` baseline of Table 3, the Table 3 recovery-error metric and the table specs under tables/."""
from __future__ import annotations

from coopcore import hookimpl, preset_options
from coopcore.repro import register_table_files

from .abp import Abp, AbpOptions
from .metric import RecoveryError, RecoveryErrorOptions
from .networks import (
    TriangleEBM,
    TriangleEBMOptions,
    TriangleEncoder,
    TriangleEncoderOptions,
    TriangleGenerator,
    TriangleGeneratorOptions,
)
from .objective import Triangle, TriangleOptions
from .presets import EBMS, ENCODERS, GENERATORS
from .vae import Vae, VaeOptions


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace(".", "_").split("_")) + "Options"


def _register(registry, prefix: str, factory, base, presets, summary: str) -> None:
    registry.add(prefix, factory, base, summary)
    for suffix, (text, defaults) in presets.items():
        name = f"{prefix}.{suffix}"
        registry.add(name, factory, preset_options(base, _camel(name), text, **defaults), text)


@hookimpl
def coop_register_energy_models(registry) -> None:
    _register(registry, "triangle.ebm", TriangleEBM, TriangleEBMOptions, EBMS,
              "Divergence-triangle EBM, configurable (channels/sizes/kernels/strides lists; defaults = Table 6)")


@hookimpl
def coop_register_generators(registry) -> None:
    _register(registry, "triangle.generator", TriangleGenerator, TriangleGeneratorOptions, GENERATORS,
              "Divergence-triangle generator, configurable (channels/sizes/kernels/strides lists; defaults = Table 6)")


@hookimpl
def coop_register_encoders(registry) -> None:
    _register(registry, "triangle.encoder", TriangleEncoder, TriangleEncoderOptions, ENCODERS,
              "Divergence-triangle inference model, configurable (defaults = Table 6)")


@hookimpl
def coop_register_objectives(registry) -> None:
    registry.add("triangle", Triangle, TriangleOptions,
                 "Divergence triangle, Han et al. Algorithm 1 (EBM + generator + inference model, no MCMC; "
                 "optional occluded training data, Section 4.4)")
    registry.add("abp", Abp, AbpOptions,
                 "Alternating back-propagation (Algorithm G) learning from occluded images: inference and "
                 "learning on the observed pixels (divergence triangle Table 3's ABP row)")
    registry.add("vae", Vae, VaeOptions,
                 "Variational auto-encoder (Kingma & Welling): Gaussian decoder (generator) and encoder, negative ELBO; "
                 "optional occluded training data: ELBO on the observed pixels, holes refilled with g(mu(x)) "
                 "(divergence triangle Table 3's VAE row)")


@hookimpl
def coop_register_metrics(registry) -> None:
    registry.add("triangle.recovery_error", RecoveryError, RecoveryErrorOptions,
                 "Divergence triangle Table 3: recovery error on the occluded pixels of the training images")


@hookimpl
def coop_register_tables(registry) -> None:
    register_table_files(registry, "coop_triangle.tables")
