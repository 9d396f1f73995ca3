"""`forecasting-pipeline` run as a user runs it: a subprocess with a user's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def user_env(home: Path | str, url: str, **extra: str) -> dict[str, str]:
    """A user's environment: no pinned calendar (the deployment's comes from its data), no
    Dagster home or colour hints from the test runner."""
    dropped = ("DAGSTER_HOME", "FP_PARTITION_START", "NO_COLOR", "FORCE_COLOR")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(FP_HOME=str(home), FP_DATABASE_URL=url, COLUMNS="120", **extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forecasting_pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
