"""`run_failure_recorder`: every failed run lands in `forecasting.run_failures`.

Beside Dagster's own event log, a failure is then one row to query, alert on or join to the
domain rows of its partitions: job, partition range, failed steps, the error and the tags that
say what launched the run and why. The MLflow runs and Optuna trials it left running are closed.
"""

from __future__ import annotations

from dagster import RunFailureSensorContext, run_failure_sensor

from forecasting_pipeline.automation.recovery import close_open_records
from forecasting_pipeline.automation.switch import SENSOR_STATUS
from forecasting_pipeline.automation.tags import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG
from forecasting_pipeline.operations import root_cause
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.storage.automation import record_run_failure


def failure_record(context: RunFailureSensorContext) -> dict:
    run = context.dagster_run
    tags = dict(run.tags)
    if RANGE_START_TAG in tags:
        partitions = f"{tags[RANGE_START_TAG]}..{tags.get(RANGE_END_TAG, '')}"
    else:
        partitions = tags.get(PARTITION_TAG)
    steps = [event.step_key for event in context.get_step_failure_events() if event.step_key]
    message = context.failure_event.message or "run failed"
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error if event.step_failure_data else None
        if error is not None:
            message = f"{event.step_key}: {root_cause(error)}"
            break
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "partition_range": partitions,
        "failed_steps": steps,
        "message": message,
        "tags": {k: v for k, v in tags.items() if not k.startswith(".dagster")},
    }


@run_failure_sensor(
    name="run_failure_recorder",
    monitor_all_code_locations=False,
    default_status=SENSOR_STATUS,
    description="Records every failed run (job, partitions, failed steps, error, tags) in "
    "forecasting.run_failures.",
)
def run_failure_recorder(context: RunFailureSensorContext, database: DatabaseResource) -> None:
    with database.transaction() as conn:
        record_run_failure(conn, **failure_record(context))
    # A run failed by Dagster's run monitoring (its worker died) leaves its MLflow run and Optuna
    # trials RUNNING, as a killed CLI run does; the CLI's recovery closes those, this the daemon's.
    close_open_records([context.dagster_run.run_id])
