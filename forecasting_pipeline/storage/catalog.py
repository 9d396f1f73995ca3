"""Datasets and series: what the platform knows exists, with partition key, frequency and span."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.storage.bulk import copy_frame
from forecasting_pipeline.storage.tables import DATASETS, OBSERVATIONS, SCHEMA, SERIES, upsert

SERIES_COLUMNS = (
    "series_id",
    "partition_key",
    "dataset_id",
    "freq",
    "freq_reason",
    "first_ts",
    "last_ts",
    "attributes",
)


@dataclass(frozen=True)
class DatasetRecord:
    dataset_id: str
    description: str
    source: str
    licence: str
    future_drivers: tuple[str, ...] = ()


def register_dataset(conn: Connection, dataset: DatasetRecord) -> None:
    upsert(
        conn,
        DATASETS,
        [{**dataset.__dict__, "future_drivers": list(dataset.future_drivers)}],
        key_columns=("dataset_id",),
    )


def register_series(conn: Connection, series: pl.DataFrame) -> list[str]:
    """Insert new series and widen the span of known ones, in one statement; returns the new ids.

    `series` has SERIES_COLUMNS (attributes as JSON text). A frequency is kept once inferred;
    a series flagged too short or irregular is inferred again when more data arrives.
    """
    if series.height == 0:
        return []
    conn.exec_driver_sql(
        "CREATE TEMP TABLE IF NOT EXISTS _series_in (series_id text, partition_key text, dataset_id text, "
        "freq text, freq_reason text, first_ts timestamp, last_ts timestamp, attributes jsonb) ON COMMIT DROP"
    )
    conn.exec_driver_sql("TRUNCATE _series_in")
    copy_frame(conn, "_series_in", series, SERIES_COLUMNS)
    columns = ", ".join(SERIES_COLUMNS)
    rows = conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{SERIES} ({columns}) SELECT {columns} FROM _series_in
            ON CONFLICT (series_id) DO UPDATE SET
                freq = COALESCE({SERIES}.freq, EXCLUDED.freq),
                freq_reason = CASE WHEN {SERIES}.freq IS NULL THEN EXCLUDED.freq_reason
                                   ELSE {SERIES}.freq_reason END,
                first_ts = LEAST({SERIES}.first_ts, EXCLUDED.first_ts),
                last_ts = GREATEST({SERIES}.last_ts, EXCLUDED.last_ts),
                attributes = {SERIES}.attributes || EXCLUDED.attributes,
                updated_at = now()
            RETURNING series_id, (xmax = 0) AS inserted
            """
        )
    ).all()
    return sorted(r.series_id for r in rows if r.inserted)


def stored_frequencies(conn: Connection, series_ids: Sequence[str]) -> pl.DataFrame:
    """unique_id, freq of known series among `series_ids` (freq null: not inferable yet)."""
    rows = conn.execute(
        text(f"SELECT series_id, freq FROM {SCHEMA}.{SERIES} WHERE series_id = ANY(:ids)"),
        {"ids": list(series_ids)},
    ).all()
    return pl.DataFrame(
        [tuple(r) for r in rows], schema={"unique_id": pl.Utf8, "freq": pl.Utf8}, orient="row"
    )


def observation_timestamps(conn: Connection, series_ids: Sequence[str]) -> pl.DataFrame:
    """unique_id, ds of the stored observations of `series_ids` (to infer their frequency)."""
    rows = conn.execute(
        text(f"SELECT series_id, ts FROM {SCHEMA}.{OBSERVATIONS} WHERE series_id = ANY(:ids)"),
        {"ids": list(series_ids)},
    ).all()
    return pl.DataFrame(
        [tuple(r) for r in rows], schema={"unique_id": pl.Utf8, "ds": pl.Datetime("us")}, orient="row"
    )


def series_by_partition_key(conn: Connection, keys: Sequence[str]) -> dict[str, str]:
    """Partition key -> series id, for the keys of a run (one query, any number of keys)."""
    rows = conn.execute(
        text(f"SELECT partition_key, series_id FROM {SCHEMA}.{SERIES} WHERE partition_key = ANY(:keys)"),
        {"keys": list(keys)},
    )
    return {r.partition_key: r.series_id for r in rows}


def known_series(conn: Connection) -> list[str]:
    return list(conn.execute(text(f"SELECT series_id FROM {SCHEMA}.{SERIES} ORDER BY series_id")).scalars())


def newest_observation_ts(conn: Connection) -> datetime | None:
    """The latest timestamp of any registered series (None before any registration)."""
    return conn.execute(text(f"SELECT max(last_ts) FROM {SCHEMA}.{SERIES}")).scalar()


def series_by_window(conn: Connection, partition_keys: Sequence[object]) -> dict[str, list[str]]:
    """window -> series ids of a series × date run's keys ("<window>|<series key>"), one query."""
    cells = [str(key).split("|", 1) for key in partition_keys]
    ids = series_by_partition_key(conn, sorted({key for _, key in cells}))
    by_window: dict[str, list[str]] = {}
    for window, key in cells:
        by_window.setdefault(window, []).append(ids[key])
    return dict(sorted(by_window.items()))
