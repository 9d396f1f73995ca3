"""Datasets and series: what the platform knows exists, with frequency and time span."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, text

from forecasting_pipeline.storage.tables import DATASETS, SCHEMA, SERIES, upsert


@dataclass(frozen=True)
class DatasetRecord:
    dataset_id: str
    description: str
    source: str
    licence: str


@dataclass(frozen=True)
class SeriesRecord:
    series_id: str
    dataset_id: str
    freq: str | None
    first_ts: datetime
    last_ts: datetime


def register_dataset(conn: Connection, dataset: DatasetRecord) -> None:
    upsert(conn, DATASETS, [dataset.__dict__], key_columns=("dataset_id",))


def register_series(conn: Connection, series: Iterable[SeriesRecord]) -> int:
    """Insert new series, widen the time span of known ones."""
    rows = [s.__dict__ for s in series]
    if not rows:
        return 0
    conn.execute(
        text(
            f"""
            INSERT INTO {SCHEMA}.{SERIES} (series_id, dataset_id, freq, first_ts, last_ts)
            VALUES (:series_id, :dataset_id, :freq, :first_ts, :last_ts)
            ON CONFLICT (series_id) DO UPDATE SET
                freq = COALESCE(EXCLUDED.freq, {SERIES}.freq),
                first_ts = LEAST({SERIES}.first_ts, EXCLUDED.first_ts),
                last_ts = GREATEST({SERIES}.last_ts, EXCLUDED.last_ts),
                updated_at = now()
            """
        ),
        rows,
    )
    return len(rows)


def known_series(conn: Connection) -> list[str]:
    return list(conn.execute(text(f"SELECT series_id FROM {SCHEMA}.{SERIES} ORDER BY series_id")).scalars())


def newest_observation_ts(conn: Connection) -> datetime | None:
    """The latest timestamp of any registered series (None before any registration)."""
    return conn.execute(text(f"SELECT max(last_ts) FROM {SCHEMA}.{SERIES}")).scalar()
