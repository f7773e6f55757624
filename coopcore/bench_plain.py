"""Hand-written training iterations: the baseline `coop bench` holds the framework to.

Each class here is the iteration of one built-in objective written the way a careful user
writes it with plain PyTorch: the networks come from the same recipe (so they are the same
modules, initialised from the same seed), the optimisers are ``torch.optim`` objects built
by hand with the recipe's numbers, and the loop is a few lines of tensors:

- the Langevin loop takes gradients with respect to the input only (``torch.autograd.grad``),
  draws its noise from an explicit generator and reads nothing back to the host;
- losses are computed as the objective computes them (same expression, same order of
  operations, so both sides can be compared parameter for parameter);
- no diagnostics: no gradient norms, no energies kept for logging, no histograms.  The losses
  are returned so the caller can read them once per iteration (as any training loop logs
  something), in one host transfer like the framework's trainer.

A plain loop supports the configurations of the packaged recipes and refuses the others with a
`UsageError` that names the option (a benchmark of a loop that silently did something else
would be worthless).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OptimizerConfig
from .errors import UsageError
from .experiment import ResolvedExperiment

__all__ = ["PLAIN_LOOPS", "PlainLoop", "make_plain_loop", "plain_optimizer"]


def plain_optimizer(module: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """``torch.optim.Adam(module.parameters(), lr=..., betas=...)`` with the recipe's numbers."""
    if cfg.name == "adam":
        return torch.optim.Adam(module.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise UsageError(f"the plain baseline loop writes Adam and SGD only; the recipe's optimiser is '{cfg.name}'")


def _refuse(what: str, why: str) -> None:
    raise UsageError(f"coop bench: the plain baseline loop does not implement {what} ({why}); "
                     "benchmark a recipe without it")


class PlainLoop:
    """One objective's iteration by hand.  Subclasses set `models` and implement `step`."""

    objective = ""

    def __init__(self, resolved: ResolvedExperiment, models: dict[str, nn.Module], device: torch.device,
                 generator: torch.Generator) -> None:
        self.resolved = resolved
        self.models = models
        self.device = device
        self.gen = generator
        self.optimizers = {role: plain_optimizer(models[role], oc) for role, oc in resolved.optimizers.items()}

    def step(self, x: Tensor, index: Tensor) -> list[Tensor]:
        """One training iteration on observed batch `x`; returns the losses to log."""
        raise NotImplementedError

    def revise(self, start: Tensor) -> Optional[Tensor]:
        """The objective's sampler alone from `start` (None: the objective has no sampler)."""
        return None

    def sampler_start(self, x: Tensor) -> Optional[Tensor]:
        """Where `revise` starts in the sampler-alone benchmark (drawn once, outside the timing)."""
        return None

    # -- the pieces every descriptor objective writes --------------------------------------
    def langevin(self, log_p: Callable[[Tensor], Tensor], y: Tensor, n_steps: int, drift: float,
                 noise_std: float) -> Tensor:
        """``y <- y + drift * grad log p(y) + noise_std * N(0, I)``, `n_steps` times."""
        for _ in range(n_steps):
            y = y.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(log_p(y).sum(), y)
            if noise_std > 0:
                y = y + drift * grad + torch.randn(y.shape, generator=self.gen, device=y.device) * noise_std
            else:
                y = y + drift * grad
        return y.detach()

    @staticmethod
    def descriptor_step(model: nn.Module, opt: torch.optim.Optimizer, x_obs: Tensor, x_syn: Tensor) -> Tensor:
        """One step on mean f(x_syn) - mean f(x_obs): two forward passes, the observed batch
        first (a batch-statistics layer sees each batch alone, as in the authors' codes)."""
        f_obs = model.score(x_obs)
        f_syn = model.score(x_syn)
        loss = f_syn.mean() - f_obs.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()


def _langevin_settings(resolved: ResolvedExperiment, role: str = "revision") -> tuple[int, float, float]:
    """(steps, drift, noise std) of a `langevin`-family sampler, refusing what the plain loop lacks."""
    comp = resolved.samplers[role]
    o = comp.options
    for name in ("clip", "metropolis"):
        if getattr(o, name, None) not in (None, False):
            _refuse(f"the sampler option {comp.key}.{name}", "the packaged recipes leave it off")
    steps = int(o.n_steps)
    drift = 0.5 * o.step_size**2
    noise = o.step_size * getattr(o, "noise_scale", 1.0) if getattr(o, "noise", True) else 0.0
    return steps, drift, noise


class PlainCoopNets(PlainLoop):
    """TPAMI Algorithm 3 with l_q = 0: G0, D1 (Langevin revision), D2, G2."""

    objective = "coopnets"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        r, o = self.resolved, self.resolved.objective.options
        if "inference" in r.samplers:
            _refuse("Langevin inference (samplers.inference, l_q > 0)", "the paper's experiments use l_q = 0")
        if o.init_noise or o.late_revision_from:
            _refuse("init_noise / late_revision_from", "the paper's MNIST settings leave them off")
        self.D, self.G = self.models["descriptor"], self.models["generator"]
        self.opt_d, self.opt_g = self.optimizers["descriptor"], self.optimizers["generator"]
        self.n_chains = o.n_chains
        self.g_steps = o.generator_steps
        self.mean_loss = o.generator_loss == "mean"
        self.steps, self.drift, self.noise = _langevin_settings(r)
        self.log_p = lambda y: -self.D.energy(y)

    def revise(self, start: Tensor) -> Tensor:
        return self.langevin(self.log_p, start, self.steps, self.drift, self.noise)

    def sampler_start(self, x: Tensor) -> Tensor:
        n = self.n_chains or x.shape[0]  # the D1 chains of one iteration
        with torch.no_grad():
            return self.G(torch.randn((n, *self.G.latent_shape), generator=self.gen, device=self.device))

    def step(self, x: Tensor, index: Tensor) -> list[Tensor]:
        n = self.n_chains or x.shape[0]
        with torch.no_grad():  # G0: X^ ~ N(0, I), Y^ = g(X^)
            z = torch.randn((n, *self.G.latent_shape), generator=self.gen, device=self.device)
            y = self.G(z)
        y = self.revise(y)  # D1
        loss_d = self.descriptor_step(self.D, self.opt_d, x, y)  # D2
        sigma = self.G.sigma
        for _ in range(self.g_steps):  # G2
            recon = self.G(z)
            if self.mean_loss:
                loss_g = (y - recon).pow(2).mean() / (2.0 * sigma**2)
            else:
                loss_g = (y - recon).pow(2).sum() / (y.shape[0] * 2.0 * sigma**2)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        return [loss_d, loss_g.detach()]


class PlainAlgorithmD(PlainLoop):
    """TPAMI Algorithm 1: persistent (or restarted) chains, Langevin revision, descriptor step."""

    objective = "algorithm_d"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        o = self.resolved.objective.options
        self.D, self.opt_d = self.models["descriptor"], self.optimizers["descriptor"]
        self.n_chains, self.persistent = o.n_chains, o.persistent
        self.steps, self.drift, self.noise = _langevin_settings(self.resolved)
        self.log_p = lambda y: -self.D.energy(y)
        self.chains: Optional[Tensor] = None

    def revise(self, start: Tensor) -> Tensor:
        return self.langevin(self.log_p, start, self.steps, self.drift, self.noise)

    def sampler_start(self, x: Tensor) -> Tensor:
        return x.clone()

    def step(self, x: Tensor, index: Tensor) -> list[Tensor]:
        n = self.n_chains or x.shape[0]
        if self.chains is None or not self.persistent:
            reps = -(-n // x.shape[0])
            self.chains = x.repeat(reps, *([1] * (x.dim() - 1)))[:n].clone()
        self.chains = self.revise(self.chains)
        return [self.descriptor_step(self.D, self.opt_d, x, self.chains)]


class PlainMultigrid(PlainLoop):
    """Gao et al. Algorithm 1 with the own 1 x 1 start: coarse-to-fine sampling, one step per grid,
    the descriptors scoring y - origin (`MultigridOptions.origin`).

    Written as a user would: block means with ``F.avg_pool2d`` and block replication with
    ``repeat_interleave``.  The framework's block mean is anchored on each block's first pixel
    (exact for constant blocks), so the two need agree only to rounding (on the digits recipe
    they agree bit for bit).
    """

    objective = "multigrid"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        o = self.resolved.objective.options
        if o.start != "own" or o.train_mask is not None or o.sizes is not None:
            _refuse("start other than 'own', train_mask or explicit sizes", "the digits recipe uses none")
        self.roles = [f"grid{k}" for k in range(1, o.n_grids + 1)]
        self.nets = [self.models[r] for r in self.roles]
        self.opts = [self.optimizers[r] for r in self.roles]
        self.factor = o.factor
        self.origin = o.origin  # the descriptors see y - origin (the digits recipe: -2)
        so = self.resolved.samplers["revision"].options
        self.steps, self.drift = so.n_steps, 0.5 * so.step_size**2
        self.noise = so.step_size if so.noise else 0.0
        self.clip = so.clip

    def _chain(self, start: Tensor) -> list[Tensor]:
        out, y, d = [], start, self.factor
        for net in self.nets:
            y = y.repeat_interleave(d, dim=-2).repeat_interleave(d, dim=-1)
            for _ in range(self.steps):
                y = y.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad((-net.energy(y - self.origin)).sum(), y)
                y = y + self.drift * grad
                if self.noise > 0:
                    y = y + torch.randn(y.shape, generator=self.gen, device=y.device) * self.noise
                if self.clip is not None:
                    y = y.clamp(self.clip[0], self.clip[1])
            y = y.detach()
            out.append(y)
        return out

    def _start(self, x: Tensor) -> Tensor:
        # Each image's own start version: block means over factor^n_grids pixels (1 x 1 for the digits).
        return F.avg_pool2d(x, kernel_size=self.factor ** len(self.nets))

    def revise(self, start: Tensor) -> Tensor:
        return self._chain(start)[-1]

    def sampler_start(self, x: Tensor) -> Tensor:
        return self._start(x)

    def step(self, x: Tensor, index: Tensor) -> list[Tensor]:
        samples = self._chain(self._start(x))
        losses = []
        for net, opt, y in zip(self.nets, self.opts, samples):
            x_k = F.avg_pool2d(x, kernel_size=x.shape[-1] // y.shape[-1]) if y.shape[-1] != x.shape[-1] else x
            losses.append(self.descriptor_step(net, opt, x_k - self.origin, y - self.origin))
        return losses


class PlainTriangle(PlainLoop):
    """Han et al. Algorithm 1 with the public code's scalings (the triangle recipes' defaults)."""

    objective = "triangle"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        o = self.resolved.objective.options
        if (o.occlusion is not None or o.sample_noise or o.posterior_sample != "shared" or o.n_latent
                or (o.ebm_steps, o.encoder_steps, o.generator_steps) != (1, 1, 1)
                or (o.kl_reduction, o.nll_reduction) != ("mean", "batch_mean") or o.grad_clip is None):
            _refuse("the triangle's non-default options", "the digits and MNIST recipes use the defaults")
        self.E, self.G, self.Q = self.models["descriptor"], self.models["generator"], self.models["encoder"]
        self.opt_e, self.opt_g, self.opt_i = (self.optimizers[r] for r in ("descriptor", "generator", "encoder"))
        self.w_r = 1.0 / (2.0 * self.G.sigma**2) if o.recon_weight == "sigma" else float(o.recon_weight)
        self.w_kl, self.w_nll, self.clip = o.kl_weight, o.nll_weight, o.grad_clip
        self.log_2pi = math.log(2.0 * math.pi)

    def _nll(self, z: Tensor, x_gen: Tensor) -> Tensor:
        mu, logvar = self.Q(x_gen)
        nll = 0.5 * ((z.view_as(mu) - mu).pow(2) * torch.exp(-logvar) + logvar + self.log_2pi)
        return nll.flatten(1).sum(1).mean()

    def _recon(self, x: Tensor, z_post: Tensor) -> Tensor:
        recon = self.G(z_post.view(z_post.shape[0], *self.G.latent_shape))
        return (x - recon).pow(2).sum() / x.shape[0]

    def step(self, x: Tensor, index: Tensor) -> list[Tensor]:
        n = x.shape[0]
        z = torch.randn((n, *self.G.latent_shape), generator=self.gen, device=self.device)
        eps = torch.randn((n, *self.Q.latent_shape), generator=self.gen, device=self.device)
        with torch.no_grad():
            x_gen = self.G(z)
        # alpha step: mean E(x) - mean E(x~)
        loss_e = self.E.energy(x).mean() - self.E.energy(x_gen).mean()
        self.opt_e.zero_grad(set_to_none=True)
        loss_e.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.E.parameters() if p.grad is not None], self.clip)
        self.opt_e.step()
        # phi step: reconstruction + KL + latent NLL of z under q(. | x~)
        mu, logvar = self.Q(x)
        z_post = mu + torch.exp(0.5 * logvar) * eps.view_as(mu)
        recon = self._recon(x, z_post)
        kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean()
        loss_i = self.w_r * recon + self.w_kl * kl + self.w_nll * self._nll(z, x_gen)
        self.opt_i.zero_grad(set_to_none=True)
        loss_i.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.Q.parameters() if p.grad is not None], self.clip)
        self.opt_i.step()
        # theta step: reconstruction from z~, energy of G(z), latent NLL through the updated Q
        z_post = z_post.detach()
        recon = self._recon(x, z_post)  # before G(z): a batch-norm generator's running stats see the same order
        x_fake = self.G(z)
        loss_g = self.w_r * recon + self.E.energy(x_fake).mean() + self.w_nll * self._nll(z, x_fake)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.G.parameters() if p.grad is not None], self.clip)
        self.opt_g.step()
        for m in (self.E, self.Q, self.G):
            m.zero_grad(set_to_none=True)
        return [loss_e.detach(), loss_i.detach(), loss_g.detach()]


