"""Entry point of the GAN + CoopInit plugin.

Objectives: `gan` (NS / hinge / WGAN / WGAN-GP, lazy R1, generator EMA, ADA, SN / zCR),
`coopinit.coop` (CoopInit Algorithm 1), `coopinit` (Algorithm 2: cooperative stage, then
adversarial), `cut` and `coopinit.cut` (contrastive unpaired translation, Table 4).
Networks: DCGAN pairs for 32x32 and 64x64, the StyleGAN2 pair of CoopInit's tables (optionally
class-conditional), BigGAN for 32 and 64 pixels, CUT's ResNet generator and PatchGAN
discriminator, MLPs for 2-D toys.  Data: `ring_of_gaussians` (Figure 1's toy) and its metric
`gan.ring_modes`.  Tables: the twelve CoopInit table specs in `coop_gan/tables/`.
"""
from __future__ import annotations

from coopcore import hookimpl, preset_options
from coopcore.repro import register_table_files

from .biggan import register_biggan_discriminators, register_biggan_generators
from .coopinit import CoopInit, CoopInitCoop, CoopInitOptions, CoopOptions
from .cut import register_cut_energy_models, register_cut_generators, register_cut_objectives
from .dcgan import DCGANDiscriminator, DCGANDiscriminatorOptions, DCGANGenerator, DCGANGeneratorOptions
from .mlp import MLPDiscriminator, MLPDiscriminatorOptions, MLPGenerator, MLPGeneratorOptions
from .objective import Gan, GanOptions
from .ring import RingModes, RingModesOptions, RingOptions, ring_of_gaussians
from .stylegan2 import (
    StyleGAN2Discriminator,
    StyleGAN2DiscriminatorOptions,
    StyleGAN2Generator,
    StyleGAN2GeneratorOptions,
)

DCGAN32_G = "DCGAN generator 32x32: z100 -> 4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x3, BN + ReLU, tanh"
DCGAN64_G = "DCGAN generator 64x64: z100 -> 4x4x512 -> 256 -> 128 -> 64 -> 64x64x3, BN + ReLU, tanh"
DCGAN32_D = "DCGAN discriminator 32x32: 4x4 s2 convs 64-128-256, LeakyReLU 0.2, conv 4x4 to one logit"
DCGAN64_D = "DCGAN discriminator 64x64: 4x4 s2 convs 64-128-256-512, LeakyReLU 0.2, conv 4x4 to one logit"


@hookimpl
def coop_register_energy_models(registry) -> None:
    registry.add("gan.discriminator.mlp", MLPDiscriminator, MLPDiscriminatorOptions,
                 "MLP discriminator/descriptor for 2-D toys: 3 hidden layers of 128, ReLU, one logit")
    registry.add("gan.discriminator.dcgan", DCGANDiscriminator, DCGANDiscriminatorOptions,
                 "configurable DCGAN discriminator (4x4 s2 convs, LeakyReLU 0.2, one logit)")
    registry.add("gan.discriminator.dcgan32", DCGANDiscriminator,
                 preset_options(DCGANDiscriminatorOptions, "DCGAN32DiscriminatorOptions", DCGAN32_D), DCGAN32_D)
    registry.add("gan.discriminator.dcgan64", DCGANDiscriminator,
                 preset_options(DCGANDiscriminatorOptions, "DCGAN64DiscriminatorOptions", DCGAN64_D,
                                input_shape=(3, 64, 64), channels=(64, 128, 256, 512)), DCGAN64_D)
    registry.add("coopinit.discriminator.stylegan2", StyleGAN2Discriminator, StyleGAN2DiscriminatorOptions,
                 "StyleGAN2 discriminator (orig | skip | resnet, minibatch std); StyleGAN2-ADA cifar defaults")
    register_cut_energy_models(registry)
    register_biggan_discriminators(registry)


@hookimpl
def coop_register_generators(registry) -> None:
    registry.add("gan.generator.mlp", MLPGenerator, MLPGeneratorOptions,
                 "MLP generator for 2-D toys: 3 hidden layers of 128, ReLU, linear output")
    registry.add("gan.generator.dcgan", DCGANGenerator, DCGANGeneratorOptions,
                 "configurable DCGAN generator (transposed convs, BN + ReLU, tanh)")
    registry.add("gan.generator.dcgan32", DCGANGenerator,
                 preset_options(DCGANGeneratorOptions, "DCGAN32GeneratorOptions", DCGAN32_G), DCGAN32_G)
    registry.add("gan.generator.dcgan64", DCGANGenerator,
                 preset_options(DCGANGeneratorOptions, "DCGAN64GeneratorOptions", DCGAN64_G,
                                output_shape=(3, 64, 64), channels=(512, 256, 128, 64)), DCGAN64_G)
    registry.add("coopinit.generator.stylegan2", StyleGAN2Generator, StyleGAN2GeneratorOptions,
                 "StyleGAN2 generator (mapping, modulated convs, noise, skip toRGB); StyleGAN2-ADA cifar defaults")
    register_cut_generators(registry)
    register_biggan_generators(registry)


@hookimpl
def coop_register_objectives(registry) -> None:
    registry.add("gan", Gan, GanOptions,
                 "GAN training, descriptor as discriminator: ns | hinge | wgan | wgan_gp, lazy R1, generator EMA")
    registry.add("coopinit.coop", CoopInitCoop, CoopOptions,
                 "CoopInit Algorithm 1: cooperative learning (Langevin eq. 4, MCMC teaching)")
    registry.add("coopinit", CoopInit, CoopInitOptions,
                 "CoopInit Algorithm 2: Algorithm 1 for n_coop images, then adversarial training")
    register_cut_objectives(registry)


@hookimpl
def coop_register_datasets(registry) -> None:
    registry.add("ring_of_gaussians", ring_of_gaussians, RingOptions,
                 "2-D mixture of Gaussians on a ring (CoopInit Figure 1), seeded")


@hookimpl
def coop_register_metrics(registry) -> None:
    registry.add("gan.ring_modes", RingModes, RingModesOptions,
                 "modes covered / high-quality fraction of 2-D samples on the ring of Gaussians")


@hookimpl
def coop_register_tables(registry) -> None:
    register_table_files(registry, "coop_gan.tables")
