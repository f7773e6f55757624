"""Parameter updates shared by the learning algorithms.

`contrastive_update` is the descriptor's maximum-likelihood step of every cooperative /
contrastive-divergence algorithm in the project (TPAMI eq. 8 step D2, multi-grid CD eq. 9,
CoopInit eq. 3): the log-likelihood gradient is estimated by
``mean_i df(Y_i)/dtheta - mean_i df(Y~_i)/dtheta`` (observed minus synthesised), so gradient
ascent on the likelihood is gradient descent on ``loss = mean f(Y~) - mean f(Y)``, i.e. on the
mean energy of the observed examples minus that of the synthesised ones (with a flat
reference).  `grad_norm` is the matching diagnostic.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from . import accel
from .protocols import EnergyModel

__all__ = ["contrastive_update", "grad_norm"]


def contrastive_update(
    model: EnergyModel, optimizer: torch.optim.Optimizer, x_obs: Tensor, x_syn: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """One optimiser step on ``mean f(x_syn) - mean f(x_obs)``, with f = ``model.score``.

    The observed and the synthesised batches are scored in two separate forward passes (so a
    network with batch-statistics normalisation normalises each by its own statistics, as the
    authors' codes do); `x_syn` is detached, so no gradient reaches the sampler's inputs.

    Args:
        model: The descriptor f; only its ``score(x) -> [B]`` is used.
        optimizer: The optimiser of `model`'s parameters; its gradients are reset
            (``set_to_none``) before the backward pass.
        x_obs: Observed examples ``[B, ...]``.
        x_syn: Synthesised examples ``[B', ...]`` (e.g. the Langevin-revised samples).

    Returns:
        ``(loss, f(x_obs) [B], f(x_syn) [B'])``, all detached device tensors.

    Under ``run.precision = "bf16"`` (`coopcore.accel`) both passes run under the bf16 autocast
    the objective's step is wrapped in (`accel.wrap_objective_step`), and the scores are cast to
    float32 before they are averaged; parameters, their gradients and the optimiser state stay
    float32.
    """
    f_obs = model.score(x_obs)
    f_syn = model.score(x_syn.detach())
    if accel.current().bf16:
        f_obs, f_syn = f_obs.float(), f_syn.float()
    loss = f_syn.mean() - f_obs.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), f_obs.detach(), f_syn.detach()


def grad_norm(module: nn.Module) -> Tensor:
    """The L2 norm of all parameter gradients of `module`, as a device tensor.

    Args:
        module: Any module; parameters without a gradient are skipped.

    Returns:
        A 0-dim tensor: ``sqrt(sum over parameters of ||p.grad||^2)``, or 0 when no parameter
        has a gradient (on the device of the first parameter).
    """
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros((), device=next(module.parameters()).device)
    return torch.cat(grads).norm()
