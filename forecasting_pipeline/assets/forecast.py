"""`predictions`: every model's forecast per series × window, stored for SQL consumers."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn

from forecasting_pipeline.assets.conventions import note_run, pipeline_asset
from forecasting_pipeline.partitions import SAME_WINDOW, parse_series_date_key, series_date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import UNIQUE_ID, empty_forecast_frame
from forecasting_pipeline.storage.catalog import series_by_partition_key
from forecasting_pipeline.storage.predictions import store_predictions


@pipeline_asset(
    partitions_def=series_date_partitions,
    ins={
        "global_models": AssetIn(partition_mapping=SAME_WINDOW),
        "local_models": AssetIn(),
    },
    group_name="forecast",
    kinds={"postgres"},
)
def predictions(
    context: AssetExecutionContext,
    global_models: dict[str, pd.DataFrame],
    local_models: dict[str, pd.DataFrame],
    database: DatabaseResource,
) -> dict[str, pd.DataFrame]:
    """Point forecasts with 80% and 95% intervals from every candidate model.

    Rows are keyed by (series, window, model, step), so re-running a partition replaces its
    forecasts; each row carries the Dagster run id and partition key for lineage.
    """
    outputs: dict[str, pd.DataFrame] = {}
    cells = {key: parse_series_date_key(key) for key in context.partition_keys}
    with database.transaction() as conn:
        note_run(context, conn)
        ids = series_by_partition_key(conn, sorted({cell.series_key for cell in cells.values()}))
        global_by_series = {
            window: dict(iter(frame.groupby(UNIQUE_ID, sort=False)))
            for window, frame in global_models.items()
        }
        for key, cell in cells.items():
            global_rows = global_by_series[cell.window].get(
                ids[cell.series_key], global_models[cell.window].iloc[0:0]
            )
            outputs[str(key)] = pd.concat([global_rows, local_models[str(key)]], ignore_index=True)
        stored = pd.concat(
            [
                frame.assign(window_key=cells[key].window, partition_key=key)
                for key, frame in outputs.items()
                if len(frame)
            ]
            or [empty_forecast_frame().assign(window_key="", partition_key="")],
            ignore_index=True,
        )
        store_predictions(
            conn,
            stored,
            [(ids[cell.series_key], cell.window) for cell in cells.values()],
            context.run_id,
        )
    context.log.info(f"stored forecasts for {len(outputs)} series × window partitions")
    return outputs
