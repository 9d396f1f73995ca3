"""Run the asset jobs for a window (and a rectangle of series) against a Dagster instance.

This is what the CLI does in-process; in the UI the same selections are asset backfills.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from forecasting_pipeline.automation.jobs import forecast_job, ingest_job, train_job
from forecasting_pipeline.partitions import series_date_range

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def _quiet(run_config: Mapping[str, Any] | None, log_level: str) -> dict[str, Any]:
    config = dict(run_config or {})
    config.setdefault("loggers", {"console": {"config": {"log_level": log_level}}})
    return config


def _execute(
    job_name: str,
    instance: DagsterInstance,
    tags: Mapping[str, str],
    run_config: Mapping[str, Any] | None,
    log_level: str,
) -> ExecuteInProcessResult:
    from forecasting_pipeline.definitions import defs

    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, tags=dict(tags), run_config=_quiet(run_config, log_level)
    )


def ingest_windows(
    instance: DagsterInstance,
    first_window: str,
    last_window: str,
    series_ids: list[str],
    *,
    run_config: Mapping[str, Any] | None = None,
    log_level: str = "WARNING",
) -> ExecuteInProcessResult:
    """One run over the rectangle first..last window × series_ids (ids in partition order)."""
    start, _ = series_date_range(first_window, series_ids)
    _, end = series_date_range(last_window, series_ids)
    return _execute(
        ingest_job.name,
        instance,
        {RANGE_START_TAG: start, RANGE_END_TAG: end},
        run_config,
        log_level,
    )


def train_window(
    instance: DagsterInstance,
    window: str,
    *,
    run_config: Mapping[str, Any] | None = None,
    log_level: str = "WARNING",
) -> ExecuteInProcessResult:
    return _execute(
        train_job.name,
        instance,
        {RANGE_START_TAG: window, RANGE_END_TAG: window},
        run_config,
        log_level,
    )


def forecast_window(
    instance: DagsterInstance,
    window: str,
    series_ids: list[str],
    *,
    run_config: Mapping[str, Any] | None = None,
    log_level: str = "WARNING",
) -> ExecuteInProcessResult:
    start, end = series_date_range(window, series_ids)
    return _execute(
        forecast_job.name,
        instance,
        {RANGE_START_TAG: start, RANGE_END_TAG: end},
        run_config,
        log_level,
    )
