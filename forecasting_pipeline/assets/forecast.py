"""`predictions`: each series' champion forecast with calibrated intervals, per series × window.

Runs only after `promotions_confirmed` passed: it makes the window's confirmed decisions real
(champion events, mirrored as the MLflow alias `champion`) and publishes the champions'
forecasts to `forecasting.published_forecasts`. Every candidate's forecasts stay in
`forecasting.predictions`.
"""

import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue
from pydantic import Field
from sqlalchemy import Connection

from forecasting_pipeline.assets.cell_metadata import add_cell_rows
from forecasting_pipeline.assets.conventions import markdown_table, note_run, pipeline_asset
from forecasting_pipeline.assets.training import registered_name
from forecasting_pipeline.partitions import series_date_partitions
from forecasting_pipeline.reporting.plots import fan_chart, markdown_image
from forecasting_pipeline.reporting.report import fan_chart_inputs
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.mlflow_tracker import MlflowTrackerResource
from forecasting_pipeline.storage.catalog import series_by_window
from forecasting_pipeline.storage.champions import (
    apply_decisions,
    champion_registry_versions,
    publish_champions,
    published_summary,
    unconfirmed_promotions,
)
from forecasting_pipeline.storage.predictions import publication_summary
from forecasting_pipeline.storage.tables import PUBLISHED_FORECASTS

CHAMPION_ALIAS = "champion"


class PredictionsConfig(Config):
    fan_charts: int = Field(
        default=20,
        ge=0,
        description="Series per run whose partition page gets a fan chart (history, forecast, "
        "intervals, actuals); about 0.1 s each. Series of a larger run beyond this show counts only.",
    )


def _fan_charts(conn: Connection, by_window: dict[str, list[str]], limit: int) -> pl.DataFrame:
    """`window, series_id, fan_chart` for the first `limit` series (by id) of the run."""
    charts: list[dict] = []
    for window, series_ids in by_window.items():
        room = limit - len(charts)
        if room <= 0:
            break
        for chart in fan_chart_inputs(conn, window, room, series_ids=series_ids).charts:
            title = f"{chart.series_id}: {chart.model_name}, window {window}"
            png = fan_chart(chart.history, chart.forecast, chart.actuals, title=title)
            charts.append(
                {"window": window, "series_id": chart.series_id, "fan_chart": markdown_image(png, title)}
            )
    return pl.DataFrame(charts, schema={"window": pl.String, "series_id": pl.String, "fan_chart": pl.String})


def point_champion_aliases(mlflow_tracker: MlflowTrackerResource, registered: list[dict]) -> None:
    """Mirror champions in the MLflow registry: alias `champion` on each champion's version."""
    for version in registered:
        mlflow_tracker.point_alias(
            registered_name(version["model_name"], version["freq_group"]),
            version["registry_version"],
            CHAMPION_ALIAS,
        )


@pipeline_asset(
    partitions_def=series_date_partitions,
    deps=["model_selection"],
    group_name="forecast",
    kinds={"postgres", "mlflow"},
)
def predictions(
    context: AssetExecutionContext,
    config: PredictionsConfig,
    database: DatabaseResource,
    mlflow_tracker: MlflowTrackerResource,
) -> MaterializeResult:
    """The champion's forecast of every series, with 80% and 95% intervals and its provenance.

    Intervals are the champion's own where they covered within 5 points of nominal on the
    held-out backtest fold, else conformal (yhat ± quantile of scaled fold residuals × the
    series' scale). Series set aside by the window are counted with their reason; a series with
    neither a published forecast nor a reason is reported as missing.
    """
    with database.transaction() as conn:
        note_run(context, conn)
        by_window = series_by_window(conn, context.partition_keys)
        windows = list(by_window)
        series_ids = sorted({s for ids in by_window.values() for s in ids})
        # The blocking check guards a run that includes model_selection; when `predictions` is
        # materialized alone, an unbacked promotion is still never applied.
        unbacked = [f["series_id"] for f in unconfirmed_promotions(conn, windows, series_ids)]
        if unbacked:
            context.log.warning(
                f"not promoting {len(unbacked)} series whose folds do not back it: {unbacked[:10]}"
            )
        applicable = sorted(set(series_ids) - set(unbacked))
        events = apply_decisions(conn, windows, applicable, context.run_id)
        rows = publish_champions(conn, windows, series_ids, context.run_id)
        published = published_summary(conn, windows, series_ids)
        candidates = publication_summary(conn, windows, series_ids)
        registered = champion_registry_versions(conn, windows, series_ids)
        cell_champions = published.select(
            pl.col("window_key").alias("window"),
            "series_id",
            pl.col("model_name").alias("champion"),
            pl.col("interval_method").alias("intervals"),
        ).join(_fan_charts(conn, by_window, config.fan_charts), on=["window", "series_id"], how="left")
        add_cell_rows(
            context,
            conn,
            PUBLISHED_FORECASTS,
            by_window,
            "published_rows",
            cell_champions,
            markdown=("fan_chart",),
        )
    point_champion_aliases(mlflow_tracker, registered)
    covered = published["series_id"].n_unique() if published.height else 0
    missing = len(series_ids) - covered - sum(candidates.set_aside.values())
    if missing > 0:
        context.log.warning(
            f"{missing} series have no published forecast and no recorded reason in {windows}"
        )
    champions = (
        published.group_by("model_name", "interval_method").agg(
            pl.col("series_id").n_unique().alias("series")
        )
        if published.height
        else published
    )
    return MaterializeResult(
        metadata={
            "champions": MetadataValue.md(
                markdown_table(
                    champions.sort("model_name").rename(
                        {"model_name": "champion", "interval_method": "intervals"}
                    )
                )
            ),
            "published_rows": rows,
            "champion_changes": events,
            "promotions_not_backed": len(unbacked),
            "series_published": covered,
            "series_set_aside": MetadataValue.json(candidates.set_aside),
            "series_missing": max(missing, 0),
            "candidates_stored": MetadataValue.json(
                {f["model_name"]: f["series"] for f in candidates.families}
            ),
        }
    )
