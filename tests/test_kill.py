"""Runs survive being killed: `coop train R --out DIR --resume` repeated after SIGKILLs finishes
the run, and its final checkpoint is bit-identical to an uninterrupted run's.

Each trial starts a real `coop train` subprocess and SIGKILLs it at a moment drawn from three
kinds: during start-up (before the run directory may exist), between checkpoints (after some
iterations were logged) and while a checkpoint file is being written.  To land inside a
checkpoint write reliably, the subprocess runs with checkpoint writes slowed down (half the
bytes, a pause, the rest) by a wrapper this test passes to ``python -c``; nothing in coopnets
itself knows about the test.  The same command is then repeated until it exits 0.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from coopcore.checkpoint import load_checkpoint

from conftest import tiny_digits_overrides

# Runs `coop` with checkpoint writes slowed down, so a kill can land in the middle of one.
SLOW_WRITES = """
import os, sys, time
import coopcore.checkpoint as ckpt
_write = ckpt.atomic_write_bytes
def slow(path, data):
    if path.suffix != ".ckpt":
        return _write(path, data)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data[: len(data) // 2]); fh.flush()
        time.sleep(0.4)
        fh.write(data[len(data) // 2 :]); fh.flush(); os.fsync(fh.fileno())
    os.replace(tmp, path)
ckpt.atomic_write_bytes = slow
from coopcore.cli import main
sys.exit(main(sys.argv[1:]))
"""

ITERATIONS = 10


def command(out: Path) -> list[str]:
    sets = [x for s in tiny_digits_overrides() for x in ("--set", s)]
    return [sys.executable, "-c", SLOW_WRITES, "train", "coopnets-digits", "--out", str(out), "--resume",
            "--no-progress", "--seed", "3", *sets, "--set", f"run.iterations={ITERATIONS}",
            "--set", "run.checkpoint_every=3", "--set", "run.threads=1", "--set", "run.sample_every=4"]


def _logged(out: Path) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def _writing_checkpoint(out: Path) -> bool:
    return any((out / "checkpoints").glob(".*.tmp-*")) if (out / "checkpoints").exists() else False


def kill_once(out: Path, moment: str, rng: random.Random) -> bool:
    """Start the command and SIGKILL it at `moment`; False if it finished first."""
    proc = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=out.parent)
    deadline = time.time() + 120
    if moment == "startup":
        time.sleep(rng.uniform(0.0, 2.5))
    elif moment == "between":
        target = _logged(out) + rng.randint(1, 3)
        while proc.poll() is None and _logged(out) < target and time.time() < deadline:
            time.sleep(0.005)
    else:  # "checkpoint"
        while proc.poll() is None and not _writing_checkpoint(out) and time.time() < deadline:
            time.sleep(0.005)
    if proc.poll() is not None:
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        return False
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return True


def finish(out: Path) -> subprocess.CompletedProcess:
    # cwd: `python -c` puts the working directory first on sys.path; the repository's would
    # shadow the installed coopnets.
    done = subprocess.run(command(out), capture_output=True, text=True, timeout=300, cwd=out.parent)
    assert done.returncode == 0, done.stderr
    return done


def tensors(payload, path="checkpoint"):
    """Every tensor of a checkpoint payload by key path."""
    if isinstance(payload, torch.Tensor):
        yield path, payload
    elif isinstance(payload, dict):
        for k, v in payload.items():
            yield from tensors(v, f"{path}.{k}")
    elif isinstance(payload, (list, tuple)):
        for i, v in enumerate(payload):
            yield from tensors(v, f"{path}[{i}]")


def final_state(out: Path) -> tuple[dict, list[dict]]:
    pointer = json.loads((out / "checkpoints" / "latest.json").read_text())
    payload = load_checkpoint(out / "checkpoints" / pointer["checkpoint"])
    kept = {k: payload[k] for k in ("models", "optimizers", "objective", "rng", "iteration", "images_seen")}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return kept, rows


def assert_same_run(reference: Path, out: Path) -> None:
    (a, log_a), (b, log_b) = final_state(reference), final_state(out)
    assert (a["iteration"], a["images_seen"]) == (b["iteration"], b["images_seen"]) == (ITERATIONS, a["images_seen"])
    ta, tb = dict(tensors(a)), dict(tensors(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{key} differs from the uninterrupted run"
    assert log_a == log_b  # the log was cut back to each checkpoint it resumed from


def run_in_process(out: Path) -> None:
    """The same command in this process (no start-up cost; the same code path as the CLI)."""
    from conftest import run_cli

    assert run_cli(command(out)[3:]) == 0


def run_trials(tmp_path: Path, plans: list[list[str]], seed: int, capsys) -> None:
    reference = tmp_path / "reference"
    run_in_process(reference)
    rng = random.Random(seed)
    for t, plan in enumerate(plans):
        out = tmp_path / f"trial-{t}"
        killed = [moment for moment in plan if kill_once(out, moment, rng)]
        assert "checkpoint" not in plan or "checkpoint" in killed, "no kill landed inside a checkpoint write"
        done = finish(out)
        assert "Traceback" not in done.stderr
        assert_same_run(reference, out)
        capsys.readouterr()
        run_in_process(out)  # a scheduler repeating the command after completion: nothing to do
        assert "already complete" in capsys.readouterr().err
        assert not any(p.name.startswith(".") for p in out.parent.iterdir()), "a half-made run directory was left"


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path, capsys):
    run_trials(tmp_path, [["startup", "checkpoint", "between"]], seed=0, capsys=capsys)


@pytest.mark.heavy
def test_killed_runs_resume_to_the_uninterrupted_result_many_trials(tmp_path, capsys):
    rng = random.Random(1)
    moments = ["startup", "between", "checkpoint"]
    plans = [[rng.choice(moments) for _ in range(rng.randint(2, 6))] for _ in range(8)]
    run_trials(tmp_path, plans, seed=1, capsys=capsys)
