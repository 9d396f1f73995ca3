"""`forecast_accuracy`: how the published forecasts did once their actuals arrived.

A cell (series, window W) scores every stored forecast made before W's actuals (each candidate,
each origin): MAE, RMSE, sMAPE, MASE on the origin's scale, interval coverage, and the backtest
MASE the model had at that origin. `accuracy_drift_sensor` compares the champion's rows with
that estimate and asks for retraining where live error has drifted past the backtest's promise.
"""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    DimensionPartitionMapping,
    IdentityPartitionMapping,
    MaterializeResult,
    MultiPartitionMapping,
    TimeWindowPartitionMapping,
)

from forecasting_pipeline.assets.cell_metadata import add_cell_rows
from forecasting_pipeline.assets.conventions import note_run, pipeline_asset
from forecasting_pipeline.partitions import DATE_DIMENSION, series_date_partitions, window_bounds
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.storage.accuracy import score_cells
from forecasting_pipeline.storage.catalog import series_by_window
from forecasting_pipeline.storage.observations import Cell
from forecasting_pipeline.storage.tables import FORECAST_ACCURACY

# Forecasts made in this window (from earlier origins) or the few before it are what a window scores.
SCORED_ORIGINS = 4
EARLIER_FORECASTS = MultiPartitionMapping(
    {
        DATE_DIMENSION: DimensionPartitionMapping(
            DATE_DIMENSION,
            TimeWindowPartitionMapping(
                start_offset=-SCORED_ORIGINS, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        ),
        SERIES_DIMENSION: DimensionPartitionMapping(SERIES_DIMENSION, IdentityPartitionMapping()),
    }
)


@pipeline_asset(
    partitions_def=series_date_partitions,
    deps=[AssetDep("raw_observations"), AssetDep("predictions", partition_mapping=EARLIER_FORECASTS)],
    group_name="monitoring",
    kinds={"postgres"},
)
def forecast_accuracy(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    """Each earlier forecast of these series scored against the actuals of the window.

    Rows are replaced per cell, so scoring again after late or restated actuals is idempotent.
    """
    with database.transaction() as conn:
        note_run(context, conn)
        by_window = series_by_window(conn, context.partition_keys)
        cells = [
            Cell(series_id, window, window_bounds(window).start, window_bounds(window).end)
            for window, ids in by_window.items()
            for series_id in ids
        ]
        scored = score_cells(conn, cells, context.run_id)
        add_cell_rows(context, conn, FORECAST_ACCURACY, by_window, "origins_scored")
    context.log.info(f"{len(cells)} cells: {scored} (cell, forecast origin) pairs scored")
    return MaterializeResult(metadata={"cells": len(cells), "origins_scored": scored})
