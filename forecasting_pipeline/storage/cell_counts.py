"""Rows per series × window cell of the tables the series × date assets write, for their metadata."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
from sqlalchemy import Connection

from forecasting_pipeline.storage.bulk import copy_query
from forecasting_pipeline.storage.tables import (
    BACKTEST_FOLDS,
    CELL_VERSIONS,
    FEATURES,
    FORECAST_ACCURACY,
    GRANGER_TESTS,
    PUBLISHED_FORECASTS,
    SCHEMA,
)

# Tables keyed by (series_id, window_key) whose rows a cell's page counts.
CELL_TABLES = (BACKTEST_FOLDS, CELL_VERSIONS, FEATURES, FORECAST_ACCURACY, GRANGER_TESTS, PUBLISHED_FORECASTS)


def rows_per_cell(
    conn: Connection, table: str, windows: Sequence[str], series_ids: Sequence[str]
) -> pl.DataFrame:
    """`window, series_id, rows` of `table` for these windows and series, in one statement.

    `cell_versions` holds one row per cell with the count of its observations; the others are
    counted.
    """
    if table not in CELL_TABLES:
        raise ValueError(f"{table} is not keyed by series and window")
    rows = "sum(rows)" if table == CELL_VERSIONS else "count(*)"
    frame = copy_query(
        conn,
        f"SELECT window_key AS window, series_id, {rows} AS rows FROM {SCHEMA}.{table} "
        "WHERE window_key = ANY(%s) AND series_id = ANY(%s) GROUP BY window_key, series_id",
        (list(windows), list(series_ids)),
    )
    if frame.width == 0:
        return pl.DataFrame(schema={"window": pl.String, "series_id": pl.String, "rows": pl.Int64})
    return frame.with_columns(pl.col("rows").cast(pl.Int64))
