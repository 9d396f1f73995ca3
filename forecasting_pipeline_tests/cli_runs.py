"""`forecasting-pipeline` run as a user runs it: a subprocess with a user's environment."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def user_env(home: Path | str, url: str, **extra: str) -> dict[str, str]:
    """A user's environment: no pinned calendar (the deployment's comes from its data), no
    Dagster home or colour hints from the test runner. Test files live in pytest's temporary
    folders, outside the working directory, so those are allowed for ingestion the way a user
    lists their own data folder."""
    dropped = ("DAGSTER_HOME", "FP_PARTITION_START", "NO_COLOR", "FORCE_COLOR")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        FP_HOME=str(home),
        FP_DATABASE_URL=url,
        COLUMNS="120",
        FP_INGEST_ROOTS=str(Path(tempfile.gettempdir()).resolve()),
    )
    env.update(extra)
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forecasting_pipeline.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
