"""The registry-wide contract test: every registered energy model, generator, encoder, sampler
and objective, built from its defaults (objectives: from their `contract_example`), is checked
against its protocol by `coopcore.contract`.  A new plugin is covered without new test code.

Runs on the CPU, and on CUDA too when it is available.
"""
from __future__ import annotations

import pytest
import torch

from coopcore.contract import CONTRACT_FAMILIES, ContractViolation, check_entry, check_sampler
from coopcore.plugin_manager import load_registries

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _cases() -> list:
    regs = load_registries()
    return [
        pytest.param(fam, name, id=f"{fam}:{name}")
        for fam in CONTRACT_FAMILIES
        for name in regs.family(fam)
    ]


CASES = _cases()


def test_every_builtin_family_has_entries():
    fams = {c.values[0] for c in CASES}
    assert fams == set(CONTRACT_FAMILIES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("family", "name"), CASES)
def test_contract(registries, family, name, device):
    check_entry(registries, family, name, torch.device(device))


# -- the contract itself must be able to fail ------------------------------------------
class _LeakySampler:
    """Moves masked-out entries and writes into its init: two violations."""

    n_steps = 1

    def run(self, log_density, init, generator, mask=None):
        from coopcore import SamplerOutput

        init.add_(0.1)
        z = torch.zeros(1)
        return SamplerOutput(samples=init.clone(), energies=z, grad_norms=z)


def test_contract_catches_a_sampler_that_writes_into_its_init():
    with pytest.raises(ContractViolation, match="modified its init"):
        check_sampler(_LeakySampler(), "leaky")


class _IgnoresMask(_LeakySampler):
    def run(self, log_density, init, generator, mask=None):
        from coopcore import SamplerOutput

        z = torch.zeros(1)
        return SamplerOutput(samples=init + 0.1, energies=z, grad_norms=z)


def test_contract_catches_a_sampler_that_ignores_the_mask():
    with pytest.raises(ContractViolation, match="mask == 0 changed"):
        check_sampler(_IgnoresMask(), "ignores-mask")


def test_contract_catches_an_objective_without_an_example(registries):
    class NoExample:
        required_models = ()
        required_samplers = ()

        def __init__(self, options, parts):
            pass

        def step(self, batch, generator):
            raise AssertionError("not reached")

        samples = state_dict = load_state_dict = step

    registries.objective.add("test.no_example", NoExample, owner="test")
    with pytest.raises(ContractViolation, match="contract_example"):
        check_entry(registries, "objective", "test.no_example")


def test_contract_catches_an_objective_that_drops_its_chains(registries):
    """torchebm drops the PCD buffer from checkpoints (DESIGN lesson 6): the resume check sees it."""
    base = registries.objective.get("algorithm_d")

    class ForgetfulPCD(base.factory):
        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            return None

    registries.objective.add("test.forgetful_pcd", ForgetfulPCD, base.options, owner="test")
    with pytest.raises(ContractViolation, match="state_dict\\(\\) misses something"):
        check_entry(registries, "objective", "test.forgetful_pcd")
