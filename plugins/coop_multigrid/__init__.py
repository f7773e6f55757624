"""Multi-grid minimal contrastive divergence (Gao, Lu, Zhou, Zhu, Wu, CVPR 2018) as a coopnets plugin."""
