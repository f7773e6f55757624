"""The divergence triangle (Han, Nijkamp, Fang, Hill, Zhu, Wu) as a coopnets plugin: the networks
of Tables 4-6, the `triangle` objective (Algorithm 1, learning from occluded images of Section
4.4) and the Table 3 recovery-error metric."""
