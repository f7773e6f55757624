"""Training on several processes (one per GPU, or several on a CPU) launched by ``torchrun``.

``torchrun --nproc-per-node N -m coopcore.cli train RECIPE ...`` (or ``coop train --nproc N
RECIPE ...``, which starts the N processes itself) runs the same training loop in N processes
that cooperate like `torch.nn.parallel.DistributedDataParallel` (DDP); docs/distributed.md
states the design and the exact guarantees.  In short:

- ``data.batch_size`` is per process: iteration t's global batch is the single-process batch of
  size ``batch_size * N`` of the same seed, and rank r takes its r-th slice.
- Gradients are averaged over the ranks at the end of every backward pass that reaches a
  model's parameters (bucketed all-reduce, DDP's semantics), so every optimiser, clipping
  and gradient-norm diagnostic sees the gradient of the combined batch's mean loss, and the
  parameters stay identical on every rank without wrapping any module.
- Each rank draws from its own random stream derived from the seed (rank 0's equals the
  single-process stream); a checkpoint holds every rank's streams and objective state.
- Per-example state an objective declares (``per_example_state()``) is kept identical on
  every rank by exchanging the rows of each iteration's batch.

Nothing here runs in a single-process run: the trainer takes the single-process path whenever
it has no `Distributed`.
"""
from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
import time
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import UsageError

__all__ = ["Distributed", "GradientAverager", "rank_seed", "launch_local"]

# Collectives wait this long for a slow rank (e.g. rank 0 evaluating a metric) before failing.
DEFAULT_TIMEOUT_S = 3600
# Gradient buckets: big enough to amortise a collective's latency, small enough to bound memory.
BUCKET_BYTES = 25 * 1024 * 1024


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random streams.

    Rank 0 keeps the run's seed (so it draws what a single process would); rank r > 0 gets a
    number mixed from (seed, r) by NumPy's SeedSequence, so the streams neither coincide nor
    overlap with another run's rank 0 in any simple way."""
    if rank == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(rank)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) % (2**63 - 1)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise UsageError(f"environment variable {name}={raw!r} is not an integer (torchrun sets it)") from None


class GradientAverager:
    """Averages the gradients of `params` over all ranks at the end of each backward pass.

    A post-accumulate-grad hook records which parameters received a gradient and queues one
    callback on the autograd engine (as DDP does); the callback all-reduces those gradients in
    buckets and divides by the world size.  Because the average is linear, several backward
    passes into the same ``.grad`` before one optimiser step also end with the average of the
    sums.  Every rank must run the same backward passes (the objectives' control flow does not
    depend on the rank), since each bucket is one collective.

    Input-gradient computations (``torch.autograd.grad`` in the samplers) accumulate nothing
    and so communicate nothing.
    """

    def __init__(self, params: Iterable[nn.Parameter], world_size: int, group: Any = None) -> None:
        self.world_size = int(world_size)
        self.group = group
        self.params: list[nn.Parameter] = []
        seen: set[int] = set()
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                self.params.append(p)
        self.order = {id(p): i for i, p in enumerate(self.params)}
        self.enabled = True
        self.reductions = 0  # backward passes averaged so far (a diagnostic)
        self._pending: dict[int, nn.Parameter] = {}
        self._queued = False
        self._handles = [p.register_post_accumulate_grad_hook(self._accumulated) for p in self.params]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _accumulated(self, p: Tensor) -> None:
        if not self.enabled:
            return
        self._pending[id(p)] = p  # type: ignore[assignment]
        if not self._queued:
            self._queued = True
            # Runs once, after the whole backward pass has finished accumulating.
            torch.autograd.Variable._execution_engine.queue_callback(self._flush)

    def _flush(self) -> None:
        params = sorted(self._pending.values(), key=lambda q: self.order[id(q)])
        self._pending, self._queued = {}, False
        self.reductions += 1
        for bucket in _buckets([p for p in params if p.grad is not None]):
            flat = torch.cat([p.grad.reshape(-1) for p in bucket])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            flat.div_(self.world_size)
            offset = 0
            for p in bucket:
                n = p.grad.numel()
                p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
                offset += n


def _buckets(params: Sequence[Tensor]) -> list[list[Tensor]]:
    """Consecutive groups of one device and dtype, each up to BUCKET_BYTES."""
    out: list[list[Tensor]] = []
    size = 0
    for p in params:
        g = p.grad
        nbytes = g.numel() * g.element_size()
        if out and out[-1][0].grad.device == g.device and out[-1][0].grad.dtype == g.dtype \
                and size + nbytes <= BUCKET_BYTES:
            out[-1].append(p)
            size += nbytes
        else:
            out.append([p])
            size = nbytes
    return out


