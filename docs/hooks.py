"""mkdocs hooks (``hooks:`` in mkdocs.yml): the pages generated from the code at build time.

- ``index.md``: README.md, with its links rewritten for the site;
- ``reference/options.md`` and ``reference/recipe.schema.json``: every built-in component's
  options and the recipe's JSON Schema, from the loaded registries (`coopcore.reference`);
- ``reference/api.md``: one mkdocstrings block per name in ``coopcore.__all__`` (the value
  types, which have their own page, excepted) and the checks of `coopcore.contract`.

None of these is a checked-in file; links in the prose that leave the docs folder (to
``examples/`` and other repository files) are rewritten to plain repository paths.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

#: Shown on reference/values.md instead of on the API page.
VALUE_TYPES = (
    "Batch", "Parts", "StepResult", "SamplerOutput", "LogDensity", "MetricResult", "EvalContext",
)

log = logging.getLogger("mkdocs.hooks.coopnets")

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _repo(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _api_page() -> str:
    import coopcore
    import coopcore.contract as contract

    names = [n for n in coopcore.__all__ if not n.startswith("_") and n not in VALUE_TYPES]
    out = [
        "# Public API",
        "",
        "What a plugin may import: the names exported by `coopcore` (its `__all__`, listed here "
        "in full and generated from it when the site is built) and the behavioural checks of "
        "`coopcore.contract`.  The value types a plugin builds or receives (`Batch`, `Parts`, "
        "`StepResult`, `SamplerOutput`, `LogDensity`, `MetricResult`, `EvalContext`) have "
        "[their own page](values.md).",
        "",
        "## `coopcore`",
        "",
    ]
    for name in sorted(names, key=str.lower):
        out += [f"::: coopcore.{name}", ""]
    checks = [n for n in getattr(contract, "__all__", dir(contract)) if not n.startswith("_")]
    out += [
        "## `coopcore.contract`",
        "",
        "::: coopcore.contract",
        "    options:",
        "      show_root_heading: false",
        "      members: false",
        "",
    ]
    for name in sorted(checks, key=str.lower):
        out += [f"::: coopcore.contract.{name}", ""]
    out += [
        "## Running a recipe from Python",
        "",
        "The path `coop train`, `coop repro`, `coop sample` and `coop eval` take: resolve a recipe "
        "(`coopcore.experiment`), build it (`coopcore.build`), train or reopen a run (`coopcore.run`) "
        "in a run directory (`coopcore.rundir`).",
        "",
    ]
    for module, members in RECIPE_API:
        out += [f"### `{module}`", "", f"::: {module}", "    options:", "      show_root_heading: false",
                "      members: false", ""]
        out += [f"::: {module}.{name}\n" for name in members]
    return "\n".join(out)


# The modules behind the recipe-to-run path, and the names of each that scripts and tests use.
RECIPE_API = (
    ("coopcore.experiment", ("resolve", "resolve_data", "named_component", "ResolvedExperiment", "Component")),
    ("coopcore.build", ("build_experiment", "Experiment")),
    ("coopcore.run", ("train", "open_run", "OpenedRun")),
    ("coopcore.rundir", ("RunDir",)),
)


def _index_page(repo: Path) -> str:
    text = (repo / "README.md").read_text(encoding="utf-8")
    note = (
        "<!-- generated from README.md by docs/hooks.py -->\n\n"
        "> This page is the repository's README.  Plugin authors: start with "
        "[Writing a plugin](plugins.md), then the [value types](reference/values.md), the "
        "[options reference](reference/options.md) and the [public API](reference/api.md).\n\n"
    )
    return note + text


def on_files(files: Files, config) -> Files:
    from coopcore import reference
    from coopcore.plugin_manager import load_registries

    repo = _repo(config)
    registries = load_registries()
    for plugin in registries.plugins:
        if plugin.builtin and plugin.status != "loaded":  # a warning: --strict fails on it
            log.warning("built-in plugin '%s' is %s (%s): its components are missing from the options "
                        "reference", plugin.name, plugin.status, plugin.error)
    generated = {
        "index.md": _index_page(repo),
        "reference/options.md": reference.reference_markdown(registries, builtin_only=True),
        "reference/recipe.schema.json": reference.schema_json(registries, builtin_only=True),
        "reference/api.md": _api_page(),
    }
    for path, content in generated.items():
        old = files.get_file_from_path(path)
        if old is not None:
            files.remove(old)
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    """Rewrite links to repository files outside the docs folder (README's ``docs/...`` links
    on the index page become site links)."""
    repo = _repo(config)
    docs_dir = Path(config["docs_dir"]).resolve()
    is_index = page.file.src_uri == "index.md"
    page_dir = repo if is_index else (docs_dir / page.file.src_uri).parent

    def fix(match: re.Match) -> str:
        bang, text, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (page_dir / path).resolve()
        try:
            inside = resolved.relative_to(docs_dir)
        except ValueError:
            inside = None
        if inside is not None:
            if not is_index:
                return match.group(0)
            new = os.path.relpath(resolved, docs_dir).replace(os.sep, "/") + (f"#{anchor}" if anchor else "")
            return f"{bang}[{text}]({new})"
        if not resolved.exists():
            return match.group(0)  # a broken link: left for mkdocs to report
        rel = resolved.relative_to(repo).as_posix() if resolved.is_relative_to(repo) else path
        if text.strip("`") == rel:
            return text
        return f"{text} (`{rel}` in the repository)"

    return _LINK.sub(fix, markdown)