class PlainCoopInit(PlainLoop):
    """CoopInit Algorithm 1 (the cooperative stage, where the coopinit recipes spend their first
    N_coop images): G1, D1 (eq. 4 Langevin on D), D2, G2."""

    objective = "coopinit"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        o = self.resolved.objective.options
        if "revision" in self.resolved.samplers or o.g_ema_kimg > 0:
            _refuse("a configured revision sampler or a generator EMA", "coopinit-digits has neither")
        self.D, self.G = self.models["descriptor"], self.models["generator"]
        self.opt_d, self.opt_g = self.optimizers["descriptor"], self.optimizers["generator"]
        self.steps, self.eta = o.langevin_steps, o.eta
        self.noise = o.noise_scale * (2.0 * o.eta) ** 0.5
        self.n_coop = o.n_coop

    def revise(self, start: Tensor) -> Tensor:
        return self.langevin(self.D.score, start, self.steps, self.eta, self.noise)

    def sampler_start(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.G(torch.randn((x.shape[0], *self.G.latent_shape), generator=self.gen, device=self.device))

    def step(self, x: Tensor, index: Tensor) -> list[Tensor]:
        n = x.shape[0]
        with torch.no_grad():
            z = torch.randn((n, *self.G.latent_shape), generator=self.gen, device=self.device)
            x_init = self.G(z)
        x_syn = self.revise(x_init)
        loss_d = self.descriptor_step(self.D, self.opt_d, x, x_syn)
        recon = self.G(z)
        loss_g = (x_syn - recon).flatten(1).pow(2).sum(1).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return [loss_d, loss_g.detach()]


PLAIN_LOOPS: dict[str, type[PlainLoop]] = {
    cls.objective: cls for cls in (PlainCoopNets, PlainAlgorithmD, PlainMultigrid, PlainTriangle, PlainCoopInit)
}


def make_plain_loop(resolved: ResolvedExperiment, models: dict[str, nn.Module], device: torch.device,
                    generator: torch.Generator) -> PlainLoop:
    """The hand-written loop of `resolved`'s objective on `models` (refuses objectives it lacks)."""
    name = resolved.objective.name
    if name not in PLAIN_LOOPS:
        raise UsageError(f"coop bench: no plain baseline loop for objective '{name}'; "
                         f"benchmarked objectives: {', '.join(PLAIN_LOOPS)}")
    return PLAIN_LOOPS[name](resolved, models, device, generator)
