"""The optional speed paths of a run, in one place: captured sampler runs (CUDA graphs), bf16
autocast, ``torch.compile``, channels-last memory, fused Adam and device-held datasets.

Every option is a `RunConfig` field (``[run]`` in a recipe); `coopcore.build.build_experiment`
resolves them for the run's device (`settings_for_run`) and installs them process-wide
(`configure`), because the shared kernels (`coopcore.langevin_dynamics`,
`coopcore.contrastive_update`) are called by plugins that never see the recipe.  With every
option off (the defaults on CPU) nothing here runs and the numbers are bit-identical to a
build without this module.  docs/performance.md states what each option changes numerically.

Captured sampler runs replay `coopcore.langevin._langevin_loop`, the one Langevin loop, inside
a CUDA graph: no second implementation of the step exists.  See `SamplerGraphs`.
"""
from __future__ import annotations

import contextlib
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

import torch
from torch import Tensor, nn

__all__ = [
    "AccelSettings", "CAPTURE_PROVEN_ON_CUDA", "SamplerGraphs", "autocast", "capture_enabled", "configure",
    "current", "notice", "prepare_models", "sampler_graphs", "settings_for_run", "state_fingerprint", "using",
    "wrap_objective_step",
]

#: Whether ``capture_sampler = "auto"`` captures on CUDA.  False until the CUDA tests of
#: tests/test_performance.py (captured == eager within tolerance, seeded noise advancing like
#: eager) have passed on a GPU; flipping it to True is the whole change that makes capture the
#: default on CUDA.  CPU runs are eager whatever this says.
CAPTURE_PROVEN_ON_CUDA = False

#: Eager runs of one (log-density, shapes, options) key before it is captured.  They are real
#: sampler calls (their results are returned), run on a side stream as CUDA graph capture of
#: autograd requires; being real calls, they leave no extra side effect (BatchNorm statistics,
#: generator offsets) that a plain eager run would not.
WARMUP_CALLS = 2
#: Captured graphs kept (least recently used dropped first); each holds its own memory pool.
MAX_GRAPHS = 8
#: The torch.compile backend of ``run.compile`` (tests swap in a cheap one).
COMPILE_BACKEND = "inductor"
#: Datasets up to this many bytes (as float tensors) are held on the GPU by ``data_on_device = "auto"``.
DEVICE_DATA_LIMIT_BYTES = 4 * 2**30


@dataclass(frozen=True)
class AccelSettings:
    """The resolved speed options of the running process (all off by default)."""

    capture_sampler: bool = False
    precision: str = "float32"  # "float32" or "bf16"
    compile: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    data_on_device: bool = False

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


_SETTINGS = AccelSettings()
_NOTICES: set[str] = set()


def current() -> AccelSettings:
    """The settings the shared kernels follow now."""
    return _SETTINGS


def configure(settings: AccelSettings) -> AccelSettings:
    """Install `settings` process-wide; returns the previous ones.  `build_experiment` calls it
    for every experiment it builds, so one built with the defaults resets what another set."""
    global _SETTINGS
    previous, _SETTINGS = _SETTINGS, settings
    return previous


@contextlib.contextmanager
def using(settings: AccelSettings) -> Iterator[AccelSettings]:
    """`configure` for the duration of a ``with`` block (tests, benchmarks)."""
    previous = configure(settings)
    try:
        yield settings
    finally:
        configure(previous)


def notice(message: str) -> None:
    """One line on stderr, once per process and message: how a requested option falls back."""
    if message not in _NOTICES:
        _NOTICES.add(message)
        print(f"coopnets: note: {message}", file=sys.stderr, flush=True)


