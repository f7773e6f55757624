"""Checkpoints: complete state, bit-exact resume on CPU, damage detection, atomic writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from coopcore.checkpoint import CheckpointDir, load_checkpoint, save_checkpoint
from coopcore.errors import CheckpointError
from coopcore.experiment import resolve_data
from coopcore.run import train as train_run

from conftest import assert_identical, run_cli

TINY_D = {"name": "coopnets.descriptor", "options": {"input_shape": [1, 16, 16], "channels": [8, 16],
          "kernels": [4, 4], "strides": [2, 2], "fc_outputs": 10, "reference_std": 0.3}}
TINY_G = {"name": "coopnets.generator", "options": {"latent_dim": 8, "sizes": [4, 8, 16], "channels": [16, 8],
          "kernels": [4, 4, 4]}}


def config(objective: str, iterations: int) -> dict:
    models, samplers, opts = {}, {}, {}
    if objective in ("coopnets", "algorithm_d"):
        models["descriptor"] = TINY_D
        samplers["revision"] = {"name": "langevin_revision", "options": {"n_steps": 3, "step_size": 0.03}}
        opts["descriptor"] = {"lr": 1e-3, "betas": [0.5, 0.999]}
    if objective in ("coopnets", "algorithm_g"):
        models["generator"] = TINY_G
        opts["generator"] = {"lr": 1e-3, "betas": [0.5, 0.999]}
    if objective == "algorithm_g":
        samplers["inference"] = {"name": "langevin_inference", "options": {"n_steps": 3}}
    return {
        "run": {"name": objective, "seed": 3, "iterations": iterations, "log_every": 1, "sample_every": 0,
                "checkpoint_every": 2, "tensorboard": False, "sample_count": 4},
        "data": {"name": "digits", "batch_size": 16, "options": {"size": 16, "limit": 64}},
        "models": models, "samplers": samplers, "optimizers": opts, "objective": {"name": objective},
    }


def train(data: dict, run_dir: Path, registries, resume: bool = False):
    """Train through the path `coop train` takes; return the run's summary."""
    return train_run(resolve_data(data, registries=registries), run_dir, resume=resume, progress=False,
                     echo=lambda m: None, registries=registries)


def full_state(summary) -> dict:
    return load_checkpoint(summary.checkpoint)


@pytest.mark.parametrize("objective", ["coopnets", "algorithm_d", "algorithm_g"])
def test_stop_and_resume_is_bit_exact(tmp_path, registries, objective):
    straight = train(config(objective, 7), tmp_path / "straight", registries)
    train(config(objective, 4), tmp_path / "split", registries)  # stopped after iteration 4 (epoch boundary)
    resumed = train(config(objective, 7), tmp_path / "split", registries, resume=True)
    a, b = full_state(straight), full_state(resumed)
    for key in ("models", "optimizers", "objective", "iteration", "images_seen"):
        assert_identical(a[key], b[key], key)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])
    log_a = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert log_a == log_b


def test_checkpoint_holds_complete_state(tmp_path, registries):
    t = train(config("algorithm_d", 2), tmp_path / "r", registries)
    payload = load_checkpoint(t.checkpoint)
    for key in ("models", "optimizers", "objective", "rng", "iteration", "images_seen", "config", "coopnets_version"):
        assert key in payload
    assert payload["objective"]["chains"].shape == (16, 1, 16, 16)
    assert set(payload["rng"]) >= {"python", "numpy", "torch", "generator"}
    assert payload["config"]["run"]["name"] == "algorithm_d"


def test_truncated_or_damaged_checkpoint_is_detected(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", {"x": torch.arange(1000)})
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(1000))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)
    flipped = bytearray(raw)
    flipped[-10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a coopnets checkpoint"):
        load_checkpoint(path)


def test_resume_falls_back_to_previous_good_checkpoint(tmp_path):
    d = CheckpointDir(tmp_path, keep=3)
    d.save(1, {"it": 1})
    newest = d.save(2, {"it": 2})
    newest.write_bytes(newest.read_bytes()[:40])  # e.g. a disk filled up during a copy
    path, payload, warnings = d.load_latest()
    assert payload["it"] == 1 and path.name == "iter-00000001.ckpt"
    assert warnings and "truncated" in warnings[0]


def test_interrupted_write_leaves_last_good_checkpoint(tmp_path, monkeypatch):
    d = CheckpointDir(tmp_path, keep=2)
    d.save(1, {"it": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("coopcore.checkpoint.os.replace", crash)
    with pytest.raises(OSError):
        d.save(2, {"it": 2})
    monkeypatch.undo()
    path, payload, _ = d.load_latest()
    assert payload["it"] == 1
    assert json.loads((tmp_path / "latest.json").read_text())["iteration"] == 1


def test_run_directory_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("precious")
    assert run_cli(["train", "coopnets-digits", "--out", out]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "something").read_text() == "precious"
    assert run_cli(["train", "coopnets-digits", "--out", out, "--resume"]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert (out / "something").read_text() == "precious"


def test_resume_rejects_changed_recipe(tmp_path, registries):
    train(config("algorithm_d", 2), tmp_path / "r", registries)
    changed = config("algorithm_d", 4)
    changed["optimizers"]["descriptor"]["lr"] = 0.5
    from coopcore.errors import UsageError

    with pytest.raises(UsageError, match="optimizers.descriptor.lr"):
        train(changed, tmp_path / "r", registries, resume=True)


def _body(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[raw.index(b"\n") + 1:]


@pytest.mark.parametrize("objective", ["coopnets", "algorithm_g"])
def test_run_checkpoints_open_with_weights_only(tmp_path, registries, objective):
    """The payload is plain data: torch's restricted unpickler reads it (no code runs)."""
    import io

    summary = train(config(objective, 2), tmp_path / "r", registries)
    payload = torch.load(io.BytesIO(_body(summary.checkpoint)), weights_only=True)
    assert payload["iteration"] == 2 and isinstance(payload["torch_version"], str)
    assert isinstance(payload["rng"]["numpy"][1], torch.Tensor)


def test_format_1_checkpoint_loads_with_a_warning(tmp_path):
    """A checkpoint written before format 2 (pickled numpy RNG state inside) still loads."""
    import hashlib
    import io

    import numpy as np

    buf = io.BytesIO()
    torch.save({"rng": {"numpy": np.random.get_state()}, "x": torch.arange(3)}, buf)
    body = buf.getvalue()
    path = tmp_path / "old.ckpt"
    path.write_bytes(b"COOPCKPT 1 %s %d\n" % (hashlib.sha256(body).hexdigest().encode(), len(body)) + body)
    notes = []
    payload = load_checkpoint(path, warn=notes.append)
    assert torch.equal(payload["x"], torch.arange(3)) and notes and "format-1" in notes[0]
    with pytest.warns(UserWarning, match="trust its source"):
        load_checkpoint(path)


def test_payload_that_is_not_plain_data_is_refused_naming_the_key(tmp_path):
    class Opaque:
        pass

    with pytest.raises(CheckpointError, match=r"payload\['objective'\]\['ema'\] is a .*Opaque"):
        save_checkpoint(tmp_path / "x.ckpt", {"objective": {"ema": Opaque()}})
    assert not (tmp_path / "x.ckpt").exists()
