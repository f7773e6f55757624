"""The divergence triangle (Han, Nijkamp, Zhou, Pang, Zhu, Wu, TPAMI 2020) as a coopnets plugin:
the MNIST networks of the paper's Table 6 and the `triangle` objective (Algorithm 1)."""
