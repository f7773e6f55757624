"""The component families: the one table that hook names, registries, model lookup and the
contract checks are derived from.

Each `Family` names its registry (``registries.<name>``), the plugin hook that fills it
(declared in `coopcore.hookspecs.CoopHookSpecs`, whose docstring is the hook's documentation;
a mismatch between the table and the declared hooks fails at import), what a factory class and
a built object must look like, whether its entries are models (energy models, generators and
encoders share one namespace: a recipe names a model without its family), and the
`coopcore.contract` function that checks an entry's behaviour.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Family:
    """One component family.

    Attributes:
        name: the family and its registry's attribute on `Registries` (``registries.sampler``).
        hook: the plugin hook that receives this family's registry.
        protocol: ``"module:attribute"`` of the class every built object must be an instance of
            (imported on first use, so the table has no import cycles).
        module: built objects (and factory classes) must be `torch.nn.Module`s.
        required: attributes a factory that is a class must have (None: not checked).
        is_model: a model family (``[models.<role>]`` in recipes); model names are unique
            across all model families.
        contract: the name of the `coopcore.contract` function that checks an entry (None: no
            behavioural contract).  It is called as ``check(obj, who, device)`` on the object
            built from the entry's default options, or as ``check(registries, name, device)``
            when `contract_builds` is True (objectives, built from their ``contract_example``).
        contract_builds: the contract function builds the entry itself (see `contract`).
    """

    name: str
    hook: str
    protocol: str
    module: bool = False
    required: Optional[tuple[str, ...]] = None
    is_model: bool = False
    contract: Optional[str] = None
    contract_builds: bool = False

    @property
    def protocol_class(self) -> type:
        """The class named by `protocol`."""
        module, _, attr = self.protocol.partition(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def summary(self) -> str:
        """The first line of the hook's docstring."""
        from .hookspecs import CoopHookSpecs

        doc = (getattr(CoopHookSpecs, self.hook).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def check_factory(self, factory: Any) -> Optional[str]:
        """What is wrong with `factory` as a factory of this family (None: nothing visible).

        Only classes are inspected; a function's result is checked by `check_object`."""
        if not isinstance(factory, type):
            return None
        if self.module:
            from torch import nn

            if not issubclass(factory, nn.Module):
                return f"{factory.__name__} is not a torch.nn.Module subclass"
        missing = [a for a in (self.required or ()) if not hasattr(factory, a)]
        if missing:
            return f"{factory.__name__} lacks {', '.join(missing)}"
        return None

    def check_object(self, obj: Any) -> Optional[str]:
        """What is wrong with `obj` as a built object of this family (None: it fits)."""
        if self.module:
            from torch import nn

            if not isinstance(obj, nn.Module):
                return f"{type(obj).__name__} is not a torch.nn.Module"
        protocol = self.protocol_class
        if not isinstance(obj, protocol):
            return f"{type(obj).__name__} does not implement {protocol.__name__}"
        return None


FAMILIES: tuple[Family, ...] = (
    Family("energy", "coop_register_energy_models", "coopcore.protocols:EnergyModel", module=True,
           required=("score", "energy"), is_model=True, contract="check_energy_model"),
    Family("generator", "coop_register_generators", "coopcore.protocols:Generator", module=True,
           required=("sample_latent", "forward"), is_model=True, contract="check_generator"),
    Family("encoder", "coop_register_encoders", "coopcore.protocols:Encoder", module=True,
           required=("forward",), is_model=True, contract="check_encoder"),
    Family("sampler", "coop_register_samplers", "coopcore.protocols:Sampler",
           required=("run",), contract="check_sampler"),
    Family("objective", "coop_register_objectives", "coopcore.protocols:Objective",
           required=("step", "samples", "state_dict"), contract="check_objective", contract_builds=True),
    Family("dataset", "coop_register_datasets", "coopcore.data:ImageDataset", required=("__len__",)),
    Family("metric", "coop_register_metrics", "coopcore.metrics:Metric", required=("compute",)),
    Family("table", "coop_register_tables", "coopcore.repro:TableSpec"),
)

FAMILY_NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)
#: the families a recipe's ``[models.<role>]`` names; their entry names share one namespace.
MODEL_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.is_model)
#: the families with a behavioural contract in `coopcore.contract`.
CONTRACT_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILIES if f.contract is not None)

_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}


def family(name: str) -> Family:
    """The family called `name` (KeyError naming the known families otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown family '{name}'; families: {', '.join(FAMILY_NAMES)}") from None


def _check_table() -> None:
    for attr in ("name", "hook"):
        values = [getattr(f, attr) for f in FAMILIES]
        if len(set(values)) != len(values):
            raise RuntimeError(f"coopcore.families: duplicate family {attr}s in FAMILIES: {values}")


_check_table()

__all__ = ["CONTRACT_FAMILIES", "FAMILIES", "FAMILY_NAMES", "MODEL_FAMILIES", "Family", "family"]
