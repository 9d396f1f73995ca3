"""User story: a team's own monthly file with its own column names (Australian retail turnover,
ids with commas, text columns) → ingested with a column mapping → frequency inferred once as
month-start → forecasts per month with intervals, shown under the original ids."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import polars as pl
from sqlalchemy import text

from forecasting_pipeline.ingestion.validation import ColumnRoles
from forecasting_pipeline.modeling.catalog import load_catalog
from forecasting_pipeline_tests.cadence_story import ingest_and_forecast_file

INDUSTRIES = ["Cafes, restaurants and catering services", "Takeaway food services"]


def _retail_file(folder: Path) -> Path:
    source = Path(str(resources.files("tsdata.fpppy").joinpath("aus_retail.csv")))
    frame = pl.read_csv(source, infer_schema=False).filter(
        (pl.col("State") == "Victoria")
        & pl.col("Industry").is_in(INDUSTRIES)
        & (pl.col("Month") < "2016-10-01")
    )
    path = folder / "victoria_retail.csv"
    frame.write_csv(path)
    return path


def test_monthly_series_with_mapped_columns_end_to_end(deployment, instance, db_engine, tmp_path):
    roles = ColumnRoles(series_id="Industry", timestamp="Month", target="Turnover")
    predictions = ingest_and_forecast_file(deployment, instance, db_engine, _retail_file(tmp_path), roles)

    with db_engine.connect() as conn:
        series = pd.read_sql(text("SELECT series_id, freq, attributes FROM forecasting.series"), conn)
    assert sorted(series["series_id"]) == INDUSTRIES
    assert set(series["freq"]) == {"MS"}
    assert all(a["State"] == "Victoria" for a in series["attributes"])
    assert set(predictions["series_id"]) == set(INDUSTRIES)
    assert set(predictions["model_name"]) == {
        f.name for f in (*load_catalog().neural(), *load_catalog().local())
    }
    first = predictions[predictions["step"] == 1]
    assert (first["ds"] == pd.Timestamp("2016-10-01")).all()  # the month after the last observation
    horizon = load_catalog().group("monthly").horizon
    last = predictions[predictions["step"] == predictions["step"].max()]
    assert predictions["step"].max() == horizon  # the monthly group's own horizon
    assert (last["ds"] == pd.Timestamp("2016-10-01") + pd.DateOffset(months=horizon - 1)).all()
    assert (predictions["lo_95"] <= predictions["hi_95"]).all()
