"""Split landed rows into valid observations and quarantined rows, each with a reason.

Nothing is dropped silently: every row of the input comes out in exactly one of the two frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import polars as pl

from forecasting_pipeline.partitions import InvalidSeriesIdError, validate_series_id
from forecasting_pipeline.resources.landing import SOURCE, SOURCE_ROW
from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y

REASON = "reason"
BEYOND_LAST_WINDOW = "timestamp after the last date window"
_BOOKKEEPING = (UNIQUE_ID, DS, Y, SOURCE, SOURCE_ROW)


@dataclass(frozen=True)
class ValidatedRows:
    valid: pl.DataFrame  # unique_id, ds (naive UTC), y, driver columns (Float64), source, source_row
    quarantined: pl.DataFrame  # the raw text columns plus `reason`

    @property
    def driver_columns(self) -> list[str]:
        return [c for c in self.valid.columns if c not in _BOOKKEEPING]


def _series_id_ok(value: str | None) -> bool:
    if value is None:
        return False
    try:
        validate_series_id(value)
    except InvalidSeriesIdError:
        return False
    return True


def _parse_timestamps(raw: pl.Series) -> pl.Series:
    """ISO 8601 text to naive UTC; an offset or `Z` suffix is honoured, bad text becomes null."""
    parsed = pd.to_datetime(raw.to_pandas(), format="ISO8601", utc=True, errors="coerce")
    return pl.Series("_ds", parsed.dt.tz_convert(None)).cast(pl.Datetime("ns"))


def validate_rows(rows: pl.DataFrame, placeable_until: datetime | None = None) -> ValidatedRows:
    """Parse and check landed text rows; later rows win over earlier duplicates.

    Rows at or after `placeable_until` (the end of the last date window) fit no partition and
    are refused with their reason, like any other unusable row.

    Data lacking a required column (long format: unique_id, ds, y, drivers…) is not an
    exception: its rows are quarantined with a reason naming the column, so one malformed file
    never blocks the others.
    """
    absent = [c for c in (UNIQUE_ID, DS, Y) if c not in rows.columns]
    rows = rows.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in absent)
    drivers = [c for c in rows.columns if c not in _BOOKKEEPING]
    parsed = rows.with_columns(
        _parse_timestamps(rows[DS]),
        pl.col(Y).str.strip_chars().cast(pl.Float64, strict=False).alias("_y"),
        *[pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).alias(f"_d_{c}") for c in drivers],
    )
    series_ok = pl.col(UNIQUE_ID).map_elements(_series_id_ok, return_dtype=pl.Boolean)
    driver_reasons = [
        pl.when(
            pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "") & pl.col(f"_d_{c}").is_null()
        ).then(pl.lit(f"non-numeric driver {c}"))
        for c in drivers
    ]
    reason = pl.coalesce(
        *[pl.lit(f"landed data has no {c!r} column") for c in absent],
        pl.when(pl.col(UNIQUE_ID).is_null() | (pl.col(UNIQUE_ID).str.strip_chars() == "")).then(
            pl.lit("missing series id")
        ),
        pl.when(~series_ok).then(pl.lit("series id not usable as a partition key")),
        pl.when(pl.col("_ds").is_null()).then(pl.lit("unparseable timestamp")),
        pl.when(pl.col("_y").is_null()).then(pl.lit("missing or non-numeric target")),
        pl.when(~pl.col("_y").is_finite()).then(pl.lit("non-finite target")),
        *driver_reasons,
        *(
            [pl.when(pl.col("_ds") >= placeable_until).then(pl.lit(BEYOND_LAST_WINDOW))]
            if placeable_until is not None
            else []
        ),
    )
    checked = parsed.with_columns(reason.alias(REASON))

    # Among well-formed rows, the last occurrence of a (series, ts) wins; earlier ones are kept
    # in quarantine so a correction never silently erases what was there.
    ok = checked.filter(pl.col(REASON).is_null()).with_row_index("_order")
    last = ok.group_by([UNIQUE_ID, "_ds"]).agg(pl.col("_order").max().alias("_keep"))
    ok = ok.join(last, on=[UNIQUE_ID, "_ds"], how="left").with_columns(
        pl.when(pl.col("_order") != pl.col("_keep"))
        .then(pl.lit("duplicate timestamp, superseded by a later row"))
        .otherwise(None)
        .alias(REASON)
    )
    superseded = ok.filter(pl.col(REASON).is_not_null())
    valid = (
        ok.filter(pl.col(REASON).is_null())
        .select(
            pl.col(UNIQUE_ID),
            pl.col("_ds").alias(DS),
            pl.col("_y").alias(Y),
            *[pl.col(f"_d_{c}").alias(c) for c in drivers],
            pl.col(SOURCE),
            pl.col(SOURCE_ROW),
        )
        .sort([UNIQUE_ID, DS])
    )
    raw_columns = [*(c for c in rows.columns if c not in absent), REASON]
    quarantined = pl.concat(
        [
            checked.filter(pl.col(REASON).is_not_null()).select(raw_columns),
            superseded.select(raw_columns),
        ]
    )
    return ValidatedRows(valid=valid, quarantined=quarantined)
