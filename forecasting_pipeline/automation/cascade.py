"""`retraining_cascade_sensor`: what follows when observations change.

`raw_observations` queues every cell whose data it changed (`forecasting.cascade_queue`),
whoever launched it: this sensor, the CLI, a UI materialization or backfill. A tick claims the
queue and asks for one asset backfill over exactly what depends on those cells:

* the history versions of every window from the earliest changed one to the newest window;
* features, Granger tests and accuracy scores of the changed cells, correlations of their windows;
* tuning and training of the newest window (global models learn from every series, so they are
  per window), then backtests, champion selection and forecasts in it of the series whose
  observations changed (the span from the first to the last of them in partition order: one
  run), and the feature effects of that window.

Cells nobody changed are not in it. The other series keep their published forecasts: their data
did not move, and the weekly model update republishes every series of the window it retrains.
So a late week for 1% of the series costs one window's training plus 1% of the publication,
not a republication of every series (`benchmarks/incremental_cycle.py`). The backfill's runs
follow the partition definitions (one run per window and level), not the number of keys.
"""

from __future__ import annotations

import uuid

import polars as pl
from dagster import SensorEvaluationContext, SkipReason, sensor
from sqlalchemy import Connection

from forecasting_pipeline.automation.backfills import (
    CELL_ASSETS_PUBLISHING,
    WINDOW_ASSETS_TRAINING,
    cell_subset,
    every_series,
    graph_subset,
    submit_open_requests,
    window_subset,
)
from forecasting_pipeline.automation.switch import SENSOR_STATUS
from forecasting_pipeline.partitions import date_partitions, window_key_for
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.storage.automation import (
    AutomationRequest,
    add_request,
    claim_queued_cells,
    claimed_cells,
)
from forecasting_pipeline.storage.catalog import newest_observation_ts

CASCADE = "cascade"
SENSOR_NAME = "retraining_cascade_sensor"


def _newest_window(conn: Connection) -> str | None:
    newest = newest_observation_ts(conn)
    return window_key_for(newest) if newest is not None else None


def publishing_span(changed_keys: list[str], series_order: list[str]) -> list[str]:
    """Series keys from the first to the last of `changed_keys` in partition order.

    A run covers one contiguous range of keys, and the backtest of a neural family trains once
    per run whatever its series count: ten changed series spread over 1,000 would otherwise be
    ten runs, each training the same global model. Publishing the span is one run, and re-does
    no more than every series would.
    """
    changed = set(changed_keys)
    positions = [index for index, key in enumerate(series_order) if key in changed]
    if not positions:
        return sorted(changed)
    return series_order[positions[0] : positions[-1] + 1]


def cascade_subset(cells: pl.DataFrame, newest_window: str, series_order: list[str]):
    """The partitions downstream of changed `cells` (series_id, partition_key, window_key);
    `series_order` is every series key in partition order."""
    windows = date_partitions.get_partition_keys()
    changed_windows = sorted(set(cells["window_key"].to_list()) & set(windows))
    if not changed_windows:
        return graph_subset()
    history = [w for w in windows if changed_windows[0] <= w <= newest_window]
    changed = cells.filter(pl.col("window_key").is_in(windows))
    changed_series = publishing_span(changed["partition_key"].unique().to_list(), series_order)
    return graph_subset(
        window_subset(["observation_history"], history),
        cell_subset(["feature_table", "granger_study", "forecast_accuracy"], changed),
        window_subset(["correlation_study"], changed_windows),
        window_subset([*WINDOW_ASSETS_TRAINING, "feature_effects"], [newest_window]),
        cell_subset(CELL_ASSETS_PUBLISHING, every_series(changed_series, [newest_window])),
    )


def _describe(cells: pl.DataFrame, newest_window: str) -> str:
    windows = sorted(set(cells["window_key"].to_list()))
    span = windows[0] if len(windows) == 1 else f"{windows[0]}..{windows[-1]}"
    return (
        f"observations changed in {cells['series_id'].n_unique()} series × {len(windows)} windows ({span}); "
        f"retrain window {newest_window}"
    )


def evaluate_cascade(context: SensorEvaluationContext, database: DatabaseResource) -> SkipReason:
    """Claim the queue as one request, then submit every request without its backfill."""
    instance = context.instance
    with database.transaction() as conn:
        request_id = f"cascade-{uuid.uuid4().hex[:16]}"
        cells = claim_queued_cells(conn, request_id)
        newest = _newest_window(conn)
        if cells.height and newest is not None:
            add_request(
                conn,
                request_id,
                CASCADE,
                _describe(cells, newest),
                windows=[newest],
                series_ids=sorted(set(cells["series_id"].to_list())),
            )
    series_order = list(instance.get_dynamic_partitions(SERIES_DIMENSION))

    def build(request: AutomationRequest):
        with database.transaction() as read:
            claimed = claimed_cells(read, request.request_id)
        return cascade_subset(claimed, request.windows[0], series_order)

    with database.transaction() as conn:
        submitted = submit_open_requests(instance, conn, CASCADE, SENSOR_NAME, build)
    message = f"submitted backfills {', '.join(submitted)}" if submitted else "no changed observations queued"
    context.log.info(message)
    return SkipReason(message)


@sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=30,
    default_status=SENSOR_STATUS,
    description="When observations change, one asset backfill refreshes the changed cells' features, "
    "studies and accuracy, retrains the newest window and republishes the changed series' forecasts.",
)
def retraining_cascade_sensor(context: SensorEvaluationContext, database: DatabaseResource) -> SkipReason:
    return evaluate_cascade(context, database)
