"""`docs/configuration.md`, rendered from the settings registry and docker-compose.yml.

A hand-written list of environment variables drifts from the code that reads them. The page is
therefore generated: every variable `load_settings` reads (`settings.VARIABLES`), every variable
only docker-compose reads (`settings.COMPOSE_VARIABLES`), and what docker-compose.yml passes to
the Dagster containers (its `x-app-environment` block, read from the file itself). Regenerate it
with `python -m forecasting_pipeline.config_reference > docs/configuration.md`; a test fails when
the committed page differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from forecasting_pipeline.settings import (
    COMPOSE_SECTION,
    COMPOSE_VARIABLES,
    REPO_ROOT,
    SECTIONS,
    VARIABLES,
    Variable,
)

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The compose extension field whose mapping every Dagster service takes as its environment.
COMPOSE_APP_ENVIRONMENT = "x-app-environment"
REGENERATE_COMMAND = "python -m forecasting_pipeline.config_reference > docs/configuration.md"

_INTRO = """\
Every setting of a deployment is an environment variable. `forecasting_pipeline/settings.py` is the
only module that reads them, and this page is generated from its registry (`VARIABLES` and
`COMPOSE_VARIABLES`), so it lists exactly what the code reads.

## How to set them

* **Local processes** (the `forecasting-pipeline` CLI, `forecasting-pipeline ui`, `dagster dev`,
  `dagster-daemon`): export the variables in the shell that starts them. Each process reads them
  when it starts, so restart it after a change (reloading a code location keeps the environment
  of the process that serves it). `FP_HOME`, `DAGSTER_HOME` and `FP_DATABASE_URL` must be the
  same for every process of one deployment: they decide which database, date calendar and
  landing folder it uses.
* **docker-compose**: copy `.env.example` to `.env` next to `docker-compose.yml` and set
  `POSTGRES_PASSWORD`. docker-compose reads `.env` only to fill the `${…}` references in
  `docker-compose.yml`; the containers receive just the variables the file lists under
  `x-app-environment` (the table at the end of this page). To set any other variable below in
  the containers, add it to that block (or to an override file), then `docker-compose up -d`
  recreates the services whose environment changed.
* A variable set to an empty value counts as unset, except `FP_DATE_CADENCE`,
  `FP_CALENDAR_HISTORY_WINDOWS` and `FP_DQ_MAX_FAILING_FRACTION`, which refuse an empty value,
  and `FP_AUTOMATION`, for which empty means `off`.
* A malformed value stops the command (or the loading of the code location) with a message
  naming the variable, for example `FP_DRIFT_WINDOWS='0' must be positive`.
"""


def _cell(text: str) -> str:
    """A table cell: pipes escaped, so a value such as a cron list cannot split the row."""
    return text.replace("|", "\\|")


def _default_cell(variable: Variable) -> str:
    if variable.default and variable.unset:
        return f"`{variable.default}` ({variable.unset})"
    if variable.default:
        return f"`{variable.default}`"
    return variable.unset or "unset"


def _table(variables: list[Variable]) -> list[str]:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for variable in variables:
        lines.append(
            f"| `{variable.name}` | {_cell(_default_cell(variable))} | {_cell(variable.description)} |"
        )
    return lines


def compose_app_environment(compose_file: Path = COMPOSE_FILE) -> dict[str, str] | None:
    """What docker-compose.yml sets in the Dagster containers' environment, as written in the
    file (`${…}` references unresolved); None when the file is not there (an installed image)."""
    if not compose_file.exists():
        return None
    document = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    environment = document.get(COMPOSE_APP_ENVIRONMENT) or {}
    return {str(name): str(value) for name, value in environment.items()}


def _compose_section(compose_file: Path) -> list[str]:
    lines = [
        f"## {COMPOSE_SECTION}",
        "",
        "Read by docker-compose from the environment or `.env` (see `.env.example`) and substituted "
        "into `docker-compose.yml`; the Python code never reads them.",
        "",
        *_table(list(COMPOSE_VARIABLES)),
        "",
        "### What docker-compose.yml sets in the Dagster containers",
        "",
    ]
    environment = compose_app_environment(compose_file)
    if environment is None:
        return [
            *lines,
            f"`{compose_file.name}` was not found next to the package when this page was rendered.",
        ]
    lines += [
        "The code server, webserver, daemon and Celery workers share this environment "
        f"(`{COMPOSE_APP_ENVIRONMENT}` in `docker-compose.yml`); "
        "`${NAME:-value}` takes `NAME` from the environment or `.env`, else "
        "`value`. Every other variable above keeps its default inside the containers.",
        "",
        "| variable | value in docker-compose.yml |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | `{_cell(value)}` |" for name, value in environment.items()]
    return lines


def render_markdown(compose_file: Path = COMPOSE_FILE) -> str:
    """The whole configuration page, ending in one newline."""
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{REGENERATE_COMMAND}` from forecasting_pipeline/settings.py and "
        "docker-compose.yml; do not edit by hand. -->",
        "",
        _INTRO.rstrip("\n"),
    ]
    for section in SECTIONS:
        members = [v for v in VARIABLES if v.section == section]
        if members:
            lines += ["", f"## {section[0].upper()}{section[1:]}", "", *_table(members)]
    lines += ["", *_compose_section(compose_file)]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Write the page to stdout as UTF-8 whatever the locale (it holds `×` and `…`)."""
    sys.stdout.buffer.write(render_markdown().encode("utf-8"))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
