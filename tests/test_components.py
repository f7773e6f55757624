"""Protocol checks and the paper architectures' sizes."""
from __future__ import annotations

import pytest
import torch

from coopcore import RegistryError
from coopcore.contract import ContractViolation, check_encoder
from coopcore.plugin_manager import Registries, load_registries

REG = load_registries()


# The protocol loop over every registered part lives in tests/test_contract.py.


class _Enc(torch.nn.Module):
    input_shape = (4,)
    latent_shape = (2,)

    def __init__(self, options=None) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).chunk(2, dim=1)


class _NoInputShape(torch.nn.Module):
    latent_shape = (2,)

    def __init__(self, options=None) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).chunk(2, dim=1)


def test_encoder_registry_accepts_an_encoder_and_rejects_one_without_input_shape():
    """What a registered encoder factory builds is checked against the Encoder protocol (an
    object without `input_shape` is refused naming it), and so is a non-module class."""
    regs = Registries()
    regs.encoder.add("ok", _Enc, owner="t")
    regs.encoder.add("no_input_shape", _NoInputShape, owner="t")
    enc = regs.encoder.create("ok")
    check_encoder(enc)  # and it passes the encoder contract
    with pytest.raises(RegistryError, match=r"encoder 'no_input_shape' \(from 't'\).*does not implement Encoder"):
        regs.encoder.create("no_input_shape")
    with pytest.raises(ContractViolation, match="Encoder protocol"):
        check_encoder(_NoInputShape())

    class NotAModule:
        input_shape, latent_shape = (4,), (2,)

        def forward(self, x):
            return x, x

    with pytest.raises(RegistryError, match="not a torch.nn.Module subclass"):
        regs.encoder.add("plain", NotAModule, owner="t")
    assert list(regs.encoder) == ["no_input_shape", "ok"]


def test_paper_architecture_shapes():
    """Spot checks against the sizes the paper and code state."""
    d = REG.energy.create("coopnets.descriptor.mnist")
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    h = torch.zeros(1, 1, 28, 28)
    sizes = []
    for m in d.features:
        h = m(h)
        if isinstance(m, torch.nn.Conv2d):
            sizes.append(h.shape[-1])
    assert [c.out_channels for c in convs] == [64, 128, 256] and sizes == [14, 7, 4]  # TF 'SAME'
    assert d.fc.out_features == 100
    g = REG.generator.create("coopnets.generator.mnist")
    chans, z = [], torch.zeros(2, 100)
    x = g.fc(z).view(2, -1, 1, 1)
    from coop_coopnets.layers import CroppedConvTranspose

    for m in g.net:
        x = m(x)
        if isinstance(m, CroppedConvTranspose):
            chans.append((m.conv.out_channels, x.shape[-1]))
    assert chans == [(512, 4), (256, 7), (128, 14), (1, 28)]
