"""`weekly_model_update`: re-tune and retrain the window that just closed, then publish.

The schedule runs `train_models` for the window before the one holding its tick (in
FP_SCHEDULE_TIMEZONE, so "Monday 03:00" means the users' Monday); when that run succeeds,
`publish_after_model_update` asks for backtests, champion selection and forecasts of every
series in that window as one partition-range run.
"""

from __future__ import annotations

from datetime import datetime

from dagster import (
    DagsterRunStatus,
    RunRequest,
    RunStatusSensorContext,
    ScheduleEvaluationContext,
    SkipReason,
    run_status_sensor,
    schedule,
)

from forecasting_pipeline.automation.jobs import forecast_job, train_job
from forecasting_pipeline.automation.switch import SCHEDULE_STATUS, SENSOR_STATUS
from forecasting_pipeline.automation.tags import (
    PUBLISH_AFTER_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    TRIGGER_TAG,
)
from forecasting_pipeline.calendar import DATE_KEY_FORMAT, shift_windows, window_floor
from forecasting_pipeline.partitions import date_partitions, loaded_calendar, series_date_range
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.settings import load_settings

SCHEDULE_NAME = "weekly_model_update"

_settings = load_settings()


def closed_window(tick: datetime, cadence: str = loaded_calendar.cadence) -> str:
    """The window before the one holding `tick` (a local time of the schedule's zone)."""
    current = window_floor(cadence, tick.date())
    return shift_windows(cadence, current, -1).strftime(DATE_KEY_FORMAT)


@schedule(
    name=SCHEDULE_NAME,
    job=train_job,
    cron_schedule=_settings.schedule_cron,
    execution_timezone=_settings.schedule_timezone,
    default_status=SCHEDULE_STATUS,
    description="Re-tunes and retrains the window that just closed; its forecasts are then republished "
    "for every series.",
)
def weekly_model_update(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    window = closed_window(context.scheduled_execution_time)
    if window not in date_partitions.get_partition_keys():
        return SkipReason(f"window {window} is not in this deployment's date calendar yet")
    return RunRequest(
        run_key=f"{SCHEDULE_NAME}-{window}",
        partition_key=window,
        tags={
            TRIGGER_TAG: SCHEDULE_NAME,
            REASON_TAG: f"weekly model update of window {window} (tick {context.scheduled_execution_time})",
            PUBLISH_AFTER_TAG: window,
        },
    )


@run_status_sensor(
    name="publish_after_model_update",
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[train_job],
    request_job=forecast_job,
    default_status=SENSOR_STATUS,
    description="After a scheduled retraining, backtests, re-selects and republishes every series of "
    "its window.",
)
def publish_after_model_update(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    window = context.dagster_run.tags.get(PUBLISH_AFTER_TAG)
    if not window:
        return SkipReason("not a scheduled model update")
    keys = list(context.instance.get_dynamic_partitions(SERIES_DIMENSION))
    if not keys:
        return SkipReason("no series registered")
    start, end = series_date_range(window, keys)
    return RunRequest(
        run_key=f"publish-{context.dagster_run.run_id}",
        tags={
            RANGE_START_TAG: start,
            RANGE_END_TAG: end,
            TRIGGER_TAG: "publish_after_model_update",
            REASON_TAG: f"models of window {window} retrained by run {context.dagster_run.run_id}",
        },
    )
