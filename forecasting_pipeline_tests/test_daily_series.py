"""User story: daily stock prices (trading days, with holidays) → frequency inferred once as
business days → forecasts on business days, each series from its own last trading day."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import polars as pl
from sqlalchemy import text

from forecasting_pipeline.ingestion.validation import ColumnRoles
from forecasting_pipeline_tests.cadence_story import ingest_and_forecast_file

SERIES = ["AAPL_Close", "GOOG_Close"]


def _stock_file(folder: Path) -> Path:
    source = Path(str(resources.files("tsdata.fpppy").joinpath("gafa_stock.csv")))
    frame = pl.read_csv(source, infer_schema=False).filter(
        pl.col("unique_id").is_in(SERIES) & (pl.col("ds") < "2016-10-01")
    )
    path = folder / "gafa_close.csv"
    frame.write_csv(path)
    return path


def test_daily_series_end_to_end(deployment, instance, db_engine, tmp_path):
    predictions = ingest_and_forecast_file(
        deployment, instance, db_engine, _stock_file(tmp_path), ColumnRoles()
    )

    with db_engine.connect() as conn:
        freqs = dict(conn.execute(text("SELECT series_id, freq FROM forecasting.series")).all())
    assert freqs == {"AAPL_Close": "B", "GOOG_Close": "B"}
    first = predictions[predictions["step"] == 1]
    # 2016-09-30 was a Friday: the next business day is Monday 2016-10-03.
    assert (first["ds"] == pd.Timestamp("2016-10-03")).all()
    assert set(first["series_id"]) == set(SERIES)
    assert (predictions["ds"].dt.dayofweek < 5).all()
