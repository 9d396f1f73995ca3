"""Observations and quarantine rows: upserted on their natural keys, so re-runs add nothing."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime

import pandas as pd
import polars as pl
from sqlalchemy import Connection, text

from forecasting_pipeline.ingestion.validation import REASON
from forecasting_pipeline.resources.landing import SOURCE, SOURCE_ROW
from forecasting_pipeline.schemas import DS, UNIQUE_ID, WINDOW_KEY, Y
from forecasting_pipeline.storage.tables import OBSERVATIONS, QUARANTINE, SCHEMA, upsert


def upsert_observations(
    conn: Connection, observations: pd.DataFrame, driver_columns: list[str], run_id: str
) -> int:
    """Insert or replace rows keyed by (series_id, ts); drivers go to a JSON column."""

    def rows():
        drivers = observations[driver_columns].to_dict("records") if driver_columns else None
        for i, (series_id, ts, y, window, source) in enumerate(
            observations[[UNIQUE_ID, DS, Y, WINDOW_KEY, SOURCE]].itertuples(index=False, name=None)
        ):
            yield {
                "series_id": series_id,
                "ts": ts.to_pydatetime() if isinstance(ts, pd.Timestamp) else ts,
                "y": float(y),
                "drivers": _finite_values(drivers[i]) if drivers else {},
                "window_key": window,
                "source": source,
                "dagster_run_id": run_id,
            }

    return upsert(conn, OBSERVATIONS, rows(), key_columns=("series_id", "ts"))


def _finite_values(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}


def quarantine_rows(conn: Connection, rejected: pl.DataFrame, run_id: str | None) -> int:
    """Keep refused rows with their reason; the same row refused again is stored once."""

    def rows():
        for record in rejected.iter_rows(named=True):
            raw = {k: v for k, v in record.items() if k not in (REASON, SOURCE, SOURCE_ROW)}
            fingerprint_source = json.dumps(
                [record[SOURCE], record[SOURCE_ROW], raw, record[REASON]],
                sort_keys=True,
                default=str,
            )
            yield {
                "fingerprint": hashlib.sha256(fingerprint_source.encode()).hexdigest(),
                "series_id": record.get(UNIQUE_ID),
                "raw_ts": record.get(DS),
                "raw_row": {**raw, "source_row": record[SOURCE_ROW]},
                "reason": record[REASON],
                "source": record[SOURCE],
                "dagster_run_id": run_id,
            }

    return upsert(conn, QUARANTINE, rows(), key_columns=("fingerprint",), update_columns=())


def read_panel(conn: Connection, until: datetime) -> pd.DataFrame:
    """All series' observations before `until`, in long format with drivers as columns."""
    result = conn.execute(
        text(
            f"SELECT series_id, ts, y, drivers FROM {SCHEMA}.{OBSERVATIONS} "
            "WHERE ts < :until ORDER BY series_id, ts"
        ),
        {"until": until},
    )
    records = result.all()
    panel = pd.DataFrame(
        {
            UNIQUE_ID: [r.series_id for r in records],
            DS: pd.to_datetime([r.ts for r in records]),
            Y: [r.y for r in records],
        }
    )
    drivers = pd.DataFrame.from_records([r.drivers for r in records], index=panel.index)
    return pd.concat([panel, drivers], axis=1) if not drivers.empty else panel
