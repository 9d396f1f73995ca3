"""Feature stage: calendar features, target lags, rolling statistics and aligned drivers.

`feature_table` owns the rows of its series × window cells in `forecasting.features`; a cell's
features are computed from the series' own values at or before each timestamp, reading only
the few points before the window that its lags and rolling windows need.
"""

import hashlib
import json
from typing import Any

import polars as pl
from dagster import AssetDep, AssetExecutionContext, Config, MaterializeResult, MetadataValue
from pydantic import Field

from forecasting_pipeline.assets.cell_metadata import add_cell_rows
from forecasting_pipeline.assets.conventions import markdown_table, note_run, pipeline_asset
from forecasting_pipeline.assets.history_slices import history_slices
from forecasting_pipeline.assets.ingest import raw_observations
from forecasting_pipeline.modeling.features import FeatureSpec, build_features, to_json_rows
from forecasting_pipeline.partitions import series_date_partitions
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.schemas import driver_columns
from forecasting_pipeline.storage.catalog import series_by_window
from forecasting_pipeline.storage.features import replace_features
from forecasting_pipeline.storage.tables import FEATURES


class FeatureConfig(Config):
    """Which features `feature_table` builds; every window is in steps of the series' frequency."""

    lags: list[int] = Field(default=[1, 2, 3], description="Target lags.")
    seasonal_lag: bool = Field(default=True, description="Also lag by the series' season length.")
    rolling_windows: list[int] = Field(default=[3, 7], description="Rolling mean/std/min/max windows.")
    driver_lags: list[int] = Field(default=[1], description="Lags of each driver (lag 0 is always kept).")

    def spec(self) -> FeatureSpec:
        return FeatureSpec(
            lags=tuple(self.lags),
            seasonal_lag=self.seasonal_lag,
            rolling_windows=tuple(self.rolling_windows),
            driver_lags=tuple(self.driver_lags),
        )


def feature_set_id(spec: FeatureSpec) -> str:
    """Fingerprint of the settings that made a feature row (stored with it)."""
    return hashlib.sha256(json.dumps(spec.__dict__, sort_keys=True, default=list).encode()).hexdigest()[:12]


@pipeline_asset(
    partitions_def=series_date_partitions,
    deps=[AssetDep(raw_observations)],
    group_name="features",
    kinds={"polars", "postgres"},
)
def feature_table(
    context: AssetExecutionContext, config: FeatureConfig, database: DatabaseResource
) -> MaterializeResult:
    """Features of each observation in `forecasting.features` (JSONB per row, one key per feature).

    No feature at time t uses a value after t, nor the target at t itself: lags start at one
    step and rolling statistics end one step before t. Drivers are aligned to the target's
    timestamps (their value at t, and their lags).
    """
    spec = config.spec()
    feature_set = feature_set_id(spec)
    with database.transaction() as conn:
        note_run(context, conn)
        by_window = series_by_window(conn, context.partition_keys)
    summary: list[dict[str, Any]] = []
    preview = pl.DataFrame()
    for window, series_ids in by_window.items():
        with database.transaction() as conn:
            sliced = history_slices(conn, window, series_ids, spec.lookback_steps, from_window_start=True)
            for part in sliced.slices:
                history = part.read(conn)
                drivers = driver_columns(history.columns)
                features = build_features(
                    history,
                    spec=spec,
                    season=part.season,
                    group=part.group,
                    drivers=drivers,
                    since=part.window_start,
                )
                written = replace_features(
                    conn, window, part.series_ids, to_json_rows(features), feature_set, context.run_id
                )
                summary.append(
                    {
                        "window": window,
                        "group": part.group,
                        "series": len(part.series_ids),
                        "rows": written,
                        "features": features.width - 2,
                    }
                )
                if preview.height == 0 and features.height:
                    preview = features.tail(5)
        if sliced.unplaced:
            context.log.warning(f"window {window}: no known frequency for {sliced.unplaced[:5]}; no features")
    with database.transaction() as conn:
        add_cell_rows(context, conn, FEATURES, by_window, "feature_rows")
    return MaterializeResult(
        metadata={
            "feature_set": feature_set,
            "rows": sum(s["rows"] for s in summary),
            "groups": MetadataValue.md(markdown_table(pl.DataFrame(summary))) if summary else "no series",
            "columns": MetadataValue.json(preview.columns[2:]),
            "preview": MetadataValue.md(markdown_table(preview.with_columns(pl.selectors.float().round(3))))
            if preview.height
            else "no rows",
        }
    )
