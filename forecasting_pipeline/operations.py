"""What the CLI commands do, as functions: land, ingest and forecast against an instance.

Kept apart from argument parsing so tests drive exactly the code path users run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult

from forecasting_pipeline.automation import launch
from forecasting_pipeline.bootstrap import Deployment
from forecasting_pipeline.ingestion.registration import Registration, register_landed_series
from forecasting_pipeline.partitions import date_partitions, window_key_for
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.landing import LandingZoneResource
from forecasting_pipeline.storage.catalog import newest_observation_ts

Progress = Callable[[str], None]


class PipelineRunError(RuntimeError):
    """A Dagster run launched by the CLI failed; the message names the run to inspect."""


@dataclass(frozen=True)
class IngestSummary:
    registration: Registration
    first_window: str
    latest_window: str
    run_id: str
    seconds: float


@dataclass(frozen=True)
class ForecastSummary:
    window: str
    train_run_id: str
    forecast_run_id: str
    train_seconds: float
    forecast_seconds: float
    series_ids: list[str]


def _root_cause(error: Any) -> str:
    """Dagster wraps the asset's exception; the user needs the innermost message."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    return error.message.strip()


def _check(result: ExecuteInProcessResult, what: str) -> None:
    """Turn a failed run into one readable error naming the step, its error and the run."""
    if result.success:
        return
    failures = [
        f"{event.step_key}: {_root_cause(event.step_failure_data.error)}"
        for event in result.all_events
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error
    ]
    raise PipelineRunError(
        f"{what} failed in Dagster run {result.run_id}: {'; '.join(failures) or 'see the run in the UI'}"
    )


def latest_window(database: DatabaseResource) -> str:
    """The window holding the newest registered observation."""
    with database.transaction() as conn:
        newest = newest_observation_ts(conn)
    if newest is None:
        raise PipelineRunError("no series registered yet: land data and run `ingest` first")
    window = window_key_for(newest)
    if window is None:  # registration refuses such rows, so only a changed calendar gets here
        raise PipelineRunError(
            f"newest observation {newest} lies after the last date window; check FP_PARTITION_END"
        )
    return window


def ingest(
    instance: DagsterInstance,
    deployment: Deployment,
    *,
    progress: Progress = print,
    show_steps: bool = False,
) -> IngestSummary:
    """Register landed series as partitions, then ingest every window up to the newest data."""
    database = DatabaseResource(url=deployment.database_url)
    landing = LandingZoneResource(path=str(deployment.settings.landing_dir))
    registration = register_landed_series(instance, database, landing)
    if not registration.series_ids:
        raise PipelineRunError(
            f"no usable series in {landing.folder}: {registration.quarantined_rows} rows were refused "
            "and kept with their reasons in forecasting.quarantine"
        )
    progress(
        f"registered {len(registration.series_ids)} series as partitions "
        f"({len(registration.new_series_ids)} new): {', '.join(registration.series_ids[:8])}"
        + (" …" if len(registration.series_ids) > 8 else "")
    )
    first, last = date_partitions.get_first_partition_key(), latest_window(database)
    started = time.perf_counter()
    result = launch.ingest_windows(instance, first, last, registration.series_ids, show_steps=show_steps)
    _check(result, "ingestion")
    return IngestSummary(registration, first, last, result.run_id, time.perf_counter() - started)


def forecast(
    instance: DagsterInstance,
    window: str,
    series_ids: list[str],
    *,
    global_model_config: Mapping[str, Any] | None = None,
    show_steps: bool = False,
) -> ForecastSummary:
    """Train the global models for `window`, then forecast every series with every model.

    `global_model_config` overrides fields of `GlobalModelConfig` (e.g. `max_steps`).
    """
    train_config = (
        {"ops": {"global_models": {"config": dict(global_model_config)}}} if global_model_config else None
    )
    started = time.perf_counter()
    trained = launch.train_window(instance, window, run_config=train_config, show_steps=show_steps)
    _check(trained, f"training for window {window}")
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    forecasted = launch.forecast_window(instance, window, series_ids, show_steps=show_steps)
    _check(forecasted, f"forecasting for window {window}")
    return ForecastSummary(
        window,
        trained.run_id,
        forecasted.run_id,
        train_seconds,
        time.perf_counter() - started,
        series_ids,
    )
