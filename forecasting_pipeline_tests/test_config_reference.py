"""The configuration reference cannot drift: the committed page, the settings module that reads
the environment, `.env.example` and the compose files are checked against one registry."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from forecasting_pipeline import settings as settings_module
from forecasting_pipeline.config_reference import REGENERATE_COMMAND, compose_app_environment, render_markdown
from forecasting_pipeline.settings import (
    COMPOSE_VARIABLES,
    REPO_ROOT,
    SECTIONS,
    VARIABLES,
    load_settings,
)

CONFIGURATION_PAGE = REPO_ROOT / "docs" / "configuration.md"
# What counts as a deployment variable in settings.py: the names the brief of this page covers.
VARIABLE_NAME = re.compile(r"FP_[A-Z0-9_]+|DAGSTER_HOME|MLFLOW_TRACKING_URI")
REGISTRY_ASSIGNMENTS = {"VARIABLES", "COMPOSE_VARIABLES"}


def _registry_names() -> set[str]:
    return {v.name for v in (*VARIABLES, *COMPOSE_VARIABLES)}


def _names_read_by_settings_module() -> set[str]:
    """Variable names settings.py uses outside its registry: literal names, and the `*_VAR`
    constants wherever code refers to them (parsed, not imported, so nothing is hidden)."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    constants: dict[str, str] = {}
    searched: list[ast.AST] = []
    for node in tree.body:
        targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets = [node.target.id]
        if any(name in REGISTRY_ASSIGNMENTS for name in targets):
            continue  # the registry itself is what is being checked against
        value = getattr(node, "value", None)
        if (
            targets
            and targets[0].endswith("_VAR")
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            constants[targets[0]] = value.value
            continue
        searched.append(node)
    read: set[str] = set()
    for top in searched:
        for node in ast.walk(top):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if VARIABLE_NAME.fullmatch(node.value):
                    read.add(node.value)
            elif isinstance(node, ast.Name) and node.id in constants:
                read.add(constants[node.id])
    return read


def test_the_committed_page_is_what_the_registry_renders():
    committed = CONFIGURATION_PAGE.read_text(encoding="utf-8")
    assert committed == render_markdown(), (
        f"docs/configuration.md is out of date with forecasting_pipeline/settings.py or "
        f"docker-compose.yml; regenerate it with `{REGENERATE_COMMAND}`"
    )


def test_the_documented_command_writes_the_page():
    written = subprocess.run(
        [sys.executable, "-m", "forecasting_pipeline.config_reference"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout
    assert written == CONFIGURATION_PAGE.read_bytes(), f"regenerate it with `{REGENERATE_COMMAND}`"


def test_every_variable_settings_reads_is_in_the_registry_and_every_entry_is_read():
    read = _names_read_by_settings_module()
    listed = {v.name for v in VARIABLES}
    assert read - listed == set(), "read by settings.py but missing from settings.VARIABLES"
    assert listed - read == set(), "listed in settings.VARIABLES but never read by settings.py"
    # Sanity of the parse: the names the Definitions pass as EnvVar are found through *_VAR.
    assert {"FP_DATABASE_URL", "MLFLOW_TRACKING_URI", "DAGSTER_HOME", "FP_HOME"} <= read


def test_compose_variables_are_not_read_by_python():
    assert {v.name for v in COMPOSE_VARIABLES} & _names_read_by_settings_module() == set()


def test_registry_entries_are_unique_and_in_a_known_section():
    names = [v.name for v in (*VARIABLES, *COMPOSE_VARIABLES)]
    assert len(names) == len(set(names)), "a variable is listed twice"
    assert {v.section for v in VARIABLES} <= set(SECTIONS)
    for variable in (*VARIABLES, *COMPOSE_VARIABLES):
        assert variable.description.strip(), f"{variable.name} has no description"
        assert variable.default or variable.unset, f"{variable.name}: say what unset means"


def test_every_variable_of_env_example_is_in_the_registry():
    text = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    # Set (NAME=value) or offered commented out (#NAME=value).
    in_example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    assert {name for name in in_example if name.startswith("FP_")}, "found no FP_ variable: parse broken?"
    assert in_example - _registry_names() == set(), ".env.example offers variables the registry lacks"


def test_every_variable_the_compose_files_substitute_is_in_the_registry():
    substituted: set[str] = set()
    for path in sorted(REPO_ROOT.glob("docker-compose*.yml")):
        substituted |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", path.read_text(encoding="utf-8")))
    assert "POSTGRES_PASSWORD" in substituted
    assert substituted - _registry_names() == set(), "a compose file substitutes an undocumented variable"
    unused = {v.name for v in COMPOSE_VARIABLES} - substituted
    assert unused == set(), "COMPOSE_VARIABLES lists variables no compose file substitutes"


def test_the_containers_get_only_documented_variables():
    environment = compose_app_environment()
    assert environment is not None and "FP_DATABASE_URL" in environment
    assert set(environment) - {v.name for v in VARIABLES} == set()


@pytest.mark.parametrize("variable", [v for v in VARIABLES if v.default], ids=lambda v: v.name)
def test_a_documented_default_is_the_value_an_unset_variable_gets(variable, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # FP_HOME's default is relative to the working directory
    unset = dataclasses.asdict(load_settings({}))
    given = dataclasses.asdict(load_settings({variable.name: variable.default}))
    for resolved in (unset, given):
        resolved.pop("date_cadence_explicit")  # records that FP_DATE_CADENCE was given at all
    assert given == unset
