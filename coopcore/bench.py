"""`coop bench`: the framework's hot loops against a plain eager loop, in one process.

The baseline is written the way the papers' public code writes Langevin revision: the input
is a leaf that requires grad, the energy is back-propagated with `.backward()` (so every
parameter's gradient is computed and accumulated too), the noise comes from the global RNG,
and the energy is read with `.item()` every step for logging (a host sync per step).  The
framework's sampler differentiates with respect to the input only and reads nothing back.
Both run the same descriptor, batch and number of steps; the report gives each time and the
ratio measured in the same run.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def eager_langevin(descriptor: torch.nn.Module, y0: torch.Tensor, steps: int, delta: float) -> tuple[torch.Tensor, list[float]]:
    """Langevin revision as the authors' ports write it (the baseline)."""
    s2 = descriptor.reference_std**2
    y = y0.clone()
    energies = []
    for _ in range(steps):
        y = y.detach().requires_grad_(True)
        energy = (y.pow(2).sum() / (2 * s2) - descriptor.score(y).sum())
        energy.backward()
        energies.append(energy.item() / y.shape[0])
        y = y - 0.5 * delta**2 * y.grad + delta * torch.randn_like(y)
    descriptor.zero_grad(set_to_none=True)
    return y.detach(), energies


def run_bench(device: torch.device, batch: int = 100, steps: int = 10, repeats: int = 5,
              descriptor_name: str = "coopnets.descriptor.mnist", registries: Any = None) -> dict[str, Any]:
    from .plugin_manager import get_registries

    reg = registries or get_registries()
    torch.manual_seed(0)
    descriptor = reg.energy.create(descriptor_name).to(device)
    sampler_entry = reg.sampler.get("langevin_revision")
    sampler = reg.sampler.create("langevin_revision", sampler_entry.options(n_steps=steps, step_size=0.002))
    y0 = torch.randn(batch, *descriptor.input_shape, device=device) * 0.1
    gen = torch.Generator(device=device).manual_seed(0)

    def framework() -> None:
        sampler.run(lambda y: -descriptor.energy(y), y0, gen)

    def baseline() -> None:
        eager_langevin(descriptor, y0, steps, 0.002)

    # Interleave the two so drift in machine load affects both alike.
    t_fw, t_base = [], []
    for _ in range(repeats):
        t_fw += _time(framework, device, 1, warmup=1 if not t_fw else 0)
        t_base += _time(baseline, device, 1, warmup=1 if not t_base else 0)
    med_fw, med_base = statistics.median(t_fw), statistics.median(t_base)
    return {
        "benchmark": "langevin_revision",
        "descriptor": descriptor_name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "framework_s_median": med_fw,
        "baseline_s_median": med_base,
        "speedup_baseline_over_framework": med_base / med_fw,
    }
