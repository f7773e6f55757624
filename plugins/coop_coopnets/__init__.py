"""Built-in CoopNets plugin: descriptors, generators, Langevin samplers and the CoopNets,
Algorithm D and Algorithm G objectives of Xie et al., TPAMI (the `coopnets` paper)."""
