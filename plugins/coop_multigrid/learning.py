"""The parameter update shared by multi-grid CD and its baselines (Gao et al., eq. 9).

L'(theta) ~ mean_i df(Y_i)/dtheta - mean_i df(Y~_i)/dtheta, so gradient ASCENT on the
log-likelihood is gradient descent on  loss = mean f(Y~) - mean f(Y).  The observed and the
synthesised batches are scored in two separate forward passes, as the authors' code does, so a
descriptor with batch-statistics batch normalisation normalises each by its own statistics.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def grad_norm(module: nn.Module) -> Tensor:
    """L2 norm of all parameter gradients of `module` (0 when it has none), as a device tensor."""
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.cat(grads).norm()


def cd_update(
    model: nn.Module, optimizer: torch.optim.Optimizer, y_obs: Tensor, y_syn: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One optimiser step on mean f(y_syn) - mean f(y_obs); returns (loss, f_obs, f_syn), detached."""
    f_obs = model.score(y_obs)
    f_syn = model.score(y_syn.detach())
    loss = f_syn.mean() - f_obs.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), f_obs.detach(), f_syn.detach()
