"""`dagster dev` (webserver, daemon, code servers) as a child the CLI owns and cleans up.

`forecasting-pipeline ui` and `demo --replay` start it in a process group of its own, so one
signal reaches it once (Ctrl-C at a terminal interrupts only the CLI, which passes it on), and
whatever it leaves running when it exits (a code server, a run worker) is stopped with it. The
embedded PostgreSQL is stopped too when this command started it, so stopping the UI leaves no
process behind; a server that was already running (another CLI session's) is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from forecasting_pipeline.settings import REPO_ROOT

STOP_TIMEOUT_SECONDS = 60


# The UI's first partition status of an asset reads every key's latest planned and materialized
# event; at 10,000 series × 52 windows (a million events) that took longer than the webserver's
# default 15 s statement timeout on 2 cores (benchmarks/partition_scale.py). Later loads are
# incremental from Dagster's status cache.
UI_STATEMENT_TIMEOUT_MS = 180_000


def dagster_dev_command(host: str, port: int, extra_args: Sequence[str] = ()) -> list[str]:
    """`dagster dev` on the repository's workspace (or the definitions module when it is absent)."""
    workspace = REPO_ROOT / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "forecasting_pipeline.definitions"]
    timeout = ["--db-statement-timeout", str(UI_STATEMENT_TIMEOUT_MS)]
    return [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        *target,
        "-h",
        host,
        "-p",
        str(port),
        *timeout,
        *extra_args,
    ]


def _signal_group(group: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def stop_process_group(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Ask `dagster dev` to shut down as Ctrl-C would, then kill anything of its group still there."""
    group = process.pid  # started with process_group=0: the leader's pid is the group id
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(group, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    _signal_group(group, signal.SIGKILL)  # stragglers: orphaned code servers or run workers


@contextmanager
def running_dagster_dev(
    host: str, port: int, extra_args: Sequence[str] = (), embedded_dir: Path | None = None
) -> Iterator[subprocess.Popen]:
    """`dagster dev` running for the block; SIGTERM to the CLI ends the block as Ctrl-C does.

    `embedded_dir`: the embedded server this command started, stopped after the services.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    process = subprocess.Popen(dagster_dev_command(host, port, extra_args), process_group=0)
    try:
        yield process
    finally:
        stop_process_group(process)
        signal.signal(signal.SIGTERM, previous)
        if embedded_dir is not None:
            from forecasting_pipeline.storage.embedded import stop_embedded_server

            stop_embedded_server(embedded_dir)
