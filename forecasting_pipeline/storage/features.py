"""The stored feature table: one JSONB row of features per observation.

A `feature_table` run owns the rows of its (series, window) cells: it deletes them and COPYs
the new ones in one transaction, so a re-run or a run killed halfway never leaves duplicates
or a mix of two feature settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.schemas import DS, UNIQUE_ID
from forecasting_pipeline.storage.bulk import copy_frame, copy_query
from forecasting_pipeline.storage.tables import FEATURES, SCHEMA

_COLUMNS = ("series_id", "ts", "window_key", "features", "feature_set", "dagster_run_id")
_TIMESTAMP = pl.col(DS).str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="ns")


def replace_features(
    conn: Connection,
    window: str,
    series_ids: Sequence[str],
    rows: pl.DataFrame,
    feature_set: str,
    run_id: str,
) -> int:
    """Replace the window's feature rows of `series_ids` with `rows` (unique_id, ds, features JSON)."""
    conn.execute(
        text(f"DELETE FROM {SCHEMA}.{FEATURES} WHERE window_key = :window AND series_id = ANY(:ids)"),
        {"window": window, "ids": list(series_ids)},
    )
    frame = rows.select(
        pl.col(UNIQUE_ID).alias("series_id"),
        pl.col(DS).alias("ts"),
        pl.lit(window).alias("window_key"),
        "features",
        pl.lit(feature_set).alias("feature_set"),
        pl.lit(run_id).alias("dagster_run_id"),
    )
    return copy_frame(conn, f"{SCHEMA}.{FEATURES}", frame, _COLUMNS)


def read_features(
    conn: Connection, series_ids: Sequence[str], since: datetime | None, until: datetime
) -> pl.DataFrame:
    """unique_id, ds and one Float64 column per stored feature, for since <= ts < until."""
    filters, params = ["series_id = ANY(%s)", "ts < %s"], [list(series_ids), until]
    if since is not None:
        filters.append("ts >= %s")
        params.append(since)
    rows = copy_query(
        conn,
        f"SELECT series_id AS {UNIQUE_ID}, ts AS {DS}, features::text AS features "
        f"FROM {SCHEMA}.{FEATURES} WHERE {' AND '.join(filters)} ORDER BY series_id, ts",
        params,
    )
    if rows.height == 0:
        return pl.DataFrame(schema={UNIQUE_ID: pl.Utf8, DS: pl.Datetime("ns")})
    decoded = rows["features"].str.json_decode(infer_schema_length=None).struct.unnest()
    return rows.select(UNIQUE_ID, _TIMESTAMP).hstack(decoded.select(pl.all().cast(pl.Float64)))
