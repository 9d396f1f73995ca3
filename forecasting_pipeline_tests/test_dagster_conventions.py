"""What a Dagster user types first works in the repository root with no variables set by hand.

`dg check defs`, `dagster dev` and `forecasting-pipeline ui` run as subprocesses with a clean
environment (only FP_HOME, pointing at a scratch folder instead of the checkout's .forecasting),
so they must find the deployment themselves: the embedded PostgreSQL, started on first use.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from forecasting_pipeline.settings import REPO_ROOT
from forecasting_pipeline.storage.embedded import embedded_server_running, stop_embedded_server
from forecasting_pipeline_tests.dagster_processes import BIN, free_port, graphql, start, wait_for_assets


def _clean_env(home: Path | None = None) -> dict[str, str]:
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin"}
    if home is not None:
        env["FP_HOME"] = str(home)
    return env


def _scratch_home() -> Path:
    # 0755: as root, the embedded server runs as its own system user and must traverse it.
    folder = Path(tempfile.mkdtemp(prefix="fp-dev-"))
    folder.chmod(0o755)
    return folder


@pytest.fixture
def scratch_home() -> Iterator[Path]:
    home = _scratch_home()
    yield home
    stop_embedded_server(home / "pgdata")
    shutil.rmtree(home, ignore_errors=True)


def test_dg_check_defs_passes_in_the_repository_root(scratch_home: Path):
    # dg loads ./dagster.yaml, whose storage starts the embedded server: in a scratch FP_HOME.
    result = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=REPO_ROOT,
        env={**_clean_env(scratch_home), "VIRTUAL_ENV": str(BIN.parent)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


@pytest.mark.slow
def test_dagster_dev_serves_the_project_on_the_embedded_deployment(scratch_home: Path):
    port = free_port()
    process = start([str(BIN / "dagster"), "dev", "-p", str(port)], _clean_env(scratch_home))
    try:
        assets = wait_for_assets(port, process)
        assert {"raw_observations", "predictions", "global_models", "forecast_accuracy"} <= set(assets)
        # The instance is the deployment's PostgreSQL, started under FP_HOME with the domain schema.
        assert embedded_server_running(scratch_home / "pgdata")
        runs = graphql(port, "{ runsOrError { __typename } }")["runsOrError"]["__typename"]
        assert runs == "Runs"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=120)


@pytest.mark.slow
def test_stopping_the_ui_leaves_no_process_behind(scratch_home: Path):
    port = free_port()
    process = start([str(BIN / "forecasting-pipeline"), "ui", "--port", str(port)], _clean_env(scratch_home))
    wait_for_assets(port, process)
    descendants = psutil.Process(process.pid).children(recursive=True)
    server_pid = int((scratch_home / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
    assert len(descendants) >= 3  # dagster dev, webserver, daemon (and code servers)

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    time.sleep(1)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]
    assert _ends(server_pid), "the embedded PostgreSQL this command started is still up"


def _ends(pid: int, timeout: float = 30) -> bool:
    """Whether `pid` is gone (or a zombie its reaper has not collected yet) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.5)
    return False
