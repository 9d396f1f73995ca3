"""Shared story of the cadence tests: land a real file, ingest it, forecast its window."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.ingestion.validation import ColumnRoles
from forecasting_pipeline_tests.conftest import (
    FAMILIES_ONLY_BACKTEST,
    TINY_GLOBAL_MODEL,
    TINY_SEARCH,
    series_keys,
)


def ingest_and_forecast_file(
    deployment, instance, db_engine, source: Path, roles: ColumnRoles
) -> pd.DataFrame:
    """The CLI's path for a user's own file; returns the stored predictions."""
    target = deployment.settings.landing_dir / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    ingested = operations.ingest(instance, deployment, roles=roles, progress=lambda _: None)
    operations.forecast(
        instance,
        ingested.latest_window,
        series_keys(instance),
        global_model_config=TINY_GLOBAL_MODEL,
        search_config=TINY_SEARCH,
        backtest_config=FAMILIES_ONLY_BACKTEST,
    )
    with db_engine.connect() as conn:
        return pd.read_sql(
            text("SELECT * FROM forecasting.predictions ORDER BY series_id, model_name, step"), conn
        )
