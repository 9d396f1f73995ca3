"""Recover from CLI runs that were killed mid-way.

An in-process run killed with its process (Ctrl-C twice, OOM killer, `kill -9`) stays STARTED
in the run storage and keeps its `gpu` pool slot, so the next training step would wait for that
slot forever. Runs launched by the CLI carry their host and process id; before it runs anything,
the CLI marks such runs whose process is gone as failed and frees their slots. Everything they
wrote is idempotent (upserts, atomic file writes), so the partitions can simply be re-executed.
Runs launched by the daemon are watched by Dagster's own run monitoring (dagster.yaml).
"""

from __future__ import annotations

import os
import socket

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

HOST_TAG = "forecasting-pipeline/host"
PID_TAG = "forecasting-pipeline/pid"
_UNFINISHED = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def launcher_tags() -> dict[str, str]:
    """Tags that identify the process executing an in-process run."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _process_alive(pid: int, run_created_at: float) -> bool:
    """Whether the process that executed the run is still running.

    A process being torn down after SIGKILL is a zombie for a moment, and a pid can be reused
    by a later process: neither counts as the run's process.
    """
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= run_created_at + 1
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def fail_orphaned_runs(instance: DagsterInstance) -> list[str]:
    """Mark this host's CLI runs whose process died as failed, free their slots; return run ids."""
    records = instance.get_run_records(
        filters=RunsFilter(statuses=_UNFINISHED, tags={HOST_TAG: socket.gethostname()})
    )
    orphaned = []
    for record in records:
        run = record.dagster_run
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid == os.getpid() or _process_alive(pid, record.create_timestamp.timestamp()):
            continue
        instance.report_run_failed(
            run, message=f"process {pid} ended before the run finished; marked failed to re-execute"
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        orphaned.append(run.run_id)
    return orphaned
