"""Column names of the frames that cross asset boundaries, defined once.

Frames use Nixtla's long format (`unique_id, ds, y`) so statsforecast and neuralforecast take
them as they are; the database calls the same id `series_id`.
"""

from __future__ import annotations

from typing import TypeVar

import pandas as pd
import polars as pl

UNIQUE_ID = "unique_id"
DS = "ds"
Y = "y"
# Where a landed row came from: its 1-based data-row number in its file (after the header).
SOURCE_ROW = "source_row"
# Name of the dynamic `series` partitions dimension (partition keys derive from series ids).
SERIES_DIMENSION = "series"

# Prediction-interval levels every model must provide, in percent.
INTERVAL_LEVELS: tuple[int, ...] = (80, 95)


def lower_column(level: int) -> str:
    return f"lo_{level}"


def upper_column(level: int) -> str:
    return f"hi_{level}"


INTERVAL_COLUMNS: tuple[str, ...] = tuple(
    column for level in INTERVAL_LEVELS for column in (lower_column(level), upper_column(level))
)

# A forecast frame: one row per series, model and step, whatever model made it.
FORECAST_COLUMNS: tuple[str, ...] = (
    UNIQUE_ID,
    DS,
    "step",
    "cutoff",
    "model_name",
    "model_version",
    "yhat",
    *INTERVAL_COLUMNS,
)

OBSERVATION_COLUMNS: tuple[str, ...] = (UNIQUE_ID, DS, Y)


def driver_columns(columns: list[str], *, besides: tuple[str, ...] = ()) -> list[str]:
    """The driver columns of a long frame: every column but the observation's (and `besides`)."""
    return [c for c in columns if c not in OBSERVATION_COLUMNS and c not in besides]


class SchemaError(ValueError):
    """A frame at an asset boundary lacks columns its consumers rely on."""


Frame = TypeVar("Frame", pd.DataFrame, pl.DataFrame)


def require_columns(frame: Frame, columns: tuple[str, ...], what: str) -> Frame:
    """Fail at the boundary with the missing names, not deep inside a model library."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{what} lacks columns {missing}; has {list(frame.columns)}")
    return frame
