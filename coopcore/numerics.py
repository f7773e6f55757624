"""Portable numerics: the same float results on every x86-64 CPU, for golden numbers.

PyTorch's CPU kernels pick their code path by the processor: ATen's vectorised kernels by the
widest instruction set present (AVX-512 or AVX2), MKL's matrix products by its own dispatch,
oneDNN's convolutions by a just-in-time compiler tuned to the machine.  Each path rounds
differently, and a few dozen training iterations amplify a last-bit difference into a different
run: the smoke-scale tables of this project moved by up to 60% between an AVX2 and an AVX-512
machine.  With ``COOP_PORTABLE_NUMERICS=1`` in the environment coopnets:

- sets ``ATEN_CPU_CAPABILITY=default`` (ATen's generic kernels) and ``MKL_CBWR=COMPATIBLE``
  (MKL's conditional numerical reproducibility: one code path on Intel and AMD alike) unless
  they are set already.  Both are read when torch first needs them, so they take effect only
  when set before torch runs its first kernel: export them in the shell (the test script does)
  or set the variable before importing torch;
- turns oneDNN off (convolutions then go through ATen's im2col and MKL).

Results then depend on the torch build, the thread count and the operating system's maths
library only.  The price is speed (the golden tests run about 1.7x longer); GPU runs are not
affected.  `portable_numerics_status` says whether a process really runs this way.
"""
from __future__ import annotations

import os

__all__ = ["PORTABLE_ENV", "portable_numerics_requested", "apply_portable_numerics", "portable_numerics_status"]

PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def portable_numerics_requested() -> bool:
    """Whether ``COOP_PORTABLE_NUMERICS`` asks for portable numerics (1, true, yes)."""
    return os.environ.get("COOP_PORTABLE_NUMERICS", "").strip().lower() in ("1", "true", "yes")


def apply_portable_numerics() -> None:
    """Set the environment and torch flags of portable numerics when requested (idempotent)."""
    if not portable_numerics_requested():
        return
    for key, value in PORTABLE_ENV.items():
        os.environ.setdefault(key, value)
    import torch

    torch.backends.mkldnn.enabled = False


def portable_numerics_status() -> tuple[bool, str]:
    """(True, "") when this process computes portably, else (False, what is off and why)."""
    import torch

    problems = []
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT":
        problems.append(f"ATen runs its {capability} kernels (ATEN_CPU_CAPABILITY=default was not set before "
                        "torch started)")
    if os.environ.get("MKL_CBWR", "").upper() != "COMPATIBLE":
        problems.append("MKL_CBWR is not COMPATIBLE")
    if torch.backends.mkldnn.enabled and torch.backends.mkldnn.is_available():
        problems.append("oneDNN is on")
    return (not problems, "; ".join(problems))
