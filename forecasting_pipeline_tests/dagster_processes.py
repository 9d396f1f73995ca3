"""Dagster's own processes (webserver, daemon) started by tests, reached over HTTP, and ended whole."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import psutil

from forecasting_pipeline.settings import REPO_ROOT

BIN = Path(sys.executable).parent
WORKSPACE = str(REPO_ROOT / "workspace.yaml")

BACKFILL_MUTATION = """
mutation($assets: [AssetKeyInput!]!, $partitions: [String!]!) {
  launchPartitionBackfill(backfillParams: {assetSelection: $assets, partitionNames: $partitions}) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], env: dict[str, str], log: IO[str] | None = None) -> subprocess.Popen:
    """A Dagster process in a session of its own, from the repository root."""
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    """End the process and everything it started (code servers and run workers have sessions of
    their own, so the process group alone would miss them)."""
    family = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for pid in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for_assets(port: int, process: subprocess.Popen, timeout: float = 180) -> list[str]:
    """The asset keys the webserver serves, once its code location has loaded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the Dagster services exited early"
        with contextlib.suppress(OSError):
            nodes = graphql(port, "{ assetNodes { assetKey { path } } }")["assetNodes"]
            if nodes:
                return sorted("/".join(node["assetKey"]["path"]) for node in nodes)
        time.sleep(2)
    raise AssertionError("the webserver never served the asset graph")
