"""TPAMI Table 3 (FID on LSUN bedroom, CelebA and CIFAR-10).

- the CoopNets evaluation protocol pieces: the "revision_late" sampler takes over D1 at
  `late_revision_from` (CelebA: Langevin noise off in the second half of training), the switch
  survives a checkpoint, a half-configured switch is refused, and an "evaluation" sampler
  drives `samples()` (CIFAR-10: g(X) + 8 Langevin steps);
- the spec's `full` scale is the paper's protocol: the paper's architectures at each
  resolution, FID of 50,000 samples against natural-pixel references, the noise switch at half
  of training at every scale;
- `coop repro table3 --scale smoke` runs end to end and its numbers are pinned (golden).
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from coopcore import Batch, Parts, SamplerOutput
from coopcore.experiment import resolve
from coopcore.tablespec import load_table_spec, plan_cells, plan_runs

TABLE_TOL = dict(default_tolerance=dict(rtol=1e-3, atol=1e-6))
SHAPES = {"cifar": (3, 32, 32), "celeba": (3, 128, 128), "lsun": (3, 256, 256)}


# --- the CoopNets switches -----------------------------------------------------------------------
class Recording:
    """A sampler that returns its init unchanged and logs its name on every run."""

    def __init__(self, name: str, log: list[str], n_steps: int = 1) -> None:
        self.name, self.log, self.n_steps = name, log, n_steps

    def run(self, log_density, init, generator, mask=None):
        self.log.append(self.name)
        return SamplerOutput(samples=init.clone(), energies=torch.zeros(self.n_steps),
                             grad_norms=torch.zeros(self.n_steps))


def _coopnets(samplers: dict, **options):
    from coop_coopnets.networks import ConvDescriptor, ConvDescriptorOptions, ConvGenerator, ConvGeneratorOptions
    from coop_coopnets.objectives import CoopNets, CoopNetsOptions

    torch.manual_seed(0)
    d = ConvDescriptor(ConvDescriptorOptions(input_shape=(1, 8, 8), channels=(4,), kernels=(3,), strides=(2,),
                                             fc_outputs=2, reference_std=0.5))
    g = ConvGenerator(ConvGeneratorOptions(latent_dim=4, out_channels=1, sizes=(4, 8), channels=(4,), kernels=(4, 4)))
    parts = Parts(models={"descriptor": d, "generator": g}, samplers=samplers,
                  optimizers={"descriptor": torch.optim.Adam(d.parameters(), 1e-3),
                              "generator": torch.optim.Adam(g.parameters(), 1e-3)},
                  n_train=8, device=torch.device("cpu"), data_shape=(1, 8, 8))
    return CoopNets(CoopNetsOptions(n_chains=4, **options), parts)


def _batch() -> Batch:
    return Batch(x=torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(1)) * 2 - 1, index=torch.arange(4))


def test_late_revision_takes_over_at_the_switch_and_survives_a_checkpoint():
    log: list[str] = []
    obj = _coopnets({"revision": Recording("early", log), "revision_late": Recording("late", log)},
                    late_revision_from=3)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        obj.step(_batch(), g)
    assert log == ["early"] * 3
    state = obj.state_dict()
    assert state == {"iteration": 3}
    obj.samples(2, g)  # no evaluation sampler: samples() uses the dynamics in force (late)
    assert log[-1] == "late"
    # a fresh objective restored from the checkpoint state continues with the late sampler
    log.clear()
    resumed = _coopnets({"revision": Recording("early", log), "revision_late": Recording("late", log)},
                        late_revision_from=3)
    resumed.load_state_dict(state)
    resumed.step(_batch(), g)
    resumed.step(_batch(), g)
    assert log == ["late", "late"]


def test_evaluation_sampler_drives_samples_but_not_training():
    log: list[str] = []
    obj = _coopnets({"revision": Recording("train", log), "evaluation": Recording("eval", log, n_steps=8)})
    g = torch.Generator().manual_seed(0)
    obj.step(_batch(), g)
    s = obj.samples(3, g)
    assert log == ["train", "eval"]
    assert set(s) == {"generator", "revised"} and s["revised"].shape == (3, 1, 8, 8)


def test_without_the_optional_samplers_coopnets_is_unchanged():
    log: list[str] = []
    obj = _coopnets({"revision": Recording("train", log)})
    g = torch.Generator().manual_seed(0)
    obj.step(_batch(), g)
    obj.samples(2, g)
    assert log == ["train", "train"]


@pytest.mark.parametrize(("sets", "why"), [
    (["objective.options.late_revision_from=5"], "late sampler missing"),
    (["samplers.revision_late={name='langevin_revision', options={noise=false}}"], "switch iteration missing"),
])
def test_half_configured_switch_is_refused(tmp_path, capsys, sets, why):
    args = ["train", "coopnets-digits", "--out", tmp_path / "r", "--no-progress", "--set", "run.iterations=1"]
    for s in sets:
        args += ["--set", s]
    assert run_cli(args) == 2, why
    err = capsys.readouterr().err
    assert "late_revision_from" in err and "revision_late" in err


def test_late_sampler_takes_over_through_the_cli(tmp_path):
    """Through the CLI on digits: with the switch at iteration 3 of 6 and a late sampler of
    zero step size, the revised chains stop moving after the switch (Langevin drift and noise
    both scale with the step size), while before it they move."""
    out = tmp_path / "r"
    code = run_cli(["train", "coopnets-digits", "--out", out, "--no-progress", "--set", "run.iterations=6",
                    "--set", "run.log_every=1", "--set", "run.tensorboard=false", "--set", "run.sample_every=0",
                    "--set", "samplers.revision_late={name='langevin_revision', options={n_steps=10, step_size=1e-12, noise=true}}",
                    "--set", "objective.options.late_revision_from=3", "--set", "data.batch_size=16",
                    "--set", "objective.options.n_chains=16"])
    assert code == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    moved = [abs(r["langevin_energy_end"] - r["langevin_energy_start"]) for r in rows]
    assert all(m > 1e-3 for m in moved[:3]) and all(m < 1e-6 for m in moved[3:]), moved


# --- the spec --------------------------------------------------------------------------------------
def _spec():
    return load_table_spec(Path(str(resources.files("coop_coopnets.tables").joinpath("table3.toml"))))


def test_published_numbers_are_the_papers_table():
    pub = {(p.row, p.column): p.value for p in _spec().published}
    assert len(pub) == 15
    assert pub[("Descriptor in CoopNets (ours)", "LSUN bedroom")] == 35.42
    assert pub[("Generator in CoopNets (ours)", "CelebA")] == 16.98
    assert pub[("W-GAN", "CIFAR-10")] == 48.40
    assert pub[("VAE", "LSUN bedroom")] == 243.47
    assert pub[("DCGAN", "CelebA")] == 21.40


def test_full_scale_is_the_papers_protocol():
    spec = _spec()
    planned = {p.id: p for p in plan_runs(spec, "full")}
    assert set(planned) == {f"{m}-{d}" for m in ("coopnets", "dcgan", "wgan", "vae") for d in SHAPES}
    for run_id, p in planned.items():
        method, dataset = run_id.split("-")
        r = resolve(p.recipe, p.overrides)
        # every network fits the dataset's resolution
        for role, comp in r.models.items():
            net = comp.create()
            shape = net.output_shape if role == "generator" else net.input_shape
            assert tuple(shape) == SHAPES[dataset], (run_id, role)
        labels = {label: m.options for label, m in r.metrics}
        assert set(labels) == ({"fid_descriptor", "fid_generator"} if method == "coopnets" else {"fid_generator"})
        for label, o in labels.items():
            assert o.n_samples == 50000 and o.backend == "fid-helper"
            assert o.samples == ("revised" if label == "fid_descriptor" else "generator")
            assert o.reference.options["scaling"] == "unit"  # natural pixels, not min-max stretched
    cifar = resolve(planned["coopnets-cifar"].recipe)
    assert cifar.batching.batch_size == 300 and cifar.objective.options.n_chains == 400
    assert cifar.samplers["evaluation"].options.n_steps == 8
    assert {o.sample_scaling for _, o in [(l, m.options) for l, m in cifar.metrics]} == {"per-image-minmax"}
    assert cifar.data.options.split == "all"  # the 60,000 images
    wgan = resolve(planned["wgan-celeba"].recipe)
    assert (wgan.objective.options.weight_clip, wgan.objective.options.d_steps) == (0.01, 5)
    cells = {(c.row, c.column): c for c in plan_cells(spec)}
    assert len(cells) == 15
    assert (cells[("Descriptor in CoopNets (ours)", "CIFAR-10")].metric,
            cells[("Generator in CoopNets (ours)", "CIFAR-10")].metric) == ("fid_descriptor", "fid_generator")


@pytest.mark.parametrize("scale", ["smoke", "short", "full"])
def test_celeba_noise_goes_off_at_half_of_training_at_every_scale(scale):
    p = {p.id: p for p in plan_runs(_spec(), scale)}["coopnets-celeba"]
    r = resolve(p.recipe, p.overrides)
    assert 2 * r.objective.options.late_revision_from == r.run.iterations
    assert r.samplers["revision"].options.noise and not r.samplers["revision_late"].options.noise


def test_golden_repro_table3_smoke(tmp_path, num_regression, monkeypatch):
    monkeypatch.setenv("COOP_CACHE", str(tmp_path / "cache"))  # reference statistics computed here
    out = tmp_path / "repro"
    code = run_cli(["repro", "coopnets:table3", "--scale", "smoke", "--out", out, "--no-progress",
                    "--set", "run.threads=1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "| Descriptor in CoopNets (ours) | 35.42 |" in report  # the paper's number beside ours
    baselines = {"dcgan": "DCGAN", "wgan": "W-GAN", "vae": "VAE"}
    assert results["failed"] == 0
    assert sorted(results["runs"]) == sorted(["coopnets-celeba"] + [f"{m}-celeba" for m in baselines])
    ok = {c["row"]: c for c in results["cells"] if c["status"] == "ok"}
    assert set(ok) == {"Generator in CoopNets (ours)", "Descriptor in CoopNets (ours)", *baselines.values()}
    assert all(c["column"] == "CelebA" and c["n_samples"] == [10] for c in ok.values())
    assert all("fid-helper" in c["backend"][0] for c in ok.values())
    config = json.loads((out / "runs" / "coopnets-celeba" / "config.json").read_text())
    assert config["objective"]["options"]["late_revision_from"] == 8 and config["run"]["iterations"] == 16
    for method in baselines:  # the digits recipes, same data and length as the CoopNets smoke run
        config = json.loads((out / "runs" / f"{method}-celeba" / "config.json").read_text())
        assert config["run"]["name"] == f"{method}-digits" and config["run"]["iterations"] == 16
        assert config["data"]["options"]["limit"] == 200 and config["data"]["batch_size"] == 20
    num_regression.check({"fid_descriptor": ok["Descriptor in CoopNets (ours)"]["ours"],
                          "fid_generator": ok["Generator in CoopNets (ours)"]["ours"],
                          **{f"fid_{m}": ok[row]["ours"] for m, row in baselines.items()}}, **TABLE_TOL)
