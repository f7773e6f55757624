"""Ctrl-C during training: the iteration finishes, a checkpoint is saved, exit code 130."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from coopcore.checkpoint import CheckpointDir

from conftest import tiny_digits_overrides


def test_sigint_saves_checkpoint_and_resume_continues(tmp_path):
    coop = Path(sys.executable).with_name("coop")
    out = tmp_path / "run"
    sets = [x for s in tiny_digits_overrides() for x in ("--set", s)]
    cmd = [str(coop), "train", "coopnets-digits", "--out", str(out), "--no-progress", *sets,
           "--set", "run.iterations=100000", "--set", "run.checkpoint_every=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    path, payload, warnings = CheckpointDir(out / "checkpoints").load_latest()
    assert not warnings and payload["iteration"] >= 3
    code = subprocess.run([*cmd[:2], "coopnets-digits", "--out", str(out), "--resume", "--no-progress", *sets,
                           "--set", f"run.iterations={payload['iteration'] + 2}", "--set", "run.checkpoint_every=0"],
                          capture_output=True, text=True, timeout=120)
    assert code.returncode == 0, code.stderr
    assert f"at iteration {payload['iteration']}" in code.stderr
