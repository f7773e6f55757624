"""Shared fixtures.  Tests run against the installed package (non-editable in CI)."""
from __future__ import annotations

import os
from pathlib import Path

# Golden numbers are computed with portable numerics (coopcore.numerics): the same floats on any
# x86-64 CPU.  The environment must be in place before torch runs its first kernel, so it is set
# here, before anything imports torch (scripts/test.sh exports it too).
os.environ.setdefault("COOP_PORTABLE_NUMERICS", "1")
import coopcore  # noqa: E402,F401  (applies COOP_PORTABLE_NUMERICS before torch starts)
import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"


_REGRESSION_FIXTURES = {"num_regression", "data_regression", "ndarrays_regression", "dataframe_regression",
                        "file_regression", "image_regression"}


def pytest_configure(config):
    """Refuse to compare golden numbers computed with machine-specific kernels."""
    from coopcore.numerics import portable_numerics_requested, portable_numerics_status

    if portable_numerics_requested():
        ok, why = portable_numerics_status()
        if not ok:
            raise pytest.UsageError(
                f"the golden numbers need portable numerics, but {why}. Run `bash scripts/test.sh`, or export "
                "COOP_PORTABLE_NUMERICS=1 ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE before pytest "
                "(COOP_PORTABLE_NUMERICS=0 runs with this machine's fastest kernels; golden tests may then fail)")


def pytest_collection_modifyitems(config, items):
    """Mark every test that compares with stored numbers `golden`; with COOP_TEST_PASS=fast or
    =golden keep only the other or only those.  scripts/test.sh runs the suite in these two
    passes: the golden tests with portable numerics (the same floats on every CPU, about 1.6x
    slower), everything else with the machine's fast kernels (nothing else compares numbers made
    on another machine)."""
    which = os.environ.get("COOP_TEST_PASS", "")
    if which not in ("", "fast", "golden"):
        raise pytest.UsageError(f"COOP_TEST_PASS must be fast or golden, got {which!r}")
    keep, drop = [], []
    for item in items:
        # A test marked `golden` by hand goes with them too (one that reads the golden tests'
        # runs, so that they are trained once, in one pass).
        golden = (bool(_REGRESSION_FIXTURES & set(getattr(item, "fixturenames", ())))
                  or item.get_closest_marker("golden") is not None)
        if golden:
            item.add_marker(pytest.mark.golden)
        (drop if which and golden != (which == "golden") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _threads_and_fresh_registries(monkeypatch):
    """Deterministic, two-thread torch and freshly discovered plugins for every test."""
    from coopcore.plugin_manager import reset_registries

    torch.set_num_threads(int(os.environ.get("COOP_TEST_THREADS", "2")))
    for var in ("COOP_DISABLE_PLUGIN_AUTOLOAD", "COOP_PLUGINS", "COOP_BLOCK_PLUGINS", "COOP_DATA"):
        monkeypatch.delenv(var, raising=False)
    reset_registries()
    yield
    reset_registries()


@pytest.fixture
def one_thread():
    """One torch thread (use with ``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    networks run several times faster than on two threads of a shared machine.  Runs after the
    autouse fixture above, which sets two."""
    torch.set_num_threads(1)


@pytest.fixture
def registries():
    from coopcore.plugin_manager import get_registries

    return get_registries()


@pytest.fixture
def shared_mnist() -> Path:
    root = SHARED_DATA / "mnist"
    if not (root / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is not available")
    return SHARED_DATA


def assert_identical(a, b, path="state"):
    """Nested dicts / lists / tensors equal bit for bit; a failure names the key path."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def straight_and_split_runs_agree(train, tmp_path: Path, total: int = 5, split: int = 2) -> list[dict]:
    """Train `total` iterations straight, and `split` then resumed to `total` (`train(iterations,
    out, resume=False)`): the final checkpoints agree bit for bit.  Returns the straight run's
    logged scalars."""
    import json

    from coopcore.checkpoint import load_checkpoint

    straight = train(total, tmp_path / "straight")
    train(split, tmp_path / "split")
    resumed = train(total, tmp_path / "split", resume=True)
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("models", "optimizers", "objective", "iteration", "images_seen"):
        assert_identical(a[key], b[key], key)
    return [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


def step_on_first_examples(exp, n: int, steps: int, seed: int = 0) -> tuple[list[dict], dict]:
    """`steps` objective steps of a built experiment on its first `n` examples with one seeded
    generator: each step's scalars (cloned) and the objective's state afterwards."""
    from coopcore.protocols import Batch

    x, index = exp.dataset.get_batch(torch.arange(n)), torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    scalars = [{k: v.clone() for k, v in exp.objective.step(Batch(x=x, index=index), gen).scalars.items()}
               for _ in range(steps)]
    return scalars, exp.objective.state_dict()


def run_cli(args: list[str]) -> int:
    from coopcore.cli import main

    return main([str(a) for a in args])


def tiny_digits_overrides() -> list[str]:
    """Small, fast settings for end-to-end tests on the embedded digits."""
    return [
        "data.batch_size=16",
        "data.options.size=16",
        "models.descriptor.name='coopnets.descriptor'",
        "models.descriptor.options={input_shape=[1,16,16], channels=[8,16], kernels=[4,4], strides=[2,2], fc_outputs=10, reference_std=0.3}",
        "models.generator.name='coopnets.generator'",
        "models.generator.options={latent_dim=8, out_channels=1, sizes=[4,8,16], channels=[16,8], kernels=[4,4,4]}",
        "samplers.revision.options.n_steps=3",
        "run.tensorboard=false",
        "run.log_every=1",
        "run.sample_every=0",
        "run.sample_count=4",
    ]


def train_tiny_run(out: Path, iterations: int = 2, extra: tuple[str, ...] = ()) -> Path:
    """Train a tiny CoopNets run on the digits through the CLI (for sample/eval tests)."""
    from coopcore.plugin_manager import reset_registries

    reset_registries()
    sets = [x for s in tiny_digits_overrides() for x in ("--set", s)]
    args = ["train", "coopnets-digits", "--out", out, "--no-progress", *sets, "--set", f"run.iterations={iterations}"]
    assert run_cli([*args, *extra]) == 0
    return out


class FixedImagesObjective:
    """A stand-in objective whose samples are given images, handed out in order (metric tests)."""

    def __init__(self, images):
        self.images = images
        self.drawn = 0

    def samples(self, n, generator):
        out = self.images[self.drawn : self.drawn + n]
        self.drawn += n
        return {"revised": out, "generator": out}


def resolve_table_runs(registries, key: str, scale: str) -> list:
    """Plan table `key` at `scale`, resolve every run of its own (recipe + overrides) and build
    every metric the spec evaluates; returns [(planned run, resolved experiment or None for a
    shared run)].  A typo in a short or full run then fails here, not after hours of training."""
    from coopcore.build import build_metric
    from coopcore.experiment import resolve
    from coopcore.tablespec import plan_runs

    out = []
    for p in plan_runs(registries.table.create(key), scale):
        resolved = None if p.use else resolve(p.recipe, list(p.overrides), registries=registries)
        for e in p.evals:
            build_metric(registries, e.name, e.options, e.label)
        out.append((p, resolved))
    return out


def datasets_context(datasets, **kw):
    """An EvalContext whose metric datasets are the given in-process datasets, looked up by name."""
    from coopcore.metrics import EvalContext

    class _DatasetsContext(EvalContext):
        def build_dataset(self, name, options, path="dataset"):
            return datasets[name]

    return _DatasetsContext(**kw)
