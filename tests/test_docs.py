"""The documentation plugin authors read is built from the code and checked here.

- the site (mkdocs.yml, with the pages docs/hooks.py generates) builds with ``--strict``:
  a broken link or anchor, or a docstring mkdocstrings cannot render, fails the suite;
- the options reference (`coopcore.reference`, ``coop plugins --options NAME``) shows each
  option's type, default, constraint and description, and an unknown name exits 2 with close
  matches;
- the recipe JSON Schema (``coop plugins --schema``) accepts every packaged recipe and rejects
  the invalid ones the recipe loader rejects.

mkdocs and jsonschema come with the ``test`` extra; locally the tests that need them skip
without them, under ``CI=true`` their absence is a failure.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from importlib import resources
from pathlib import Path
from typing import Optional

import attrs
import pytest

from coopcore.cli import main

REPO = Path(__file__).resolve().parents[1]


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        how = f"{module} is not installed (pip install -e '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must install the test extra: {how}", pytrace=False)
        pytest.skip(how)


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------
# the site
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _need("mkdocs")
    _need("mkdocstrings_handlers.python")
    if not (REPO / "mkdocs.yml").exists():
        pytest.skip("not a source checkout (no mkdocs.yml)")
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"mkdocs build --strict: {elapsed:.1f} s")
    return out


def test_site_builds_strict_with_every_page(site):
    for page in ("index.html", "plugins/index.html", "metrics/index.html", "reference/values/index.html",
                 "reference/options/index.html", "reference/api/index.html"):
        assert (site / page).is_file(), page
    index = (site / "index.html").read_text()
    assert "Writing a plugin" in index and 'href="plugins/"' in index  # README's docs/ links work on the site


def _ids(html_text: str) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', html_text))


def test_public_api_and_value_types_are_documented(site):
    import coopcore
    import coopcore.contract as contract

    ids = _ids((site / "reference/api/index.html").read_text()) | _ids((site / "reference/values/index.html").read_text())
    missing = [n for n in coopcore.__all__ if not n.startswith("_") and f"coopcore.{n}" not in ids]
    assert not missing, f"exported by coopcore but not on the API pages: {missing}"
    checks = [n for n in contract.__all__ if n.startswith("check_")]
    assert checks and all(f"coopcore.contract.{n}" in ids for n in checks)
    values = (site / "reference/values/index.html").read_text()
    for name in ("Batch", "Parts", "StepResult", "SamplerOutput", "LogDensity", "MetricResult", "EvalContext"):
        assert f'id="coopcore.{name}"' in values, name
    # the field MetricResult needs and the training set of EvalContext are explained
    assert "what was measured" in values and "train_dataset" in values


def test_options_page_and_schema_are_generated(site):
    page = (site / "reference/options/index.html").read_text()
    assert 'id="sampler-langevin"' in page and 'id="dataset-digits"' in page
    assert "step_size" in page and "ExperimentConfig" in page
    schema = json.loads((site / "reference/recipe.schema.json").read_text())
    assert schema["$schema"].endswith("2020-12/schema")
    assert not (REPO / "docs" / "reference" / "options.md").exists()  # generated, never checked in


# ---------------------------------------------------------------------------------------
# coop plugins --options / --schema
def test_options_of_langevin(capsys):
    from coop_coopnets.samplers import LangevinOptions

    from coopcore.reference import option_doc

    assert main(["plugins", "--options", "langevin"]) == 0
    out = capsys.readouterr().out
    doc = option_doc(LangevinOptions, "step_size")
    assert doc, "the langevin sampler's step_size has no description"
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("step_size:"))
    assert "float" in line and "= 0.002" in line and "> 0" in line
    assert _flat(doc) in _flat(out)
    assert "sampler" in out and "plugin 'coopnets'" in out


def test_options_json_and_family_prefix(capsys):
    assert main(["plugins", "--options", "dataset:digits", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (comp,) = data["components"]
    assert comp["family"] == "dataset" and comp["owner"] == "datasets"
    fields = {o["name"]: o for o in comp["options"]}
    assert fields["size"]["default"] == 28 and fields["size"]["constraints"] == ["> 0"]
    assert fields["split"]["type"] == '"train" | "test" | "validation" | "all"'
    assert all(o["doc"] for o in comp["options"]), "every option of the digits dataset is documented"


def test_unknown_component_exits_2_with_close_matches(capsys):
    assert main(["plugins", "--options", "langevn"]) == 2
    err = capsys.readouterr().err
    assert "'langevn'" in err and "Close matches: langevin" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------
# how options are described
def test_option_doc_sources_and_validators_in_words():
    from coopcore import in_range, non_negative, optional_positive, positive, preset_options
    from coopcore.reference import DOC_KEY, describe_options

    @attrs.frozen(kw_only=True)
    class Opts:
        """Test options."""

        a: int = attrs.field(default=1, validator=positive, metadata={DOC_KEY: "From metadata."})
        # From the comment
        # above the field.
        b: float = attrs.field(default=0.5, validator=in_range(0.0, 1.0))  # and its own line
        c: Optional[float] = attrs.field(default=None, validator=optional_positive)
        """From an attribute docstring."""
        d: tuple[int, ...] = attrs.field(default=(1, 2), validator=[non_negative, attrs.validators.min_len(1)])
        e: str = attrs.field(default="x", validator=attrs.validators.in_(("x", "y")))

    opts = {o.name: o for o in describe_options(Opts)}
    assert opts["a"].doc == "From metadata." and opts["a"].constraints == ["> 0"]
    assert opts["b"].doc == "From the comment above the field. and its own line"
    assert opts["b"].constraints == ["in [0.0, 1.0]"] and opts["b"].default_text() == "0.5"
    assert opts["c"].doc == "From an attribute docstring." and opts["c"].type == "float | none"
    assert opts["c"].default_text() == '"none"'
    assert opts["d"].constraints == [">= 0", "at least 1 items"] and opts["d"].default_text() == "[1, 2]"
    assert opts["e"].constraints == ['one of "x", "y"']
    preset = {o.name: o for o in describe_options(preset_options(Opts, "Preset", a=3))}
    assert preset["a"].doc == "From metadata." and preset["a"].default == 3  # inherited from the base


# ---------------------------------------------------------------------------------------
# the recipe schema
@pytest.fixture(scope="module")
def validator():
    _need("jsonschema")
    import jsonschema

    from coopcore.plugin_manager import load_registries
    from coopcore.reference import recipe_schema

    schema = recipe_schema(load_registries())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _packaged_recipes() -> dict[str, dict]:
    root = resources.files("coopcore.recipes")
    return {p.name: tomllib.loads(p.read_text()) for p in root.iterdir() if p.name.endswith(".toml")}


def test_schema_accepts_every_packaged_recipe(validator):
    recipes = _packaged_recipes()
    assert len(recipes) >= 10
    for name, data in recipes.items():
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]
        assert not errors, f"{name}: {errors[:3]}"


def test_schema_accepts_resolved_configs_and_every_default(validator):
    """config.json (every default filled in, None as null) and each component's default options."""
    from coopcore.config import unstructure
    from coopcore.experiment import resolve_data
    from coopcore.plugin_manager import get_registries
    from coopcore.reference import RECIPE_SLOTS

    registries = get_registries()
    for name, data in _packaged_recipes().items():
        resolved = json.loads(json.dumps(resolve_data(data, name, registries).to_data()))
        errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(resolved)]
        assert not errors, f"{name} (resolved): {errors[:3]}"
    defs = validator.schema["$defs"]
    checked = 0
    for family in {f for families in RECIPE_SLOTS.values() for f in families}:
        for entry in registries.family(family).entries():
            sub = type(validator)({"$ref": f"#/$defs/options.{family}.{entry.name}", "$defs": defs})
            errors = [e.message for e in sub.iter_errors(json.loads(json.dumps(unstructure(entry.options()))))]
            assert not errors, f"{family} '{entry.name}': its default options fail the schema: {errors[:3]}"
            checked += 1
    assert checked > 20


