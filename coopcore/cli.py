"""The `coop` command line.

Exit codes: 0 success; 2 bad usage or bad input (one paragraph naming the field or file and
what would be valid, no traceback); 1 a failure during a run (with the run directory and the
last checkpoint); 130 interrupted by Ctrl-C after saving a checkpoint.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__
from .errors import CheckpointError, RunFailure, UsageError

DATA_ROOT_HELP = "Root folder of datasets (default: the recipe's data.root, then $COOP_DATA)."


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _registries():
    from .plugin_manager import get_registries

    return get_registries()


def _report_failed_plugins() -> None:
    """One line when a plugin failed to load (details: `coop plugins`)."""
    failed = [p.name for p in _registries().plugins if p.status == "failed"]
    if failed:
        _echo(f"warning: {len(failed)} plugin(s) failed to load and are skipped: {', '.join(failed)} "
              "(see `coop plugins`)")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="coop")
def cli() -> None:
    """coopnets: cooperative learning of descriptors (EBMs), generators and inference nets.

    \b
    Typical use:
      coop train coopnets-digits            train a packaged recipe (or a .toml path)
      coop train RECIPE --nproc 4           the same on 4 processes (torchrun; docs/distributed.md)
      coop sample runs/coopnets-digits      sample grids from a run's last checkpoint
      coop eval runs/RUN --metric parzen    evaluate a trained run
      coop repro table2 --scale smoke       reproduce a paper table (paper's numbers beside ours)
      coop plugins                          list plugins and what they register
      coop bench --objective all            each objective's iteration against a plain PyTorch loop
    """


# ---------------------------------------------------------------------------------------
@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--options", "options_of", metavar="NAME",
              help="Print the options of component NAME (type, default, constraint, description); "
                   "FAMILY:NAME picks one family, e.g. sampler:langevin.")
@click.option("--schema", "schema", is_flag=True, help="Print the JSON Schema of a recipe file.")
def plugins_cmd(as_json: bool, options_of: Optional[str], schema: bool) -> None:
    """List plugins, their versions, what they register and load errors; or one component's
    options (--options NAME), or the recipe JSON Schema (--schema)."""
    from . import reference

    reg = _registries()
    if options_of is not None and schema:
        raise UsageError("--options and --schema are exclusive: give one")
    if schema:
        click.echo(reference.schema_json(reg))
        return
    if options_of is not None:
        found = reference.find_component(reg, options_of)  # UsageError (exit 2) naming close matches
        if as_json:
            click.echo(json.dumps({"components": [c.as_dict() for c in found]}, indent=2))
        else:
            click.echo("\n\n".join(reference.options_text(c) for c in found))
        return
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
@cli.command("train")
@click.argument("recipe")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe value (TOML syntax), e.g. --set run.iterations=500. Repeatable.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Run directory (default: RECIPE itself when it is a run directory; else runs/<run.name>, "
                   "or for a new run the first free runs/<run.name>-N).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last good checkpoint; start it when --out holds no "
                   "run or no checkpoint yet; do nothing when it is complete. Safe to repeat after a kill.")
@click.option("--device", help="cpu, cuda, cuda:N or auto (overrides run.device).")
@click.option("--seed", type=int, help="Random seed (overrides run.seed).")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--nproc", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Train on this many processes of this machine (one per GPU, or CPU processes with gloo), as "
                   "`torchrun --nproc-per-node N -m coopcore.cli train ...` does; data.batch_size is per process.")
def train_cmd(recipe: str, overrides: tuple[str, ...], out: Optional[Path], resume: bool, device: Optional[str],
              seed: Optional[int], data_root: Optional[str], no_progress: bool, nproc: int) -> None:
    """Train from RECIPE: a .toml file, a packaged recipe name (e.g. coopnets-digits) or a run directory.

    Under torchrun (WORLD_SIZE > 1) this process is one rank of a multi-process run (docs/distributed.md)."""
    from .distributed import Distributed, launch_local
    from .experiment import resolve
    from .run import train
    from .trainer import Interrupted

    dist = Distributed.from_environment()
    if nproc > 1:
        if dist is not None:
            raise UsageError("--nproc starts the processes itself; under torchrun leave it out "
                             "(torchrun's --nproc-per-node sets the number)")
        argv = ["train", recipe, *(a for kv in overrides for a in ("--set", kv))]
        for flag, value in (("--out", out), ("--device", device), ("--seed", seed), ("--data-root", data_root)):
            if value is not None:
                argv += [flag, str(value)]
        argv += ["--resume"] * resume + ["--no-progress"] * no_progress
        raise click.exceptions.Exit(launch_local(nproc, argv))
    quiet = dist is not None and not dist.is_main  # rank 0 speaks for the launch
    if not quiet:
        _report_failed_plugins()
    try:
        resolved = resolve(recipe, overrides, seed=seed, device=device, registries=_registries())
        if out is None and Path(recipe).is_dir():
            out = Path(recipe)  # `coop train RUN --resume` continues RUN itself
        summary = train(resolved, out, resume=resume, data_root=data_root, progress=False if no_progress else None,
                        echo=_echo, registries=_registries(), dist=dist)
    except (UsageError, CheckpointError, Interrupted) as exc:
        if quiet:  # every rank meets the same bad input (or the same Ctrl-C); rank 0 reports it once
            raise click.exceptions.Exit(130 if isinstance(exc, Interrupted) else 2) from None
        raise
    if quiet:
        return
    if not summary.already_complete:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(summary.last_scalars.items())[:6])
        done_now = max(1, summary.iterations - summary.start_iteration)
        _echo(f"done: {summary.iterations} iterations in {summary.seconds:.1f} s "
              f"({summary.seconds / done_now:.3f} s/iteration; {shown})")
        _echo(f"samples: {summary.run_dir / 'samples'}  checkpoint: {summary.checkpoint}")
    click.echo(str(summary.run_dir))


# ---------------------------------------------------------------------------------------
@cli.command("sample")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--n", "n", type=click.IntRange(1, 100000), default=64, show_default=True, help="Number of samples.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the PNG grids (default: RUN/samples).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling generator.")
@click.option("--device", help="cpu, cuda, cuda:N or auto.")
@click.option("--label", "label", type=click.IntRange(0), default=None,
              help="Class K: every sample of class K (conditional runs only; default: classes i % n_classes).")
def sample_cmd(run: Path, n: int, out: Optional[Path], seed: int, device: Optional[str],
               label: Optional[int]) -> None:
    """Write PNG grids of samples from RUN's last checkpoint (generator and Langevin-revised)."""
    from .data import value_range
    from .images import save_grid
    from .rng import make_generator
    from .run import open_run

    opened = open_run(run, device=device, echo=_echo, registries=_registries())
    exp = opened.experiment
    out = out or opened.run.samples
    generator = make_generator(seed, exp.device)
    suffix = ""
    if label is None:
        named = exp.objective.samples(n, generator)
    else:
        named = exp.objective.samples(n, generator, labels=_sample_labels(exp, run, n, label))
        suffix = f"-label{label}"
    for kind, images in named.items():
        p = save_grid(images, out / f"sample-iter-{opened.iteration:08d}-{kind}{suffix}-seed{seed}.png",
                      value_range=value_range(exp.dataset))
        click.echo(str(p))


def _sample_labels(exp: Any, run: Path, n: int, label: int) -> Any:
    """`n` copies of class `label` for `coop sample --label`, after checking that the run is
    conditional, that its objective samples given labels and that the class exists."""
    import torch

    from .conditioning import run_classes, samples_take_labels

    k = run_classes(exp.parts.models.values())
    if k == 0:
        raise UsageError(f"--label {label}: {run} is not a conditional run (none of its models has n_classes > 0); "
                         "leave --label out")
    if not samples_take_labels(exp.objective):
        raise UsageError(f"--label: objective '{exp.resolved.objective.name}' cannot sample given labels "
                         "(its samples() has no `labels` argument)")
    if label >= k:
        raise UsageError(f"--label {label}: the run's models are conditioned on {k} classes (0..{k - 1})")
    return torch.full((n,), label, dtype=torch.long, device=exp.device)


@cli.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--metric", "metric", required=True, help="A registered metric or a label from the recipe's [[eval]].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Metric option, e.g. --set n_samples=1000.")
@click.option("--device", help="cpu, cuda, cuda:N or auto.")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the evaluation generator.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def eval_cmd(run: Path, metric: str, overrides: tuple[str, ...], device: Optional[str], data_root: Optional[str],
             seed: int, as_json: bool) -> None:
    """Evaluate RUN's last checkpoint with a metric; appends to RUN/evaluations.jsonl."""
    from .build import MetricFailure
    from .config import apply_overrides, unstructure
    from .experiment import named_component
    from .rng import make_generator
    from .run import open_run, run_failure

    opened = open_run(run, device=device, data_root=data_root, load_data=True, echo=_echo, registries=_registries())
    exp = opened.experiment
    configured = dict(exp.resolved.metrics)
    base = unstructure(configured[metric].options) if metric in configured else {}
    name = configured[metric].name if metric in configured else metric
    comp = named_component(_registries(), "metric", name, apply_overrides(base, list(overrides)), "--metric")
    try:
        res = exp.evaluate(metric, comp.create(), make_generator(seed, exp.device), progress=_echo)
    except MetricFailure as exc:
        raise run_failure(opened.run, f"evaluation of {opened.checkpoint.name} (metric from plugin "
                          f"'{comp.entry.owner}')", exc, opened.checkpoint) from exc
    rec = {"iteration": opened.iteration, "label": metric, "checkpoint": str(opened.checkpoint), **res.as_dict()}
    opened.run.append_evaluation(rec)
    click.echo(json.dumps(rec, indent=2) if as_json else str(res))


# ---------------------------------------------------------------------------------------
def _table_order(name: str) -> tuple:
    """Tables in reading order: by paper, then table2 before table10 (digits compared as numbers)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _table_specs(reg: Any, table: str, paper: Optional[str]) -> list[Any]:
    """The specs TABLE names: ``all``, ``paper:tableN``, ``tableN`` (of --paper) or a spec file."""
    from .repro import load_table_spec

    if table == "all":
        return [reg.table.create(name) for name in sorted(reg.table, key=_table_order)]
    if table.endswith(".toml") and Path(table).is_file():
        return [load_table_spec(Path(table))]
    key = table if ":" in table else f"{paper or 'coopnets'}:{table}"
    if key not in reg.table:
        known = ", ".join(reg.table) or "(none)"
        raise UsageError(f"unknown table '{key}'. Reproducible tables (`coop repro --list`): {known}")
    return [reg.table.create(key)]


def _list_tables(reg: Any, out_root: Path) -> None:
    from .repro import table_status

    for entry in sorted(reg.table.entries(), key=lambda e: _table_order(e.name)):
        spec = reg.table.create(entry.name)
        click.echo(f"{entry.name:22s} {spec.title}  (scales: {', '.join(spec.scales)}; plugin {entry.owner})")
        for scale in spec.scales:
            status = table_status(spec, scale, out_root)
            if status != "not started":
                click.echo(f"{'':22s}   {scale}: {status}  [{out_root}]")


@cli.command("repro")
@click.argument("table", required=False)
@click.option("--paper", help="Paper short name for a bare tableN (default coopnets); `coop repro --list` shows them.")
@click.option("--scale", type=click.Choice(["smoke", "short", "full"]), default="smoke", show_default=True,
              help="smoke: CPU, seconds, embedded data; short: one GPU, ~10 min; full: the paper's protocol.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Output folder of one table (default: OUT_ROOT/<paper>-<table>-<scale>).")
@click.option("--out-root", type=click.Path(path_type=Path), default=Path("repro"), show_default=True,
              help="Where tables' folders live (and where --list looks for finished runs).")
@click.option("--list", "list_tables", is_flag=True, help="List the tables, their scales and what is done under OUT_ROOT.")
@click.option("--device", help="cpu, cuda, cuda:N or auto (default: each recipe's run.device).")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--seed", type=int, help="Replace every run's seed (a seed sweep then repeats one seed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Extra override applied to every run.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Runs at once, each in its own process (with --devices: one device each).")
@click.option("--devices", metavar="DEV,DEV", help="Devices handed to the runs round robin, e.g. cuda:0,cuda:1.")
@click.option("--launcher", type=click.Choice(["slurm", "local", "debug"]),
              help="Hand each run to submitit (slurm: a cluster; local/debug: this machine) and collect them.")
@click.option("--slurm-partition", help="SLURM partition (with --launcher slurm).")
@click.option("--slurm-time", type=click.IntRange(1), default=24 * 60, show_default=True, help="Minutes per run job.")
@click.option("--slurm-gpus", type=click.IntRange(0), default=1, show_default=True, help="GPUs per run job.")
@click.option("--rankings", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="FILE", help="A rater's returned ranking file (human-study tables, e.g. coopnets:table4); "
                                   "repeatable: the table's cells become the mean ranks.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def repro_cmd(table: Optional[str], paper: Optional[str], scale: str, out: Optional[Path], out_root: Path,
              list_tables: bool, device: Optional[str], data_root: Optional[str], seed: Optional[int],
              overrides: tuple[str, ...], jobs: int, devices: Optional[str], launcher: Optional[str],
              slurm_partition: Optional[str], slurm_time: int, slurm_gpus: int, rankings: tuple[Path, ...],
              no_progress: bool) -> int:
    """Reproduce a paper TABLE (table3, multigrid:table3, all, or a spec .toml): train its runs,
    write results.json and report.md with the paper's numbers beside ours.

    Re-invoking skips finished runs and resumes interrupted ones. Exit code: 0 when every run
    succeeded, 10 + the number of failed runs otherwise (2: bad input)."""
    from .repro import Launcher, run_table, table_out_dir

    _report_failed_plugins()
    reg = _registries()
    if list_tables or not table:
        _list_tables(reg, out_root)
        if not list_tables:
            raise UsageError("name a TABLE to reproduce (listed above), e.g. `coop repro table2 --scale smoke`")
        return 0
    specs = _table_specs(reg, table, paper)
    if out is not None and len(specs) > 1:
        raise UsageError("--out names one table's folder; with `all` use --out-root")
    if rankings and len(specs) > 1:
        raise UsageError("--rankings belong to one table's study; name that table")
    for spec in specs:
        if scale not in spec.scales:
            raise UsageError(f"table {spec.key} has no scale '{scale}'; it offers {', '.join(spec.scales)}")
    run_with = Launcher(jobs=jobs, devices=tuple(d.strip() for d in devices.split(",") if d.strip()) if devices else (),
                        submitit=launcher, slurm_partition=slurm_partition, slurm_time_min=slurm_time,
                        slurm_gpus=slurm_gpus)
    failed = 0
    for spec in specs:
        folder = out if out is not None else table_out_dir(spec, scale, out_root)
        results = run_table(spec, scale, folder, reg, device=device, data_root=data_root, seed=seed,
                            extra_overrides=overrides, launcher=run_with, echo=_echo,
                            progress=False if no_progress else None, rankings=rankings)
        if len(specs) == 1:
            _echo((folder / "report.md").read_text())
        failed += results["failed"]
        click.echo(str(folder / "results.json"))
    if failed:
        _echo(f"{failed} run(s) failed; see the reports (the other runs finished)")
        return 10 + min(failed, 89)
    return 0


# ---------------------------------------------------------------------------------------
@cli.command("bench")
@click.option("--objective", "objectives", multiple=True,
              type=click.Choice(["coopnets", "algorithm_d", "multigrid", "triangle", "coopinit", "all"]),
              help="Benchmark this objective's whole iteration and its sampler against a hand-written PyTorch "
                   "loop on the same networks (repeatable; all = every one). Without --objective or --recipe: "
                   "the Langevin loop alone against the papers' eager loop (the options marked legacy).")
@click.option("--recipe", help="The recipe to benchmark (name or .toml); default per objective: coopnets-mnist "
                               "(the paper's MNIST networks), pcd-digits, multigrid-digits, triangle-digits, "
                               "coopinit-digits. Alone, its objective is benchmarked.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Recipe override for both sides (TOML syntax), e.g. a performance option of the framework "
                   "or --set data.batch_size=32. Repeatable.")
@click.option("--data-root", help=DATA_ROOT_HELP)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--repeats", type=click.IntRange(1), help="Timed rounds (each times both sides once, interleaved) "
                                                         "[default: 10 with --objective, 5 legacy].")
@click.option("--warmup", type=click.IntRange(1), default=2, show_default=True,
              help="Untimed iterations of each side first (the first is also FLOP-counted and compared).")
@click.option("--threads", type=click.IntRange(1), help="torch threads (default: torch's choice).")
@click.option("--json", "json_out", is_flag=False, flag_value="-", metavar="[FILE]",
              help="Write the result as JSON to FILE; alone (or FILE = -), print it instead of the table.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the table (markdown, with provenance) to this file.")
@click.option("--batch", type=click.IntRange(1), help="Legacy: chains per run [default: 100].")
@click.option("--steps", type=click.IntRange(1), help="Legacy: Langevin steps per run [default: 10].")
@click.option("--descriptor", help="Legacy: registered energy model [default: coopnets.descriptor.mnist].")
def bench_cmd(objectives: tuple[str, ...], recipe: Optional[str], overrides: tuple[str, ...],
              data_root: Optional[str], device: str, repeats: Optional[int], warmup: int, threads: Optional[int],
              json_out: Optional[str], markdown_out: Optional[Path], batch: Optional[int], steps: Optional[int],
              descriptor: Optional[str]) -> None:
    """Measure what the framework costs against plain PyTorch, side by side in one process.

    \b
    coop bench --objective coopnets              the paper's MNIST CoopNets iteration vs a plain loop
    coop bench --objective all --json out.json   every built-in objective; JSON and a table
    coop bench --recipe my.toml --set data.batch_size=32
    coop bench                                   legacy: the Langevin loop vs the papers' eager loop

    Times are medians over interleaved rounds with their spread; the ratio is framework / plain.
    The report also gives the FLOPs of one iteration (torch's FlopCounterMode), the achieved
    rate against the device's peak, peak memory (CUDA), provenance (device, torch, commit) and
    whether both sides left the same parameters after their first iteration.
    """
    from .build import pick_device

    if threads:
        import torch

        torch.set_num_threads(threads)
    dev = pick_device(device)
    if objectives or recipe:
        from .bench import BENCH_RECIPES, markdown_report, run_objective_benches

        if batch is not None or steps is not None or descriptor is not None:
            raise UsageError("--batch, --steps and --descriptor belong to the legacy Langevin benchmark; with "
                             "--objective/--recipe change the recipe instead (--set data.batch_size=...)")
        names = list(BENCH_RECIPES) if "all" in objectives else list(dict.fromkeys(objectives))
        if recipe is not None and len(names) > 1:
            raise UsageError("--recipe names one recipe: give at most one --objective with it")
        runs = [(recipe, names[0] if names else None)] if recipe is not None else [(BENCH_RECIPES[n], n) for n in names]
        report = run_objective_benches(runs, overrides, device=dev, repeats=repeats or 10, warmup=warmup,
                                       data_root=data_root, registries=_registries(), echo=_echo)
        table = markdown_report(report)
        if json_out not in (None, "-"):
            Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
        if markdown_out is not None:
            markdown_out.write_text(table)
        click.echo(json.dumps(report, indent=2) if json_out == "-" else table)
        return
    from .bench import run_bench

    if markdown_out is not None:
        raise UsageError("--markdown goes with --objective/--recipe (the legacy benchmark prints one line per loop)")
    batch, steps, descriptor = batch or 100, steps or 10, descriptor or "coopnets.descriptor.mnist"
    if descriptor not in _registries().energy:
        raise UsageError(f"--descriptor: unknown energy model '{descriptor}' (see `coop plugins`)")
    res = run_bench(dev, batch, steps, repeats or 5, descriptor)
    if json_out not in (None, "-"):
        Path(json_out).write_text(json.dumps(res, indent=2) + "\n")
    if json_out == "-":
        click.echo(json.dumps(res, indent=2))
        return
    click.echo(
        f"Langevin revision, {descriptor}, batch {batch}, {steps} steps on {res['device']} ({res['device_name']}, "
        f"torch {res['torch']}, {res['threads']} threads), median of {repeats or 5}:\n"
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
