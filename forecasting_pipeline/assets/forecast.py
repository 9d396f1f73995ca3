"""`predictions`: every model's forecast per series × window, stored for SQL consumers."""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn

from forecasting_pipeline.assets.conventions import note_run, pipeline_asset
from forecasting_pipeline.partitions import SAME_WINDOW, parse_series_date_key, series_date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import UNIQUE_ID
from forecasting_pipeline.storage.catalog import series_by_partition_key
from forecasting_pipeline.storage.predictions import delete_stale_predictions, upsert_predictions


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
            series_id = ids[cell.series_key]
            global_rows = global_by_series[cell.window].get(series_id, global_models[cell.window].iloc[0:0])
            frame = pd.concat([global_rows, local_models[str(key)]], ignore_index=True)
            upsert_predictions(
                conn, frame, window_key=cell.window, partition_key=str(key), run_id=context.run_id
            )
            delete_stale_predictions(
                conn,
                series_id=series_id,
                window_key=cell.window,
                model_names=sorted(frame["model_name"].unique()),
                max_step=int(frame["step"].max()) if len(frame) else 0,
            )
            outputs[str(key)] = frame
    context.log.info(f"stored forecasts for {len(outputs)} series × window partitions")
    return outputs
