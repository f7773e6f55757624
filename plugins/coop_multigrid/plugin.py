"""Entry point of the multigrid plugin (Gao et al., CVPR 2018): the per-grid descriptors, the
multi-grid Langevin sampler, the multi-grid minimal CD objective and its three baselines."""
from __future__ import annotations

from coopcore import hookimpl, preset_options
from coopcore.repro import register_table_files

from .baselines import CD1, CD1Options, PersistentCD, PersistentCDOptions, SingleGridCD, SingleGridCDOptions
from .networks import MultigridDescriptor, MultigridDescriptorOptions
from .objective import Multigrid, MultigridOptions
from .sampler import MultigridLangevin, MultigridLangevinOptions

DESCRIPTORS = {
    "multigrid.descriptor.grid1": ("Gao et al. 7.1 grid1 (4x4): 96 5x5 s2 - 128 3x3 - 256 3x3, BN+ReLU, fc 1", 1),
    "multigrid.descriptor.grid2": ("Gao et al. 7.1 grid2 (16x16): 96 5x5 s2 - 128 - 256 - 512 3x3 s1, BN+ReLU, fc 1", 2),
    "multigrid.descriptor.grid3": ("Gao et al. 7.1 grid3 (64x64): 96 5x5 s2 - 128 3x3 s2 - 256 3x3 s1, BN+ReLU, fc 1", 3),
}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace(".", "_").split("_")) + "Options"


@hookimpl
def coop_register_energy_models(registry) -> None:
    registry.add("multigrid.descriptor", MultigridDescriptor, MultigridDescriptorOptions,
                 "multigrid per-grid descriptor (grid = 1..3, variant = paper | code)")
    for name, (summary, grid) in DESCRIPTORS.items():
        registry.add(name, MultigridDescriptor,
                     preset_options(MultigridDescriptorOptions, _camel(name), summary, grid=grid), summary)


@hookimpl
def coop_register_samplers(registry) -> None:
    registry.add("multigrid_langevin", MultigridLangevin, MultigridLangevinOptions,
                 "multigrid Langevin (eq. 8): Y += (d^2/2) grad log p [+ d N(0,I)], d = 0.3, l = 30, optional clip")


@hookimpl
def coop_register_objectives(registry) -> None:
    registry.add("multigrid", Multigrid, MultigridOptions, "multi-grid minimal CD (Gao et al. Algorithm 1)")
    registry.add("multigrid.cd1", CD1, CD1Options,
                 "multigrid baseline CD1: chains start at the observed images (Gao et al. Section 7)")
    registry.add("multigrid.pcd", PersistentCD, PersistentCDOptions,
                 "multigrid baseline persistent CD: per-image chains carried across epochs (Gao et al. 5.1, 7)")
    registry.add("multigrid.single_grid", SingleGridCD, SingleGridCDOptions,
                 "multigrid baseline single-grid CD: 1x1 start up-scaled straight to the finest grid (Gao et al. 7)")


@hookimpl
def coop_register_tables(registry) -> None:
    register_table_files(registry, "coop_multigrid.tables")
