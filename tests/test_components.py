"""Protocol checks and the paper architectures' sizes."""
from __future__ import annotations

import torch

from coopcore import Encoder
from coopcore.plugin_manager import load_registries

REG = load_registries()


# The protocol loop over every registered part lives in tests/test_contract.py.


def test_encoder_protocol_is_checkable():
    class Enc(torch.nn.Module):
        input_shape = (4,)
        latent_shape = (2,)

        def forward(self, x):
            return x[:, :2], x[:, 2:4]

    class NoInputShape(torch.nn.Module):
        latent_shape = (2,)

        def forward(self, x):
            return x[:, :2], x[:, 2:4]

    assert isinstance(Enc(), Encoder)
    assert not isinstance(NoInputShape(), Encoder)


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
    for m in g.net:
        x = m(x)
        if isinstance(m, torch.nn.ConvTranspose2d):
            chans.append((m.out_channels, x.shape[-1]))
    assert chans == [(512, 4), (256, 7), (128, 14), (1, 28)]
