"""The `coop` command line.

Exit codes: 0 success; 2 bad usage or bad input (one paragraph naming the field or file and
what would be valid, no traceback); 1 a failure during a run (with the run directory and the
last checkpoint); 130 interrupted by Ctrl-C after saving a checkpoint.
"""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__
from .errors import CheckpointError, CoopError, RunFailure, UsageError

DATA_ROOT_HELP = "Root folder of datasets (default: the recipe's data.root, then $COOP_DATA)."


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _registries():
    from .plugin_manager import get_registries

    return get_registries()


def _default_out(name: str) -> Path:
    base = Path("runs") / name
    out, k = base, 1
    while out.exists() and any(out.iterdir()):
        out = base.with_name(f"{base.name}-{k}")
        k += 1
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="coop")
def cli() -> None:
    """coopnets: cooperative learning of descriptors (EBMs), generators and inference nets.

    \b
    Typical use:
      coop train coopnets-digits            train a packaged recipe (or a .toml path)
      coop sample runs/coopnets-digits      sample grids from a run's last checkpoint
      coop eval runs/RUN --metric parzen    evaluate a trained run
      coop repro table2 --scale smoke       reproduce a paper table (paper's numbers beside ours)
      coop plugins                          list plugins and what they register
      coop bench                            time the Langevin loop against a plain eager loop
    """


# ---------------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """List plugins, their versions, what they register and load errors."""
    reg = _registries()
    if as_json:
        data = []
        for p in reg.plugins:
            data.append({
                "name": p.name, "module": p.module, "distribution": p.distribution, "version": p.version,
                "status": p.status, "builtin": p.builtin, "error": p.error, "hooks": p.hooks,
                "registered": p.registered,
            })
        click.echo(json.dumps({"plugins": data}, indent=2))
        return
    for p in reg.plugins:
        head = f"{p.name} ({p.distribution} {p.version}) [{p.status}]"
        click.echo(head + ("  builtin" if p.builtin else ""))
        click.echo(f"  module: {p.module}")
        if p.error:
            click.echo(f"  error: {p.error}")
        for fam, names in p.registered.items():
            click.echo(f"  {fam}:")
            for n in names:
                entry = reg.family(fam).get(n)
                click.echo(f"    {n}" + (f" - {entry.summary}" if entry.summary else ""))


# ---------------------------------------------------------------------------------------
def _prepare(recipe: str, overrides: tuple[str, ...], seed: Optional[int], device: Optional[str]):
    from .build import resolve_experiment
    from .config import load_experiment
    from .repro import recipe_path

    sets = list(overrides)
    if seed is not None:
        sets.append(f"run.seed={seed}")
    if device is not None:
        sets.append(f"run.device={json.dumps(device)}")
    path = recipe_path(recipe)
    cfg = resolve_experiment(load_experiment(path, sets), _registries())
    return path, cfg


