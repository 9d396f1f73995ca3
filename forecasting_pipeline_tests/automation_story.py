"""Files the automation tests land: the bundled data cut at a week, then what arrives later."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl

from forecasting_pipeline.datasets import EPF_FR_BE

# The bundled series up to this time land first; the rest, and a new series, land later.
FIRST_CUT = datetime(2016, 10, 23)
NEW_SERIES = "DE"


def bundled() -> pl.DataFrame:
    return pl.read_csv(EPF_FR_BE.path(), try_parse_dates=True)


def land_first_weeks(landing: Path) -> Path:
    landing.mkdir(parents=True, exist_ok=True)
    target = landing / "prices_until_2016-10-23.csv"
    bundled().filter(pl.col("ds") < FIRST_CUT).write_csv(target)
    return target


def land_new_weeks_and_series(landing: Path) -> Path:
    """FR and BE from FIRST_CUT on, and a new market `DE` with its whole history (BE's, scaled)."""
    frame = bundled()
    later = frame.filter(pl.col("ds") >= FIRST_CUT)
    new_series = frame.filter(pl.col("unique_id") == "BE").with_columns(
        pl.lit(NEW_SERIES).alias("unique_id"), (pl.col("y") * 1.05).round(2).alias("y")
    )
    target = landing / "prices_from_2016-10-23_and_DE.csv"
    pl.concat([later, new_series]).write_csv(target)
    return target
