"""Bad recipes and bad command lines: exit code 2 and a message naming the key path."""
from __future__ import annotations

import pytest
import torch

from coopcore.config import ExperimentConfig, apply_overrides, structure
from coopcore.errors import ConfigError

from conftest import run_cli

RECIPE = """
[run]
name = "t"
iterations = 2
[data]
name = "digits"
batch_size = 8
[models.descriptor]
name = "coopnets.descriptor.mnist"
[models.generator]
name = "coopnets.generator.mnist"
[samplers.revision]
name = "langevin_revision"
[optimizers.descriptor]
lr = 0.001
[optimizers.generator]
lr = 0.001
[objective]
name = "coopnets"
"""


def _write(tmp_path, text: str):
    p = tmp_path / "recipe.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "edit, key, words",
    [
        (("[run]", "[run]\nbogus = 1"), "run.bogus", "unknown key"),
        (("iterations = 2", 'iterations = "two"'), "run.iterations", "expected an integer"),
        (("iterations = 2", "iterations = 0"), "run.iterations", "must be > 0"),
        (("batch_size = 8", "batch_size = 8\noptions = { split = 'everything' }"), "data.options.split", "must be one of"),
        (('name = "coopnets.descriptor.mnist"', 'name = "coopnets.descriptor.mnist"\noptions = { channelz = [1] }'),
         "models.descriptor.options.channelz", "unknown key"),
        (('name = "coopnets.descriptor.mnist"', 'name = "coopnets.descriptor.mnist"\noptions = { kernels = [4, "x", 4] }'),
         "models.descriptor.options.kernels[1]", "expected an integer"),
        (('name = "langevin_revision"', 'name = "langevin_revision"\noptions = { step_size = -1.0 }'),
         "samplers.revision.options.step_size", "must be > 0"),
        (('name = "langevin_revision"', 'name = "langevin_revision"\noptions = { metropolis = true, clip = [-1.0, 1.0] }'),
         "samplers.revision.options.clip", "cannot be combined with 'clip'"),
        (('name = "langevin_revision"', 'name = "langevin_revision"\noptions = { metropolis = true, noise = false }'),
         "samplers.revision.options.metropolis", "needs the Langevin noise"),
        (("[optimizers.descriptor]\nlr = 0.001", "[optimizers.descriptor]\nlr = 0.001\nbetas = [0.5, 1.5]"),
         "optimizers.descriptor.betas", "[0, 1)"),
        (('name = "coopnets"', 'name = "no_such_objective"'), "objective.name", "unknown objective"),
        (("[optimizers.generator]\nlr = 0.001", ""), "optimizers", "needs [optimizers.generator]"),
    ],
)
def test_bad_recipe_exits_2_naming_the_key(tmp_path, capsys, edit, key, words):
    old, new = edit
    assert old in RECIPE
    path = _write(tmp_path, RECIPE.replace(old, new, 1))
    code = run_cli(["train", path, "--out", tmp_path / "run", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"'{key}'" in err and words in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_bad_set_override_and_bad_toml(tmp_path, capsys):
    path = _write(tmp_path, RECIPE)
    assert run_cli(["train", path, "--set", "run.iterationz=3", "--out", tmp_path / "r"]) == 2
    assert "'run.iterationz'" in capsys.readouterr().err
    assert run_cli(["train", path, "--set", "noequals", "--out", tmp_path / "r"]) == 2
    assert "key=value" in capsys.readouterr().err
    bad = _write(tmp_path, "[run\nname=1")
    assert run_cli(["train", bad]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert run_cli(["train", tmp_path / "missing.toml"]) == 2
    assert "not found" in capsys.readouterr().err


def test_structure_converts_and_validates():
    import tomllib

    data = apply_overrides(tomllib.loads(RECIPE), ["run.seed=5", "data.options.size=16"])
    cfg = structure(ExperimentConfig, data)
    assert cfg.run.seed == 5 and cfg.data.options == {"size": 16}
    assert cfg.optimizers["descriptor"].betas == (0.9, 0.999)
    with pytest.raises(ConfigError, match="'run.seed'"):
        structure(ExperimentConfig, apply_overrides(data, ["run.seed=true"]))
    with pytest.raises(ConfigError, match="'run.seed'"):
        structure(ExperimentConfig, apply_overrides(data, ["run.seed=-1"]))


def test_missing_mnist_gives_layout_and_exit_2(tmp_path, capsys):
    code = run_cli(["train", "coopnets-mnist", "--data-root", tmp_path, "--out", tmp_path / "r", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train-images-idx3-ubyte" in err and "MNIST/raw" in err and str(tmp_path) in err
    assert run_cli(["train", "coopnets-mnist", "--out", tmp_path / "r2"]) == 2
    assert "--data-root" in capsys.readouterr().err


def test_unknown_table_and_device(capsys, tmp_path):
    assert run_cli(["repro", "table99"]) == 2
    assert "coopnets:table2" in capsys.readouterr().err
    assert run_cli(["train", "coopnets-digits", "--device", "tpu", "--out", tmp_path / "r"]) == 2
    assert "'run.device'" in capsys.readouterr().err


def test_none_string_sets_optional_fields():
    from coop_coopnets.networks import ConvDescriptorOptions

    opts = structure(ConvDescriptorOptions, {"reference_std": "none", "init_std": "none"})
    assert opts.reference_std is None and opts.init_std is None
    with pytest.raises(ConfigError, match="'fc_outputs'"):
        structure(ConvDescriptorOptions, {"fc_outputs": "none"})


def test_cross_field_error_names_the_field_left_at_its_default():
    from coop_coopnets.networks import ConvGeneratorOptions

    with pytest.raises(ConfigError) as err:
        # three layers given, 'channels' left at its four-layer default: the check names channels
        structure(ConvGeneratorOptions, {"sizes": [4, 8, 16], "kernels": [4, 4, 4]}, "models.generator.options")
    assert "'models.generator.options.channels'" in str(err.value)


def test_cross_field_check_names_its_field_with_option_error():
    import attrs

    from coopcore import OptionError

    @attrs.frozen
    class KineticOptions:
        friction: float = 1.0
        step_size: float = 0.1

        def __attrs_post_init__(self) -> None:
            if self.step_size * self.friction > 1:
                raise OptionError("step_size", "times 'friction' must be <= 1 for a stable integrator")

    with pytest.raises(ConfigError) as err:
        structure(KineticOptions, {"friction": 20.0, "step_size": 0.1}, "samplers.revision.options")
    assert str(err.value).startswith("'samplers.revision.options.step_size': times 'friction'")


def test_data_model_shape_mismatch_exits_2_before_training(tmp_path, capsys):
    """28x28 data into a descriptor built for 16x16: exit 2 naming both keys, no run directory."""
    from conftest import tiny_digits_overrides

    out = tmp_path / "run"
    sets = [x for s in tiny_digits_overrides() for x in ("--set", s)]
    code = run_cli(["train", "coopnets-digits", "--out", out, "--no-progress", *sets, "--set", "data.options.size=28"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "'models.descriptor'" in err and "input_shape [1, 16, 16]" in err and "'data'" in err
    assert "[1, 28, 28]" in err and "Traceback" not in err
    assert not out.exists()  # refused before the run directory was made


def test_generator_output_shape_is_checked_too(registries):
    from coopcore.build import build_experiment
    from coopcore.experiment import resolve

    from conftest import tiny_digits_overrides

    resolved = resolve("coopnets-digits", [*tiny_digits_overrides(), "models.generator.options.out_channels=3"],
                       registries=registries)
    with pytest.raises(ConfigError, match=r"'models\.generator'.*output_shape \[3, 16, 16\].*\[1, 16, 16\]"):
        build_experiment(resolved, torch.device("cpu"), registries=registries)