@cli.command("train")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value (TOML syntax), e.g. --set run.iterations=500. Repeatable.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory (default: runs/<run.name>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last good checkpoint.")
@click.option("--device", help="cpu, cuda, cuda:N or auto (overrides run.device).")
@click.option("--seed", type=int, help="Random seed (overrides run.seed).")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train_cmd(recipe: str, overrides: tuple[str, ...], out: Optional[Path], resume: bool, device: Optional[str],
              seed: Optional[int], data_root: Optional[str], no_progress: bool) -> None:
    """Train from RECIPE (a .toml file or a packaged recipe name such as coopnets-digits)."""
    from .build import build_experiment, pick_device
    from .rng import seed_everything
    from .trainer import Trainer, prepare_run_dir

    path, cfg = _prepare(recipe, overrides, seed, device)
    if out is None:
        out = Path("runs") / cfg.run.name if resume else _default_out(cfg.run.name)
    run_dir = prepare_run_dir(out, resume)
    seed_everything(cfg.run.seed)
    dev = pick_device(cfg.run.device)
    exp = build_experiment(cfg, _registries(), dev, data_root)
    _echo(f"training {path.name} on {dev} -> {run_dir}")
    trainer = Trainer(exp, run_dir, progress=False if no_progress else None, resume=resume, echo=_echo)
    start_iteration = trainer.iteration
    try:
        summary = trainer.fit()
    except (CoopError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - report where things are, keep the traceback in a file
        (run_dir / "error.log").write_text(traceback.format_exc())
        raise RunFailure(
            f"training failed at iteration {trainer.iteration}: {type(exc).__name__}: {exc} "
            f"(traceback in {run_dir / 'error.log'})", run_dir, trainer.last_checkpoint,
        ) from exc
    shown = ", ".join(f"{k}={v:.4g}" for k, v in list(summary.last_scalars.items())[:6])
    done_now = max(1, summary.iterations - start_iteration)
    _echo(f"done: {summary.iterations} iterations in {summary.seconds:.1f} s "
          f"({summary.seconds / done_now:.3f} s/iteration; {shown})")
    _echo(f"samples: {run_dir / 'samples'}  checkpoint: {summary.checkpoint}")
    click.echo(str(run_dir))


# ---------------------------------------------------------------------------------------
def _load_run(run: Path, device: Optional[str], data_root: Optional[str], need_data: bool = False):
    """Rebuild a run's experiment from its config.json and load its newest good checkpoint."""
    from .build import build_experiment, pick_device, resolve_experiment
    from .checkpoint import CheckpointDir
    from .config import experiment_from_data
    from .trainer import CONFIG_FILE, Trainer

    cfg_path = run / CONFIG_FILE
    if not cfg_path.exists():
        raise UsageError(f"{run} is not a run directory: {CONFIG_FILE} is missing (expected the --out of `coop train`)")
    cfg = resolve_experiment(experiment_from_data(json.loads(cfg_path.read_text()), str(cfg_path)), _registries())
    dev = pick_device(device or ("auto" if cfg.run.device == "auto" else cfg.run.device))
    ckpts = CheckpointDir(run / "checkpoints")
    try:
        path, payload, warnings = ckpts.load_latest(map_location=dev)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    for w in warnings:
        _echo(f"warning: skipped unusable checkpoint: {w}")
    dataset = None
    if not need_data:
        dataset = _DataShape(payload.get("data", {}))
    exp = build_experiment(cfg, _registries(), dev, data_root, dataset=dataset)
    trainer = Trainer(exp, run, readonly=True, echo=_echo)
    trainer.load_payload(payload)
    return exp, trainer, path


class _DataShape:
    """Stands in for the training set when only its size and shape are needed (sampling)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.n = int(info.get("n", 1))
        self.shape = tuple(info.get("shape", ()))
        self.name = str(info.get("name", "(not loaded)"))
        self.value_range = tuple(info.get("value_range", (-1.0, 1.0)))

    def __len__(self) -> int:
        return self.n


@cli.command("sample")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 100000), default=64, show_default=True, help="Number of samples.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the PNG grids (default: RUN/samples).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling generator.")
@click.option("--device", help="cpu, cuda, cuda:N or auto.")
def sample_cmd(run: Path, n: int, out: Optional[Path], seed: int, device: Optional[str]) -> None:
    """Write PNG grids of samples from RUN's last checkpoint (generator and Langevin-revised)."""
    from .data import value_range
    from .images import save_grid
    from .rng import make_generator

    exp, trainer, ckpt = _load_run(run, device, None)
    out = out or run / "samples"
    gen = make_generator(seed, exp.device)
    named = exp.objective.samples(n, gen)
    for kind, images in named.items():
        p = save_grid(images, out / f"sample-iter-{trainer.iteration:08d}-{kind}-seed{seed}.png",
                      value_range=value_range(exp.dataset))
        click.echo(str(p))


@cli.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--metric", "metric", required=True, help="A registered metric (see `coop plugins`).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Metric option, e.g. --set n_samples=1000.")
@click.option("--device", help="cpu, cuda, cuda:N or auto.")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the evaluation generator.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_cmd(run: Path, metric: str, overrides: tuple[str, ...], device: Optional[str], data_root: Optional[str],
             seed: int, as_json: bool) -> None:
    """Evaluate RUN's last checkpoint with a metric; appends to RUN/evaluations.jsonl."""
    from .build import build_metric
    from .config import apply_overrides
    from .metrics import EvalContext
    from .rng import make_generator

    exp, trainer, ckpt = _load_run(run, device, data_root, need_data=True)
    configured = {m.label or m.name: m for m in exp.config.eval}
    base = dict(configured[metric].options) if metric in configured else {}
    name = configured[metric].name if metric in configured else metric
    options = apply_overrides(base, list(overrides))
    m = build_metric(_registries(), name, options, "--metric")
    ctx = EvalContext(objective=exp.objective, models=exp.parts.models, registries=_registries(),
                      data_root=exp.data_root, device=exp.device, generator=make_generator(seed, exp.device),
                      train_dataset=exp.dataset, progress=_echo)
    res = m.compute(ctx)
    rec = {"iteration": trainer.iteration, "label": metric, "checkpoint": str(ckpt), **res.as_dict()}
    with open(run / "evaluations.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    click.echo(json.dumps(rec, indent=2) if as_json else str(res))


# ---------------------------------------------------------------------------------------
def _table_key(table: str, paper: Optional[str]) -> str:
    if ":" in table:
        return table
    return f"{paper or 'coopnets'}:{table}"


@cli.command("repro")
@click.argument("table", required=False)
@click.option("--paper", help="Paper short name (default coopnets); `coop repro --list` shows them.")
@click.option("--scale", type=click.Choice(["smoke", "short", "full"]), default="smoke", show_default=True,
              help="smoke: CPU, seconds, embedded data; short: one GPU, ~10 min; full: the paper's settings.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder (default: repro/<paper>-<table>-<scale>).")
@click.option("--list", "list_tables", is_flag=True, help="List the reproducible tables.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--seed", type=int, help="Override every run's seed.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Extra override applied to every run.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def repro_cmd(table: Optional[str], paper: Optional[str], scale: str, out: Optional[Path], list_tables: bool,
              device: str, data_root: Optional[str], seed: Optional[int], overrides: tuple[str, ...],
              no_progress: bool) -> None:
    """Reproduce a paper TABLE (e.g. table2, coopnets:table2) and write results.json and report.md."""
    from .repro import run_table

    reg = _registries()
    if list_tables or not table:
        for entry in reg.table.entries():
            spec = reg.table.create(entry.name)
            scales = sorted({s for r in spec.runs for s in r.scales} | {"full"})
            click.echo(f"{entry.name:24s} {spec.title}  (scales: {', '.join(scales)}; plugin {entry.owner})")
        if not list_tables:
            raise UsageError("name a TABLE to reproduce (listed above), e.g. `coop repro table2 --scale smoke`")
        return
    key = _table_key(table, paper)
    if key not in reg.table:
        known = ", ".join(reg.table) or "(none)"
        raise UsageError(f"unknown table '{key}'. Reproducible tables: {known}")
    spec = reg.table.create(key)
    out = out or Path("repro") / f"{spec.paper}-{spec.table}-{scale}"
    results = run_table(spec, scale, out, reg, device=device, data_root=data_root, seed=seed,
                        extra_overrides=overrides, echo=_echo, progress=False if no_progress else None)
    _echo((out / "report.md").read_text())
    click.echo(str(out / "results.json"))
    del results


# ---------------------------------------------------------------------------------------
@cli.command("bench")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--batch", type=click.IntRange(1), default=100, show_default=True, help="Chains per run.")
@click.option("--steps", type=click.IntRange(1), default=10, show_default=True, help="Langevin steps per run.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True, help="Timed repetitions.")
@click.option("--descriptor", default="coopnets.descriptor.mnist", show_default=True, help="Registered energy model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_cmd(device: str, batch: int, steps: int, repeats: int, descriptor: str, as_json: bool) -> None:
    """Time the Langevin revision loop against a plain eager loop written like the papers' code."""
    from .bench import run_bench
    from .build import pick_device

    if descriptor not in _registries().energy:
        raise UsageError(f"--descriptor: unknown energy model '{descriptor}' (see `coop plugins`)")
    res = run_bench(pick_device(device), batch, steps, repeats, descriptor)
    if as_json:
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(
        f"Langevin revision, {descriptor}, batch {batch}, {steps} steps on {res['device']} ({res['device_name']}, "
        f"torch {res['torch']}, {res['threads']} threads), median of {repeats}:\n"
        f"  coopnets sampler : {res['framework_s_median'] * 1e3:8.2f} ms\n"
        f"  eager baseline   : {res['baseline_s_median'] * 1e3:8.2f} ms\n"
        f"  baseline / coopnets = {res['speedup_baseline_over_framework']:.2f}x"
    )


# ---------------------------------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    """Console entry point: map errors to exit codes with one-paragraph messages."""
    from .trainer import Interrupted

    try:
        code = cli.main(args=argv, prog_name="coop", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click.exceptions.Abort:
        _echo("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except (UsageError, CheckpointError) as exc:
        _echo(f"error: {exc}")
        return 2
    except RunFailure as exc:
        _echo(f"run failed: {exc}")
        return 1
    except Interrupted as exc:
        _echo(f"interrupted: {exc}")
        return 130
    except KeyboardInterrupt:
        _echo("aborted by Ctrl-C; the last good checkpoint is untouched")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
