"""Entry point of the CoopNets plugin: registers every architecture of the paper under its
name with the paper's settings as option defaults, the Langevin samplers, the three
objectives and the table specs under tables/."""
from __future__ import annotations

from coopcore import hookimpl, preset_options
from coopcore.repro import register_table_files

from .networks import ConvDescriptor, ConvDescriptorOptions, ConvGenerator, ConvGeneratorOptions
from .networks3d import (
    SpatialTemporalDescriptor,
    SpatialTemporalDescriptorOptions,
    SpatialTemporalGenerator,
    SpatialTemporalGeneratorOptions,
)
from .objectives import AlgorithmD, AlgorithmDOptions, AlgorithmG, AlgorithmGOptions, CoopNets, CoopNetsOptions
from .samplers import Langevin, LangevinInferenceOptions, LangevinOptions, LangevinRevisionOptions
from .texture import TextureDescriptor, TextureDescriptorOptions, TextureGenerator, TextureGeneratorOptions

# name -> (summary, option defaults).  Defaults follow the authors' code where recipes.md
# records it (LeakyReLU 0.2, init N(0, 0.01)); the paper's ReLU / N(0, 0.001) are options.
DESCRIPTORS = {
    "coopnets.descriptor.mnist": (
        "TPAMI 4.4 MNIST descriptor: 4x4 s2 convs 64-128-256, fc 100",
        dict(input_shape=(1, 28, 28), channels=(64, 128, 256), kernels=(4, 4, 4), strides=(2, 2, 2), fc_outputs=100),
    ),
    "coopnets.descriptor.scene": (
        "TPAMI 4.2-4.3 object/scene descriptor (64x64): 5x5 s2 64, 3x3 s2 128, 3x3 s1 256, fc 100",
        dict(input_shape=(3, 64, 64), channels=(64, 128, 256), kernels=(5, 3, 3), strides=(2, 2, 1), fc_outputs=100),
    ),
    "coopnets.descriptor.aligned_object": (
        "TPAMI 4.2 aligned-object descriptor (64x64): 4x4 s2 100, 2x2 s1 64, fc 1",
        dict(input_shape=(3, 64, 64), channels=(100, 64), kernels=(4, 2), strides=(2, 1), fc_outputs=1),
    ),
    "coopnets.descriptor.cifar": (
        "TPAMI 4.5 CIFAR-10 descriptor (32x32): 5x5 64, 3x3 128, 3x3 256, strides 2-2-1 (code; paper 2-2-2), fc 100",
        dict(input_shape=(3, 32, 32), channels=(64, 128, 256), kernels=(5, 3, 3), strides=(2, 2, 1), fc_outputs=100),
    ),
    "coopnets.descriptor.celeba128": (
        "TPAMI 4.5 CelebA descriptor (128x128): 5x5 s2 64, 3x3 s2 128, 3x3 s1 256, fc 100",
        dict(input_shape=(3, 128, 128), channels=(64, 128, 256), kernels=(5, 3, 3), strides=(2, 2, 1), fc_outputs=100),
    ),
    "coopnets.descriptor.lsun256": (
        "TPAMI 4.5 LSUN bedroom descriptor (256x256): 64-128-256-512-512, kernels 5-5-5-5-3, stride 2, fc 10",
        dict(input_shape=(3, 256, 256), channels=(64, 128, 256, 512, 512), kernels=(5, 5, 5, 5, 3),
             strides=(2, 2, 2, 2, 2), fc_outputs=10),
    ),
    "coopnets.descriptor.inpainting": (
        "TPAMI 4.6 face-completion descriptor (64x64): 5x5 s2 96-128-256, fc 50",
        dict(input_shape=(3, 64, 64), channels=(96, 128, 256), kernels=(5, 5, 5), strides=(2, 2, 2), fc_outputs=50),
    ),
}

