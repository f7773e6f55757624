"""Entry point of the GAN plugin: the `gan` objective (NS / hinge / WGAN losses, WGAN-GP and
lazy R1), with the descriptor network as discriminator."""
from __future__ import annotations

from coopcore import hookimpl

from .objective import Gan, GanOptions


@hookimpl
def coop_register_objectives(registry) -> None:
    registry.add("gan", Gan, GanOptions,
                 "GAN training, descriptor as discriminator: ns | hinge | wgan loss, WGAN-GP, lazy R1")
