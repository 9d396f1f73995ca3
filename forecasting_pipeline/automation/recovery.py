"""Recover from CLI runs that were killed mid-way.

An in-process run killed with its process (Ctrl-C twice, OOM killer, `kill -9`) stays STARTED
in the run storage and keeps its `gpu` pool slot, so the next training step would wait for that
slot forever. Runs launched by the CLI carry their host and process id; before it runs anything,
the CLI marks such runs whose process is gone as failed and frees their slots. What else they
left open is closed too: MLflow runs of a training in progress are marked FAILED, and Optuna
trials they were running are marked FAIL (interrupted, so they do not count toward the study's
budget and the next run of the window tops the study up). Everything they wrote is idempotent
(upserts, atomic file writes), so the partitions can simply be re-executed.
Runs launched by the daemon are watched by Dagster's own run monitoring (dagster.yaml).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from forecasting_pipeline.settings import Settings, load_settings

logger = logging.getLogger(__name__)

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
    if orphaned:
        close_open_records(orphaned)
    return orphaned


@dataclass(frozen=True)
class ClosedRecords:
    mlflow_runs: list[str]  # MLflow run ids marked FAILED
    trials: int  # Optuna trials marked FAIL (interrupted)


def close_open_records(run_ids: Collection[str], settings: Settings | None = None) -> ClosedRecords:
    """Fail the MLflow runs and Optuna trials that the given dead Dagster runs left running.

    Each part is best effort: the Dagster runs are already failed and their partitions can
    re-run either way (a re-run also fails its study's stale trials itself), so an unreachable
    MLflow server is logged rather than allowed to stop the command.
    """
    settings = settings or load_settings()
    mlflow_runs: list[str] = []
    trials = 0
    try:
        from forecasting_pipeline.resources.mlflow_tracker import MlflowTrackerResource

        tracker = MlflowTrackerResource(
            tracking_uri=settings.mlflow_tracking_uri or settings.default_mlflow_tracking_uri
        )
        mlflow_runs = tracker.fail_open_runs(run_ids)
    except Exception as exc:
        logger.warning("could not mark the MLflow runs of dead runs %s failed: %s", sorted(run_ids), exc)
    if settings.database_url:
        try:
            from forecasting_pipeline.modeling import search  # imports Optuna: only when runs died

            trials = search.fail_trials_of_runs(search.optuna_storage(settings.database_url), run_ids)
        except Exception as exc:
            logger.warning(
                "could not mark the Optuna trials of dead runs %s failed: %s", sorted(run_ids), exc
            )
    return ClosedRecords(mlflow_runs, trials)