class Distributed:
    """This process's place in a torchrun launch and the collectives the trainer uses."""

    def __init__(self, rank: int, world_size: int, local_rank: int) -> None:
        if not 0 <= rank < world_size:
            raise UsageError(f"RANK={rank} is not in [0, WORLD_SIZE={world_size})")
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend = ""
        self.device = torch.device("cpu")
        self.averager: Optional[GradientAverager] = None

    def __repr__(self) -> str:
        return f"Distributed(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    @classmethod
    def from_environment(cls) -> Optional["Distributed"]:
        """The launch torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, or None for one process."""
        world = _env_int("WORLD_SIZE", 1)
        if world <= 1:
            return None
        return cls(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- set-up -----------------------------------------------------------------------------
    def start(self, device: torch.device) -> torch.device:
        """Join the process group; return this rank's device (``cuda:LOCAL_RANK`` for CUDA)."""
        if device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise UsageError(f"LOCAL_RANK {self.local_rank} has no GPU: this machine has "
                                 f"{torch.cuda.device_count()}; start at most that many processes per node")
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
        elif device.type == "cpu":
            backend = "gloo"
        else:
            raise UsageError(f"device '{device}' cannot train on several processes; use cuda or cpu")
        self.backend = os.environ.get("COOP_DIST_BACKEND", backend)
        self.device = device
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=_env_int("COOP_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
            kwargs: dict[str, Any] = {"backend": self.backend, "timeout": timeout}
            if self.backend == "nccl":
                kwargs["device_id"] = device
            dist.init_process_group(**kwargs)
        if dist.get_world_size() != self.world_size or dist.get_rank() != self.rank:
            raise UsageError("the process group does not match RANK / WORLD_SIZE")
        return device

    def close(self) -> None:
        if self.averager is not None:
            self.averager.remove()
            self.averager = None
        if dist.is_initialized():
            dist.destroy_process_group()

    def agree(self, error: Optional[BaseException]) -> None:
        """Raise on every rank when any rank failed a check (so none waits for the others forever)."""
        flag = torch.tensor([0.0 if error is None else 1.0], device=self._comm_device())
        dist.all_reduce(flag)
        if error is not None:
            raise error
        if flag.item() > 0:
            raise UsageError("another process of this launch failed its start-up checks (see its message)")

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    # -- models -----------------------------------------------------------------------------
    def synchronise_models(self, models: Iterable[nn.Module]) -> None:
        """Copy rank 0's parameters and buffers to every rank, then average gradients from now on."""
        models = list(models)
        with torch.no_grad():
            for m in models:
                for t in list(m.parameters()) + list(m.buffers()):
                    dist.broadcast(t.data, src=0)
        if self.averager is None:
            self.averager = GradientAverager((p for m in models for p in m.parameters()), self.world_size)

    def gradients_synchronised(self, on: bool) -> None:
        """Switch the averaging off while one rank alone runs backward passes (rank 0's metrics)."""
        if self.averager is not None:
            self.averager.enabled = on

    # -- tensors ----------------------------------------------------------------------------
    def mean_with_flag(self, values: Tensor, flag: bool) -> tuple[Tensor, bool]:
        """The mean over ranks of a float vector, plus whether any rank raised `flag` (one collective)."""
        buf = torch.cat([values.float().reshape(-1), torch.tensor([1.0 if flag else 0.0], device=values.device)])
        buf = buf.to(self._comm_device())
        dist.all_reduce(buf)
        return buf[:-1] / self.world_size, bool(buf[-1].item() > 0)

    def all_gather_cat(self, tensor: Tensor) -> Tensor:
        """Every rank's `tensor` (same shape on all) concatenated along dim 0, in rank order."""
        src = tensor.detach().contiguous()
        home = src.device
        is_bool = src.dtype == torch.bool
        if is_bool:  # not every backend reduces or gathers bool
            src = src.to(torch.uint8)
        src = src.to(self._comm_device())
        parts = [torch.empty_like(src) for _ in range(self.world_size)]
        dist.all_gather(parts, src)
        out = torch.cat(parts).to(home)
        return out.bool() if is_bool else out

    def sync_rows(self, buffers: dict[str, Tensor], local_index: Tensor, global_index: Tensor) -> None:
        """Write every rank's rows of the iteration's batch into every rank's copy of `buffers`.

        Rank r updated rows ``local_index`` (its slice of ``global_index``); after this each
        rank's buffers hold all of them, as a single process's would."""
        for name in sorted(buffers):
            buf = buffers[name]
            if buf is None:
                continue
            idx = local_index.to(buf.device).long()
            gathered = self.all_gather_cat(buf[idx])
            buf[global_index.to(buf.device).long()] = gathered.to(buf.dtype)

    def gather_objects(self, obj: Any) -> Optional[list[Any]]:
        """Every rank's `obj` on rank 0 (None elsewhere)."""
        out: Optional[list[Any]] = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


# -- the `coop train --nproc N` launcher ----------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a local process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_local(nproc: int, argv: Sequence[str], grace_s: float = 20.0) -> int:
    """Run ``python -m coopcore.cli *argv`` in `nproc` processes on this machine, as torchrun would.

    Sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT.  Returns
    rank 0's exit code, or the first failing rank's when rank 0 succeeded.  When a rank fails the
    others get `grace_s` seconds to notice and are then terminated (they may wait in a
    collective).  Ctrl-C reaches every rank (one process group), so the launcher itself ignores
    it and waits for them to save their checkpoint.
    """
    import signal

    env_base = dict(os.environ)
    env_base.update({"WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": str(free_port())})
    procs: list[subprocess.Popen] = []
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        for r in range(nproc):
            env = dict(env_base, RANK=str(r), LOCAL_RANK=str(r))
            procs.append(subprocess.Popen([sys.executable, "-m", "coopcore.cli", *argv], env=env))
        failed_at: Optional[float] = None
        while any(p.poll() is None for p in procs):
            codes = [p.poll() for p in procs]
            if failed_at is None and any(c not in (None, 0) for c in codes):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > grace_s:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                break
            time.sleep(0.05)
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if codes[0] != 0:
        return 1 if codes[0] < 0 else codes[0]
    bad = [c for c in codes if c != 0]
    return (1 if bad[0] < 0 else bad[0]) if bad else 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