GENERATORS = {
    "coopnets.generator.mnist": (
        "TPAMI 4.4 MNIST generator (code): z100 -> 4x4x512 -> 7x7x256 -> 14x14x128 -> 28x28x1, 4x4 kernels",
        dict(latent_dim=100, out_channels=1, sizes=(4, 7, 14, 28), channels=(512, 256, 128), kernels=(4, 4, 4, 4)),
    ),
    "coopnets.generator.scene": (
        "TPAMI 4.2-4.3 scene/object generator (DCGAN-like, 64x64): 4x4x512 -> 256 -> 128 -> 64 -> 3",
        dict(latent_dim=100, out_channels=3, sizes=(4, 8, 16, 32, 64), channels=(512, 256, 128, 64),
             kernels=(4, 5, 5, 5, 5)),
    ),
    "coopnets.generator.cifar": (
        "TPAMI 4.5 CIFAR-10 generator (32x32): 4x4x256 -> 128 -> 64 -> 3 (set fc_units for the paper's FC under z)",
        dict(latent_dim=100, out_channels=3, sizes=(4, 8, 16, 32), channels=(256, 128, 64), kernels=(4, 5, 5, 5)),
    ),
    "coopnets.generator.celeba128": (
        "TPAMI 4.5 CelebA generator (128x128): 512-256-128-64-3, kernels 4-5-5-5-5, up-sampling 1-2-4-2-2",
        dict(latent_dim=100, out_channels=3, sizes=(4, 8, 32, 64, 128), channels=(512, 256, 128, 64),
             kernels=(4, 5, 5, 5, 5)),
    ),
    "coopnets.generator.lsun256": (
        "TPAMI 4.5 LSUN generator (256x256): FC under z, 512-256-128-64-3, kernels 16-5-5-5-5, up 1-2-2-2-2",
        dict(latent_dim=100, out_channels=3, fc_units=100, sizes=(16, 32, 64, 128, 256), channels=(512, 256, 128, 64),
             kernels=(16, 5, 5, 5, 5)),
    ),
}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace(".", "_").split("_")) + "Options"


@hookimpl
def coop_register_energy_models(registry) -> None:
    registry.add("coopnets.descriptor", ConvDescriptor, ConvDescriptorOptions,
                 "configurable bottom-up ConvNet descriptor (channels/kernels/strides lists)")
    for name, (summary, defaults) in DESCRIPTORS.items():
        registry.add(name, ConvDescriptor, preset_options(ConvDescriptorOptions, _camel(name), summary, **defaults), summary)
    registry.add("coopnets.descriptor.spatial_temporal", SpatialTemporalDescriptor, SpatialTemporalDescriptorOptions,
                 "TPAMI 4.7 spatial-temporal descriptor (clips [3, 64, 128, 128]): 5x5x5 s2 120, "
                 "spatially fully connected 30 (t5 s2), 1x1x5 s2 10, f = sum")
    registry.add("coopnets.descriptor.texture", TextureDescriptor, TextureDescriptorOptions,
                 "TPAMI 4.1 texture descriptor (224x224): 15x15 s3 100, 9x9 70, 7x7 30, f = sum over positions")


@hookimpl
def coop_register_generators(registry) -> None:
    registry.add("coopnets.generator", ConvGenerator, ConvGeneratorOptions,
                 "configurable top-down ConvNet generator (sizes/channels/kernels lists)")
    for name, (summary, defaults) in GENERATORS.items():
        registry.add(name, ConvGenerator, preset_options(ConvGeneratorOptions, _camel(name), summary, **defaults), summary)
    registry.add("coopnets.generator.spatial_temporal", SpatialTemporalGenerator, SpatialTemporalGeneratorOptions,
                 "TPAMI 4.7 spatial-temporal generator: z 5x10x1x1 -> 1x1x5 256 -> spatially full 128 -> "
                 "5x5x5 up 2 64 -> 5x5x2 up (2,2,1) 3, clips [3, 64, 128, 128]")
    registry.add("coopnets.generator.texture", TextureGenerator, TextureGeneratorOptions,
                 "TPAMI 4.1 texture generator: 7x7 latent map, five 5x5 transposed convs up 2 -> 224x224")


@hookimpl
def coop_register_samplers(registry) -> None:
    registry.add("langevin", Langevin, LangevinOptions, "Langevin dynamics on any log-density (eq. 7 / eq. 15 form)")
    registry.add("langevin_revision", Langevin, LangevinRevisionOptions,
                 "Langevin revision of the descriptor, TPAMI eq. 7 (delta 0.002, 10 steps)")
    registry.add("langevin_inference", Langevin, LangevinInferenceOptions,
                 "Langevin inference of generator latents, TPAMI eq. 15")


@hookimpl
def coop_register_objectives(registry) -> None:
    registry.add("coopnets", CoopNets, CoopNetsOptions, "CoopNets, TPAMI Algorithm 3 (MCMC teaching)")
    registry.add("algorithm_d", AlgorithmD, AlgorithmDOptions,
                 "TPAMI Algorithm D: descriptor by persistent CD, chains from data")
    registry.add("algorithm_g", AlgorithmG, AlgorithmGOptions,
                 "TPAMI Algorithm G: alternating back-propagation with per-example latents")


@hookimpl
def coop_register_tables(registry) -> None:
    register_table_files(registry, "coop_coopnets.tables")
