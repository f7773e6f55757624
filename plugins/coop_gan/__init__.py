"""GAN losses and objectives, and CoopInit (Zhao, Xie, Li, AAAI 2023), as a coopnets plugin.

The discriminator is the descriptor network: D(x) = descriptor.score(x), so any registered
energy model serves as a discriminator, which is how CoopInit (Algorithm 2) switches from
cooperative to adversarial learning on the same networks.  See docs/coopinit.md.
"""
