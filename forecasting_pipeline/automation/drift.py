"""`accuracy_drift_sensor`: retrain where live accuracy fell behind what the backtest promised.

Each series' rolling MASE over its newest scored windows (`forecast_accuracy`) is compared with
the backtest MASE of the same forecasts; past FP_DRIFT_THRESHOLD × that estimate, the series is
retrained: its window's models are trained again, and that series (only it) is backtested,
re-selected and republished, as one asset backfill whose tags say which series drifted and by
how much. A drift is acted on once per series and scored window.
"""

from __future__ import annotations

import uuid

import polars as pl
from dagster import SensorEvaluationContext, SkipReason, sensor

from forecasting_pipeline.automation.backfills import (
    CELL_ASSETS_PUBLISHING,
    WINDOW_ASSETS_TRAINING,
    cell_subset,
    graph_subset,
    submit_open_requests,
    window_subset,
)
from forecasting_pipeline.automation.switch import SENSOR_STATUS
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.settings import load_settings
from forecasting_pipeline.storage.accuracy import drift_candidates, drift_rows, record_drift
from forecasting_pipeline.storage.automation import AutomationRequest, add_request

DRIFT = "drift"
SENSOR_NAME = "accuracy_drift_sensor"
_LISTED = 10


def describe_drift(drifted: pl.DataFrame, threshold: float) -> str:
    """The worst drifts in words, for the backfill's tags (formatted by polars, not per row)."""
    listed = (
        drifted.sort("ratio", descending=True)
        .head(_LISTED)
        .select(
            pl.format(
                "{} @ {}: rolling MASE {} over {} windows vs backtest {} (×{})",
                "series_id",
                "window_key",
                pl.col("rolling_mase").round(2),
                "windows_scored",
                pl.col("backtest_mase").round(2),
                pl.col("ratio").round(2),
            )
        )
        .to_series()
        .str.join("; ")
        .item()
    )
    more = f"; and {drifted.height - _LISTED} more" if drifted.height > _LISTED else ""
    return (
        f"accuracy drift past ×{threshold:g} the backtest estimate in {drifted.height} series: {listed}{more}"
    )


def drift_subset(events: pl.DataFrame):
    """Train each drifted window again; backtest, select and publish only the drifted series."""
    windows = sorted(set(events["window_key"].to_list()))
    return graph_subset(
        window_subset(WINDOW_ASSETS_TRAINING, windows), cell_subset(CELL_ASSETS_PUBLISHING, events)
    )


def evaluate_drift(context: SensorEvaluationContext, database: DatabaseResource) -> SkipReason:
    settings = load_settings()
    with database.transaction() as conn:
        drifted = drift_candidates(conn, settings.drift_threshold, settings.drift_windows)
        if drifted.height:
            request_id = f"drift-{uuid.uuid4().hex[:16]}"
            add_request(
                conn,
                request_id,
                DRIFT,
                describe_drift(drifted, settings.drift_threshold),
                windows=sorted(set(drifted["window_key"].to_list())),
                series_ids=drifted["series_id"].to_list(),
            )
            record_drift(conn, drifted, settings.drift_threshold, request_id)

    def build(request: AutomationRequest):
        with database.transaction() as read:
            return drift_subset(drift_rows(read, request.request_id))

    with database.transaction() as conn:
        submitted = submit_open_requests(context.instance, conn, DRIFT, SENSOR_NAME, build)
    message = (
        f"{drifted.height} series drifted; submitted backfills {', '.join(submitted)}"
        if submitted
        else "no series past the drift threshold"
    )
    context.log.info(message)
    return SkipReason(message)


@sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=300,
    default_status=SENSOR_STATUS,
    description="Retrains the series whose rolling forecast error exceeds FP_DRIFT_THRESHOLD × their "
    "backtest estimate, with the numbers in the backfill's tags.",
)
def accuracy_drift_sensor(context: SensorEvaluationContext, database: DatabaseResource) -> SkipReason:
    return evaluate_drift(context, database)
