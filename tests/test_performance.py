"""The speed options of ``[run]`` (coopcore.accel; docs/performance.md).

On CPU: the recipe fields and their errors, the defaults resolving to "everything off" (and so
to bit-identical numbers), the capture logic through its eager fallback (warm-up counting,
a failed capture reported once, the cache's fingerprint of what a graph bakes in), bf16
against float32 on a short recipe within a stated tolerance, channels-last, fused Adam,
compilation and the device-held dataset.

On CUDA (skipped without it; the GPU check runs them with ``-k cuda``): captured and eager
sampler runs agree, the seeded noise advances like eager, replays see in-place optimiser
updates and BatchNorm statistics, a replaced parameter forces a recapture and an uncapturable
log-density falls back to eager.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from coopcore import accel
from coopcore.accel import AccelSettings
from coopcore.config import ConfigError, RunConfig, structure
from coopcore.langevin import langevin_dynamics

pytestmark = pytest.mark.usefixtures("one_thread")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run by the GPU check)")

#: bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 2e-3 per op); a few Langevin steps
#: and updates of a tiny recipe stay within this of float32 (measured: see the tests).
BF16_RTOL = 5e-2


@pytest.fixture(autouse=True)
def _default_accel():
    """Every test starts and ends with the default (all-off) settings and an empty graph cache."""
    accel.configure(AccelSettings())
    accel._NOTICES.clear()
    yield
    accel.configure(AccelSettings())
    accel.sampler_graphs().clear()


class TinyEnergy(nn.Module):
    def __init__(self, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4) if batch_norm else nn.Identity()
        self.fc = nn.Linear(4 * 8 * 8, 1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.norm(self.conv(x))).flatten(1)).squeeze(1)

    def log_p(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) - x.flatten(1).pow(2).sum(1) / 2.0


def _run(model: TinyEnergy, init: torch.Tensor, seed: int, **kw):
    gen = torch.Generator(device=init.device).manual_seed(seed)
    opts = dict(n_steps=5, drift=0.01, noise_std=0.1)
    opts.update(kw)
    out = langevin_dynamics(model.log_p, init, gen, **opts)
    return out, gen


# ---------------------------------------------------------------------------------------
# recipe fields
def test_defaults_resolve_to_everything_off_on_cpu():
    run = RunConfig()
    assert (run.capture_sampler, run.precision, run.compile, run.channels_last, run.fused_adam,
            run.data_on_device) == ("auto", "float32", False, False, False, "auto")
    assert accel.settings_for_run(run, torch.device("cpu")) == AccelSettings()
    # "auto" captures on CUDA only once a GPU run has proven it (a one-line flip in accel.py)
    cuda_auto = accel.settings_for_run(run, torch.device("cuda"))
    assert cuda_auto.capture_sampler is accel.CAPTURE_PROVEN_ON_CUDA
    assert cuda_auto.data_on_device


@pytest.mark.parametrize("key, value, words", [
    ("precision", "fp16", "'float32', 'bf16'"),
    ("capture_sampler", True, "'auto', 'on', 'off'"),
    ("data_on_device", "gpu", "'auto', 'on', 'off'"),
    ("compile", "yes", "true or false"),
    ("channels_last", 1, "true or false"),
    ("fused_adam", "true", "true or false"),
])
def test_bad_values_name_the_field(key, value, words):
    with pytest.raises(ConfigError) as err:
        structure(RunConfig, {key: value}, "run")
    assert f"run.{key}" in str(err.value) and words in str(err.value)


def test_capture_on_cpu_says_so_once(capsys):
    settings = accel.settings_for_run(RunConfig(capture_sampler="on"), torch.device("cpu"))
    assert not settings.capture_sampler
    accel.settings_for_run(RunConfig(capture_sampler="on"), torch.device("cpu"))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "capture_sampler" in err[0] and "eagerly" in err[0]


# ---------------------------------------------------------------------------------------
# capture logic, exercised on CPU through its fallback
def test_capture_switched_on_with_cpu_chains_is_bitwise_eager(capsys):
    torch.manual_seed(0)
    model, init = TinyEnergy(), torch.randn(4, 1, 8, 8)
    eager, g_eager = _run(model, init, 1, metropolis=True)
    with accel.using(AccelSettings(capture_sampler=True)):
        fallback, g_fallback = _run(model, init, 1, metropolis=True)
    assert torch.equal(eager.samples, fallback.samples) and torch.equal(eager.energies, fallback.energies)
    assert torch.equal(eager.acceptance, fallback.acceptance)
    assert torch.equal(g_eager.get_state(), g_fallback.get_state())
    assert "run eagerly" in capsys.readouterr().err
    assert len(accel.sampler_graphs()) == 0


def test_warmup_then_failed_capture_falls_back_once(monkeypatch, capsys):
    """The cache path with CPU tensors: WARMUP_CALLS eager calls, then a capture attempt (which
    cannot work without CUDA), one notice, and eager from then on: same numbers every call."""
    monkeypatch.setattr(accel, "_graph_supported", lambda init: True)
    torch.manual_seed(0)
    model, init = TinyEnergy(), torch.randn(3, 1, 8, 8)
    mask = (torch.rand(1, 1, 8, 8) > 0.5).float()
    graphs = accel.sampler_graphs()
    g_eager, g_cached = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)  # one per run, as a trainer's
    opts = dict(n_steps=4, drift=0.01, noise_std=0.1, mask=mask, clip=(-2.0, 2.0))
    for call in range(accel.WARMUP_CALLS + 3):
        eager = langevin_dynamics(model.log_p, init, g_eager, **opts)
        with accel.using(AccelSettings(capture_sampler=True)):
            cached = langevin_dynamics(model.log_p, init, g_cached, **opts)
        assert torch.equal(eager.samples, cached.samples), call
    assert len(graphs) == 1
    entry = next(iter(graphs._entries.values()))
    assert entry.failed and entry.calls == accel.WARMUP_CALLS and graphs.captures == 0
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "could not be captured" in ln]
    assert len(notes) == 1


def test_fingerprint_follows_what_a_graph_bakes_in():
    """In-place updates (every optimiser of build.make_optimizer, BatchNorm statistics,
    load_state_dict) keep the fingerprint, so a replay reads the new values; replacing a
    parameter, moving a module or switching train/eval mode changes it (recapture)."""
    from coopcore.build import make_optimizer
    from coopcore.config import OptimizerConfig

    model = TinyEnergy(batch_norm=True)
    base = accel.state_fingerprint(model.log_p)
    x = torch.randn(4, 1, 8, 8)
    for name in ("adam", "adamw", "sgd", "rmsprop"):
        for fused in ((False, True) if name.startswith("adam") else (False,)):
            opt = make_optimizer(model.parameters(), OptimizerConfig(name=name, lr=0.1, momentum=0.5), fused=fused)
            before = model.conv.weight.detach().clone()
            model.score(x).sum().backward()  # also updates the BatchNorm running statistics in place
            opt.step()
            opt.zero_grad(set_to_none=True)
            assert not torch.equal(before, model.conv.weight)
            assert accel.state_fingerprint(model.log_p) == base, (name, fused)
    model.load_state_dict(copy.deepcopy(model.state_dict()))
    assert accel.state_fingerprint(model.log_p) == base
    model.eval()
    assert accel.state_fingerprint(model.log_p) != base
    model.train()
    model.fc.weight = nn.Parameter(model.fc.weight.detach().clone())
    assert accel.state_fingerprint(model.log_p) != base

    # a closure's tensors count (a new closure over a new tensor is a new graph)
    def over(target):
        return lambda x: (x - target).sum()

    a, b = torch.zeros(3), torch.zeros(3)
    assert accel.state_fingerprint(over(a)) == accel.state_fingerprint(over(a))
    assert accel.state_fingerprint(over(a)) != accel.state_fingerprint(over(b))


# ---------------------------------------------------------------------------------------
# bf16 against float32
def test_bf16_sampler_matches_float32_within_tolerance():
    torch.manual_seed(0)
    model, init = TinyEnergy(), torch.randn(8, 1, 8, 8)
    ref, _ = _run(model, init, 3, n_steps=10)
    with accel.using(AccelSettings(precision="bf16")):
        low, _ = _run(model, init, 3, n_steps=10)
    assert low.samples.dtype == torch.float32 and low.energies.dtype == torch.float32
    diff = (low.samples - ref.samples).abs().max().item()
    rel = ((low.energies - ref.energies).abs() / ref.energies.abs()).max().item()
    print(f"bf16 sampler: max |samples diff| {diff:.2e}, max relative energy diff {rel:.2e}")
    assert diff < 1e-2 and rel < BF16_RTOL
    assert not torch.equal(low.samples, ref.samples)  # bf16 really ran


def _tiny_recipe(**run: object) -> dict:
    """A two-iteration CoopNets recipe on 8x8 synthetic images (seconds on one CPU thread)."""
    from coopcore.contract import objective_example_config
    from coopcore.plugin_manager import get_registries

    entry = get_registries().objective.get("coopnets")
    data = objective_example_config("coopnets", entry.factory.contract_example)
    data["run"].update({"threads": 1, **run})
    return data


def _train(data: dict, iterations: int = 3):
    from coopcore.build import build_experiment
    from coopcore.data import BatchSchedule
    from coopcore.experiment import resolve_data
    from coopcore.protocols import Batch
    from coopcore.rng import make_generator, seed_everything

    resolved = resolve_data(data, "test")
    cfg = resolved.config
    seed_everything(cfg.run.seed)
    exp = build_experiment(resolved, torch.device("cpu"))
    sched = BatchSchedule(len(exp.dataset), cfg.data.batch_size, cfg.run.seed)
    gen = make_generator(cfg.run.seed, torch.device("cpu"))
    scalars = []
    for it in range(iterations):
        idx = sched.indices(it)
        result = exp.objective.step(Batch(exp.dataset.get_batch(idx), idx), gen)
        scalars.append({k: float(v) for k, v in result.scalars.items()})
    params = {f"{role}.{n}": p.detach().clone() for role, m in exp.parts.models.items() for n, p in m.named_parameters()}
    return exp, scalars, params


def test_bf16_recipe_matches_float32_within_tolerance():
    _, ref_scalars, ref_params = _train(_tiny_recipe())
    exp, low_scalars, low_params = _train(_tiny_recipe(precision="bf16"))
    for opt in exp.parts.optimizers.values():  # optimiser state stays float32
        assert all(t.dtype == torch.float32 for s in opt.state.values() for t in s.values() if t.is_floating_point())
    # Weights (the tensors of dim >= 2), relative to their largest entry.  Biases are left to the
    # absolute bound below: one in front of a normalisation has a gradient that is zero in exact
    # arithmetic, and Adam turns its rounding noise into steps of +-lr.
    worst_param = max(((low_params[n] - ref_params[n]).abs().max() / ref_params[n].abs().max()).item()
                      for n in ref_params if ref_params[n].dim() >= 2)
    assert all((low_params[n] - ref_params[n]).abs().max() <= 2 * 3 * 1e-3 for n in ref_params)  # 3 steps, lr 1e-3
    worst_scalar = 0.0
    for ref, low in zip(ref_scalars, low_scalars):
        for k in ("score_obs", "score_syn", "energy_obs", "energy_syn", "recon_mse"):
            worst_scalar = max(worst_scalar, abs(low[k] - ref[k]) / max(abs(ref[k]), 1e-3))
    print(f"bf16 recipe: max relative parameter diff {worst_param:.2e}, max relative scalar diff {worst_scalar:.2e}")
    assert worst_param < BF16_RTOL and worst_scalar < BF16_RTOL
    assert worst_param > 0  # bf16 really ran


# ---------------------------------------------------------------------------------------
# channels-last, fused Adam, compile, device-held data
def test_default_build_is_bitwise_a_plain_build():
    """All options at their defaults: the same numbers as with every field spelled "off"."""
    _, a, pa = _train(_tiny_recipe(), iterations=2)
    _, b, pb = _train(_tiny_recipe(capture_sampler="off", data_on_device="off"), iterations=2)
    assert a == b and all(torch.equal(pa[r], pb[r]) for r in pa)


def test_channels_last_fused_adam_and_compile_agree_with_the_defaults(monkeypatch):
    monkeypatch.setattr(accel, "COMPILE_BACKEND", "eager")  # the option's plumbing, not inductor's codegen
    _, ref, pref = _train(_tiny_recipe(), iterations=2)
    exp, out, pout = _train(_tiny_recipe(channels_last=True, fused_adam=True, compile=True), iterations=2)
    desc = exp.parts.models["descriptor"]
    conv = next(p for p in desc.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert all(g.get("fused") for opt in exp.parts.optimizers.values() for g in opt.param_groups)
    assert "score" in vars(desc)  # compiled on the instance; the state dict keeps its names
    assert not any(k.startswith("_orig_mod") for k in desc.state_dict())
    # Compared on what the networks compute: a bias in front of a BatchNorm has a gradient that
    # is zero in exact arithmetic, and Adam turns its rounding noise into steps of +-lr, so raw
    # parameters may differ by ~lr where the outputs do not.
    worst = max(abs(o[k] - r[k]) / max(abs(r[k]), 1e-3) for r, o in zip(ref, out) for k in r)
    print(f"channels-last + fused Adam + compile: max relative scalar diff {worst:.2e}")
    assert worst < 1e-5
    assert all((pout[n] - pref[n]).abs().max() <= 2 * 2 * 1e-3 for n in pref)  # 2 steps of at most 2 lr


def test_device_dataset_serves_the_same_batches():
    from coopcore.build import place_dataset
    from coopcore.data import DeviceTensorDataset, TensorImageDataset

    src = TensorImageDataset(torch.randn(10, 1, 4, 4), name="t", labels=torch.arange(10), value_range=(-2.0, 2.0))
    held = place_dataset(src, torch.device("cpu"), "on", allowed=True)
    assert isinstance(held, DeviceTensorDataset) and held.source is src
    idx = torch.tensor([3, 1, 7])
    assert torch.equal(held.get_batch(idx), src.get_batch(idx))
    assert held.value_range == (-2.0, 2.0) and torch.equal(held.get_labels(idx), src.get_labels(idx))
    assert len(held) == 10 and held.shape == (1, 4, 4) and held.name == "t"
    assert place_dataset(src, torch.device("cpu"), "auto", allowed=False) is src


# ---------------------------------------------------------------------------------------
# CUDA: captured runs against eager
STEP = dict(n_steps=5, drift=0.01, noise_std=0.1)


class Pair:
    """An eager and a captured sampler run side by side, each with its own generator kept across
    calls (as a trainer keeps one), both seeded alike."""

    def __init__(self, seed: int = 7) -> None:
        self.g_eager = torch.Generator(device="cuda").manual_seed(seed)
        self.g_captured = torch.Generator(device="cuda").manual_seed(seed)

    def __call__(self, eager_fn, captured_fn, init, precision: str = "float32", **kw):
        opts = {**STEP, **kw}
        with accel.using(AccelSettings(precision=precision)):
            eager = langevin_dynamics(eager_fn, init, self.g_eager, **opts)
        with accel.using(AccelSettings(capture_sampler=True, precision=precision)):
            captured = langevin_dynamics(captured_fn, init, self.g_captured, **opts)
        return eager, captured

    def check(self, eager, captured, tol: float = 1e-5) -> None:
        torch.testing.assert_close(captured.samples, eager.samples, rtol=tol, atol=tol)
        torch.testing.assert_close(captured.energies, eager.energies, rtol=tol, atol=tol)
        torch.testing.assert_close(captured.grad_norms, eager.grad_norms, rtol=tol, atol=tol)
        if eager.acceptance is not None:
            torch.testing.assert_close(captured.acceptance, eager.acceptance, rtol=tol, atol=tol)
        # the noise advanced alike: the next draws of both generators are the same numbers
        assert torch.equal(self.g_eager.get_state(), self.g_captured.get_state())


@cuda
@pytest.mark.parametrize("kw", [{}, {"metropolis": True}, {"clip": (-1.0, 1.0)}, {"noise_std": 0.0}])
def test_cuda_captured_run_matches_eager(kw):
    torch.manual_seed(0)
    model, pair, graphs = TinyEnergy().cuda(), Pair(), accel.sampler_graphs()
    for call in range(accel.WARMUP_CALLS + 3):  # warm-up calls, the capture, then replays
        init = torch.randn(6, 1, 8, 8, device="cuda")
        pair.check(*pair(model.log_p, model.log_p, init, **kw))
    assert graphs.captures == 1 and graphs.replays == 3


@cuda
def test_cuda_captured_run_with_mask_and_bf16():
    torch.manual_seed(0)
    model, pair = TinyEnergy().cuda(), Pair()
    mask = (torch.rand(1, 1, 8, 8, device="cuda") > 0.5).float()
    kept = mask.expand(4, 1, 8, 8) <= 0
    for call in range(accel.WARMUP_CALLS + 2):
        init = torch.randn(4, 1, 8, 8, device="cuda")
        eager, captured = pair(model.log_p, model.log_p, init, mask=mask)
        pair.check(eager, captured)
        assert torch.equal(captured.samples[kept], init[kept])
        e16, c16 = pair(model.log_p, model.log_p, init, precision="bf16", mask=mask)
        pair.check(e16, c16, tol=1e-3)
    assert accel.sampler_graphs().captures == 2  # one per precision


@cuda
def test_cuda_replay_sees_in_place_updates_and_batch_norm_statistics():
    torch.manual_seed(0)
    model = TinyEnergy(batch_norm=True).cuda()
    twin = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    opt_twin = torch.optim.Adam(twin.parameters(), lr=0.05)
    pair = Pair()
    for call in range(accel.WARMUP_CALLS + 4):
        init = torch.randn(6, 1, 8, 8, device="cuda")
        pair.check(*pair(twin.log_p, model.log_p, init), tol=1e-4)
        torch.testing.assert_close(model.norm.running_mean, twin.norm.running_mean, rtol=1e-4, atol=1e-6)
        assert int(model.norm.num_batches_tracked) == int(twin.norm.num_batches_tracked)
        for m, o in ((model, opt), (twin, opt_twin)):  # the weights change in place between calls
            o.zero_grad(set_to_none=True)
            m.score(init).mean().backward()
            o.step()
    assert accel.sampler_graphs().captures == 1


@cuda
def test_cuda_replaced_parameter_forces_recapture():
    torch.manual_seed(0)
    model, pair, graphs = TinyEnergy().cuda(), Pair(), accel.sampler_graphs()
    init = torch.randn(4, 1, 8, 8, device="cuda")
    for call in range(accel.WARMUP_CALLS + 1):
        pair.check(*pair(model.log_p, model.log_p, init))
    assert graphs.captures == 1
    model.fc.weight = nn.Parameter(model.fc.weight.detach() * 2.0)
    for call in range(accel.WARMUP_CALLS + 1):
        pair.check(*pair(model.log_p, model.log_p, init))
    assert graphs.captures == 2


@cuda
def test_cuda_uncapturable_log_density_falls_back(capsys):
    torch.manual_seed(0)
    model, pair = TinyEnergy().cuda(), Pair()

    def syncing(x):  # .item() synchronises with the host: not capturable
        lp = model.log_p(x)
        return lp * (1.0 if lp.sum().item() < 1e30 else 0.0)

    init = torch.randn(4, 1, 8, 8, device="cuda")
    for call in range(accel.WARMUP_CALLS + 2):
        pair.check(*pair(syncing, syncing, init))
    assert "could not be captured" in capsys.readouterr().err
    assert accel.sampler_graphs().captures == 0


@cuda
def test_cuda_short_recipe_captured_matches_eager():
    """A few iterations of a tiny CoopNets recipe on CUDA, capture on against off."""
    from coopcore.build import build_experiment
    from coopcore.data import BatchSchedule
    from coopcore.experiment import resolve_data
    from coopcore.protocols import Batch
    from coopcore.rng import make_generator, seed_everything

    def train(capture: str):
        data = _tiny_recipe(capture_sampler=capture)
        resolved = resolve_data(data, "test")
        seed_everything(0)
        exp = build_experiment(resolved, torch.device("cuda"))
        sched = BatchSchedule(len(exp.dataset), resolved.config.data.batch_size, 0)
        gen = make_generator(0, torch.device("cuda"))
        out = []
        for it in range(accel.WARMUP_CALLS + 3):
            idx = sched.indices(it)
            out.append({k: float(v) for k, v in exp.objective.step(Batch(exp.dataset.get_batch(idx), idx), gen).scalars.items()})
        return out, accel.sampler_graphs().captures

    eager, _ = train("off")
    captured, captures = train("on")
    assert captures >= 1
    for e, c in zip(eager, captured):
        for k in e:
            assert c[k] == pytest.approx(e[k], rel=1e-4, abs=1e-5), k


def test_prefetched_batches_are_the_schedule_s():
    """The DataLoader path for datasets kept on the host: the same batches, in order, from any start."""
    from coopcore.data import BatchSchedule, TensorImageDataset, prefetch_batches

    src = TensorImageDataset(torch.randn(11, 1, 2, 2), name="t")
    sched = BatchSchedule(len(src), 3, seed=4)
    for workers in (0, 1):
        got = list(prefetch_batches(src, sched, 2, 9, workers=workers, device=torch.device("cpu")))
        assert len(got) == 7
        for t, (images, idx) in enumerate(got, start=2):
            assert torch.equal(idx, sched.indices(t)) and torch.equal(images, src.get_batch(sched.indices(t)))


def test_read_ahead_workers_train_on_the_same_batches(tmp_path, monkeypatch):
    """data.workers > 0 reads the batches in DataLoader processes: the run is the same."""
    import json

    import coopcore.trainer as trainer_module
    from conftest import run_cli

    used = []
    real = trainer_module.prefetch_batches

    def spy(*args, **kwargs):
        used.append(kwargs["workers"])
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "prefetch_batches", spy)
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        code = run_cli(["train", "coopnets-digits", "--out", out, "--no-progress", "--set", "run.iterations=4",
                        "--set", "run.log_every=1", "--set", "run.sample_every=0", "--set", "run.threads=1",
                        "--set", "run.tensorboard=false", "--set", f"data.workers={workers}"])
        assert code == 0
        runs[workers] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert used == [2]  # only the second run read ahead
    assert len(runs[0]) == 4 and runs[0] == runs[2]
