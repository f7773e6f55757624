"""GAN losses (non-saturating, hinge, WGAN, WGAN-GP, R1) and a `gan` objective as a coopnets
plugin.  The discriminator is the descriptor network: D(x) = descriptor.score(x), so any
registered energy model (e.g. the CoopNets descriptors) serves as a discriminator, which is how
CoopInit (Algorithm 2) switches from cooperative to adversarial learning on the same networks."""