def settings_for_run(run: Any, device: torch.device) -> AccelSettings:
    """Resolve a `RunConfig`'s speed options for `device`, with a notice for each that cannot apply."""
    cuda = device.type == "cuda"
    if run.capture_sampler == "on":
        capture = cuda
        if not cuda:
            notice(f"run.capture_sampler = \"on\" needs CUDA; on {device.type} the sampler runs eagerly "
                   "(same numbers as capture_sampler = \"off\")")
    else:
        capture = run.capture_sampler == "auto" and cuda and CAPTURE_PROVEN_ON_CUDA
    on_device = False
    if run.data_on_device == "on" or (run.data_on_device == "auto" and cuda):
        on_device = device.type != "cpu"
    fused = run.fused_adam
    if fused and device.type not in ("cuda", "cpu"):
        notice(f"run.fused_adam is not available on {device.type}; the optimisers use torch's default kernel")
        fused = False
    return AccelSettings(capture_sampler=capture, precision=run.precision, compile=run.compile,
                         channels_last=run.channels_last, fused_adam=fused, data_on_device=on_device)


# ---------------------------------------------------------------------------------------
# precision
def autocast(device_type: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for network evaluations under ``precision = "bf16"``, else a null context.

    The weight-cast cache is off: a cache filled outside a CUDA graph capture must not be read
    inside it, and the sampler's contexts are short (one forward/backward each)."""
    if _SETTINGS.bf16:
        return torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def wrap_objective_step(objective: Any, settings: AccelSettings, device: torch.device) -> None:
    """Run ``objective.step`` under bf16 autocast (the generator and encoder updates of the
    plugins' objectives included).  The descriptor's contrastive update and the Langevin kernel
    cast their reductions back to float32 themselves; parameters and optimiser state stay float32.
    Done on the instance, so the objective's type, state dict and other methods are untouched."""
    if not settings.bf16:
        return
    step = objective.step

    def step_in_bf16(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return step(*args, **kwargs)

    objective.step = step_in_bf16


# ---------------------------------------------------------------------------------------
# models: channels-last and torch.compile
def prepare_models(models: Mapping[str, nn.Module], settings: AccelSettings) -> None:
    """Apply channels-last and compilation in place (state dicts and parameter names unchanged).

    Run before the optimisers are built: converting the memory format replaces parameter
    storage, which a captured graph or an optimiser built earlier would not see."""
    for model in models.values():
        if settings.channels_last and any(p.dim() == 4 for p in model.parameters()):
            model.to(memory_format=torch.channels_last)
        if settings.compile:
            # `score` is what the kernels call (energy() calls it too); `forward` is what
            # generators and encoders are called through.  Both compiled on the instance.
            if callable(getattr(type(model), "score", None)):
                model.score = torch.compile(model.score, backend=COMPILE_BACKEND)
            model.compile(backend=COMPILE_BACKEND)


# ---------------------------------------------------------------------------------------
# captured sampler runs
def capture_enabled(init: Tensor) -> bool:
    """Whether the kernel should go through `SamplerGraphs` for chains `init`.

    With capture on but chains off CUDA (a CPU evaluation of a CUDA run, or the CPU fallback) the
    kernel runs eagerly and says so once."""
    if not _SETTINGS.capture_sampler:
        return False
    if _graph_supported(init):
        return True
    if not init.is_cuda:
        notice(f"captured sampler runs need CUDA tensors; chains on {init.device.type} run eagerly")
    return False  # inside a capture someone else began: the loop is recorded into theirs


def _graph_supported(init: Tensor) -> bool:
    return init.is_cuda and not torch.cuda.is_current_stream_capturing()


def _callable_key(fn: Callable[..., Any]) -> Any:
    # A bound method is recreated on every attribute access: key on (its object, its function)
    # by identity, which also works for objects that define __eq__ without __hash__.
    owner = getattr(fn, "__self__", None)
    if owner is not None and hasattr(fn, "__func__"):
        return ("method", id(owner), fn.__func__)
    return ("callable", id(fn))


def _state_tensors(fn: Callable[..., Any]) -> tuple[list[nn.Module], list[Tensor], list[Any]]:
    """The modules, tensors and plain values a log-density reads besides its input, as far as
    they can be found: a module called directly, the modules held by a bound method's object,
    the modules, tensors and numbers of a closure or a functools.partial."""
    modules: list[nn.Module] = []
    tensors: list[Tensor] = []
    values: list[Any] = []

    def take(v: Any, direct: bool) -> None:
        if isinstance(v, nn.Module):
            modules.append(v)
        elif isinstance(v, Tensor) and direct:
            tensors.append(v)
        elif isinstance(v, (int, float, bool, str)) and direct:
            values.append(v)

    if isinstance(fn, nn.Module):
        modules.append(fn)
    owner = getattr(fn, "__self__", None)
    if owner is not None:
        if isinstance(owner, nn.Module):
            modules.append(owner)
        else:
            # Tensors held by the object (persistent chains, counters) are not read by its
            # log-density as a rule and change every iteration: only its modules count.
            for v in vars(owner).values() if hasattr(owner, "__dict__") else ():
                take(v, direct=False)
    for cell in getattr(fn, "__closure__", None) or ():
        with contextlib.suppress(ValueError):  # an empty cell
            take(cell.cell_contents, direct=True)
    for v in list(getattr(fn, "args", ())) + list(getattr(fn, "keywords", {}).values()):
        take(v, direct=True)
    return modules, tensors, values


def state_fingerprint(fn: Callable[..., Any]) -> tuple:
    """What a captured graph baked in: the storage address, shape and dtype of every parameter,
    buffer and closure tensor, the train/eval mode of every module, and closure numbers.

    In-place updates (``optimizer.step``, BatchNorm running statistics, ``load_state_dict``)
    keep addresses, so a graph replayed after them reads the new values; a replaced parameter,
    ``.to()``, a new closure tensor or a mode switch changes the fingerprint and forces a
    recapture."""
    modules, tensors, values = _state_tensors(fn)
    parts: list[Any] = []
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            parts.append((t.data_ptr(), tuple(t.shape), t.dtype))
        parts.append(tuple(sub.training for sub in m.modules()))
    for t in tensors:
        parts.append((t.data_ptr(), tuple(t.shape), t.dtype))
    parts.extend(values)
    return tuple(parts)


@dataclass
class _Entry:
    log_density: Callable[..., Any]  # kept alive, so the ids in the key cannot be reused
    generator: torch.Generator
    fingerprint: tuple
    calls: int = 0
    failed: bool = False
    graph: Any = None
    static_init: Optional[Tensor] = None
    static_mask: Optional[Tensor] = None
    static_out: Any = None


class SamplerGraphs:
    """A cache of captured Langevin runs, keyed by (log-density, generator, chain shape, dtype,
    device, mask shape, step options, precision).

    A key's first `WARMUP_CALLS` calls run the loop eagerly on a side stream; the next call
    captures the whole n-step loop (forward, ``torch.autograd.grad`` with respect to the input,
    noise, clipping, masks, MH) into one CUDA graph and replays it; later calls copy the chains
    (and mask) into the graph's static inputs, replay and return copies of its outputs.  The
    run's generator is registered with the graph, so each replay draws the noise eager would
    draw from the generator's current state and advances it by the same amount.  A capture
    that fails (an op that synchronises or allocates on the host) is reported once and that key
    runs eagerly from then on.
    """

    def __init__(self, max_graphs: int = MAX_GRAPHS) -> None:
        self.max_graphs = max_graphs
        self._entries: OrderedDict[Any, _Entry] = OrderedDict()
        self.captures = 0  # graphs captured so far (tests check recapture)
        self.replays = 0

    def clear(self) -> None:
        self._entries.clear()
        self.captures = self.replays = 0

    def __len__(self) -> int:
        return len(self._entries)

    def run(self, loop: Callable[..., Any], log_density: Callable[..., Any], init: Tensor,
            generator: torch.Generator, mask: Optional[Tensor], options: dict[str, Any]) -> Any:
        key = (
            _callable_key(log_density), id(generator), tuple(init.shape), init.dtype, str(init.device),
            None if mask is None else (tuple(mask.shape), mask.dtype),
            tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items())),
            _SETTINGS.precision,
        )
        try:
            hash(key)
        except TypeError:  # an option value that cannot key a cache (a list, a tensor): stay eager
            return loop(log_density, init, generator, mask=mask, **options)
        fingerprint = state_fingerprint(log_density)
        entry = self._entries.get(key)
        if entry is None or entry.fingerprint != fingerprint or entry.generator is not generator:
            entry = _Entry(log_density=log_density, generator=generator, fingerprint=fingerprint)
            self._entries[key] = entry
            while len(self._entries) > self.max_graphs:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        if entry.failed:
            return loop(log_density, init, generator, mask=mask, **options)
        if entry.graph is None:
            if entry.calls < WARMUP_CALLS:
                entry.calls += 1
                return self._warmup(loop, log_density, init, generator, mask, options)
            try:
                self._capture(entry, loop, init, mask, options)
            except Exception as exc:  # noqa: BLE001 - any capture failure means: stay eager
                entry.failed, entry.graph = True, None
                notice(f"the sampler could not be captured as a CUDA graph ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}); it runs eagerly")
                return loop(log_density, init, generator, mask=mask, **options)
        return self._replay(entry, init, mask)

    def _warmup(self, loop: Callable[..., Any], log_density: Callable[..., Any], init: Tensor,
                generator: torch.Generator, mask: Optional[Tensor], options: dict[str, Any]) -> Any:
        if not init.is_cuda:
            return loop(log_density, init, generator, mask=mask, **options)
        side = torch.cuda.Stream(device=init.device)
        main = torch.cuda.current_stream(init.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            out = loop(log_density, init, generator, mask=mask, **options)
        main.wait_stream(side)
        for t in (out.samples, out.energies, out.grad_norms, out.acceptance):
            if t is not None:
                t.record_stream(main)  # used on the main stream from here on
        return out

    def _capture(self, entry: _Entry, loop: Callable[..., Any], init: Tensor, mask: Optional[Tensor],
                 options: dict[str, Any]) -> None:
        generator = entry.generator
        entry.static_init = init.detach().clone()
        # On the chains' device: a host-to-device copy inside the graph would break capture.
        entry.static_mask = None if mask is None else mask.detach().to(init.device).clone()
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(generator)
        state = generator.get_state()
        # Capture on a side stream, by hand rather than with torch.cuda.graph(): when the capture
        # fails, capture_end raises, and the stream context below must still be left.
        main = torch.cuda.current_stream(init.device)
        side = torch.cuda.Stream(device=init.device)
        side.wait_stream(main)
        torch.cuda.synchronize(init.device)
        try:
            with torch.cuda.stream(side):
                # thread_local: a DataLoader's pin-memory thread may allocate meanwhile, which the
                # default ("global") mode would count as an error of this capture.
                graph.capture_begin(capture_error_mode="thread_local")
                try:
                    entry.static_out = loop(entry.log_density, entry.static_init, generator,
                                            mask=entry.static_mask, **options)
                finally:
                    graph.capture_end()
        except BaseException:
            with contextlib.suppress(Exception):
                graph.reset()
            entry.static_out = entry.static_init = entry.static_mask = None
            raise
        finally:
            main.wait_stream(side)
            # Capture draws no numbers on the host side; restoring makes that explicit, so the
            # first replay draws exactly what an eager call would have drawn here.
            generator.set_state(state)
        entry.graph = graph
        self.captures += 1

    def _replay(self, entry: _Entry, init: Tensor, mask: Optional[Tensor]) -> Any:
        from .protocols import SamplerOutput

        entry.static_init.copy_(init)
        if mask is not None:
            entry.static_mask.copy_(mask)
        entry.graph.replay()
        self.replays += 1
        out = entry.static_out
        # Copies: the next replay overwrites the static outputs, and callers keep samples
        # (persistent chains) across iterations.
        return SamplerOutput(
            samples=out.samples.clone(), energies=out.energies.clone(), grad_norms=out.grad_norms.clone(),
            acceptance=None if out.acceptance is None else out.acceptance.clone(),
        )


_GRAPHS = SamplerGraphs()


def sampler_graphs() -> SamplerGraphs:
    """The process-wide cache `coopcore.langevin_dynamics` uses when capture is on."""
    return _GRAPHS

