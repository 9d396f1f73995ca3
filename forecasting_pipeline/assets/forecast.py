"""`predictions`: the forecasts consumers read, per series × window, from every model family.

The model assets write their forecasts into the forecast history themselves (in bulk, keyed by
series, family, origin and step), so a family that fails takes nothing away from the others.
This asset publishes the cell: it checks what the window's families produced for each series
and reports it, and it is what a consumer's freshness and lineage hang on.
"""

from dagster import AssetDep, AssetExecutionContext, MaterializeResult, MetadataValue

from forecasting_pipeline.assets.conventions import note_run, pipeline_asset
from forecasting_pipeline.partitions import SAME_WINDOW, series_date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.storage.catalog import series_by_partition_key
from forecasting_pipeline.storage.predictions import publication_summary


@pipeline_asset(
    partitions_def=series_date_partitions,
    deps=[
        AssetDep("global_models", partition_mapping=SAME_WINDOW),
        AssetDep("local_models", partition_mapping=SAME_WINDOW),
    ],
    group_name="forecast",
    kinds={"postgres"},
)
def predictions(context: AssetExecutionContext, database: DatabaseResource) -> MaterializeResult:
    """Every family's forecasts of the window for these series, with 80% and 95% intervals.

    Reads `forecasting.predictions` (the history; `forecasting.current_predictions` is each
    series' newest origin per family). Series set aside by the window are listed with their
    reason; a series with neither forecasts nor a reason is reported as missing.
    """
    cells = [str(key).split("|", 1) for key in context.partition_keys]
    windows = sorted({window for window, _ in cells})
    with database.transaction() as conn:
        note_run(context, conn)
        ids = series_by_partition_key(conn, sorted({key for _, key in cells}))
        series_ids = sorted(set(ids.values()))
        published = publication_summary(conn, windows, series_ids)
    missing = len(series_ids) - published.covered - sum(published.set_aside.values())
    table = "\n".join(
        ["| family | series | rows | newest origin |", "|---|---|---|---|"]
        + [
            f"| {f['model_name']} | {f['series']} | {f['rows']} | {f['newest_origin']} |"
            for f in published.families
        ]
    )
    if missing > 0:
        context.log.warning(f"{missing} series have no forecast and no recorded reason in {windows}")
    return MaterializeResult(
        metadata={
            "families": MetadataValue.md(table),
            "series_with_forecasts": published.covered,
            "series_set_aside": MetadataValue.json(published.set_aside),
            "series_missing": max(missing, 0),
        }
    )