@pytest.mark.parametrize("change, where", [
    (lambda d: d["samplers"]["revision"]["options"].update(step_size=-0.1), "samplers.revision.options.step_size"),
    (lambda d: d["samplers"]["revision"]["options"].update(steps=5), "samplers.revision.options.steps"),
    (lambda d: d["samplers"]["revision"].update(name="no_such_sampler"), "samplers.revision.name"),
    (lambda d: d["data"]["options"].update(split="nope"), "data.options.split"),
    (lambda d: d["run"].update(iterations="ten"), "run.iterations"),
    (lambda d: d.pop("objective"), "objective"),
])
def test_schema_rejects_what_the_loader_rejects(validator, change, where):
    from coopcore.errors import UsageError
    from coopcore.experiment import resolve_data

    data = copy.deepcopy(_packaged_recipes()["coopnets-digits.toml"])
    resolve_data(copy.deepcopy(data), "<test>")  # the unchanged recipe resolves
    change(data)
    assert list(validator.iter_errors(data)), f"the schema accepts an invalid {where}"
    with pytest.raises(UsageError):  # and the recipe loader agrees it is invalid
        resolve_data(data, "<test>")


def test_schema_command_prints_the_schema(capsys):
    assert main(["plugins", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["properties"]["samplers"]["additionalProperties"]["properties"]["name"]["enum"]
    assert "langevin" in schema["properties"]["samplers"]["additionalProperties"]["properties"]["name"]["enum"]
    assert main(["plugins", "--schema", "--options", "langevin"]) == 2
