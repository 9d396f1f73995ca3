"""Split landed text rows into valid observations and quarantined rows, each with a reason.

Nothing is dropped silently: every row of the input comes out in exactly one of the two frames,
so for every file rows read = rows accepted + rows quarantined. Everything is a polars
expression over the whole frame (no per-row Python), so a 5-million-row file validates in
seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import polars as pl

from forecasting_pipeline.schemas import DS, SOURCE_ROW, UNIQUE_ID, Y
from forecasting_pipeline.series_keys import MAX_SERIES_ID_LENGTH, UNSAFE_CHARACTERS, UNSAFE_CHARACTERS_NAMED

REASON = "reason"
RAW_ROW = "raw_row"
RAW_TS = "raw_ts"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
MISSING_COLUMN = "missing_column"

BEYOND_LAST_WINDOW = "timestamp after the last date window"
SUPERSEDED = "duplicate timestamp, superseded by a later row"
EXACT_DUPLICATE = "exact duplicate of a later row"

# Working columns of `validate_rows` start with a control character, which the reader refuses in
# landed column names: a landed column called `_id`, `reason` or `_d_x` can then never be
# overwritten by (or collide with) one of ours.
_INTERNAL = "\x1f"
_ID, _DS, _OFFSET, _Y, _RANK = (f"{_INTERNAL}{name}" for name in ("id", "ds", "offset", "y", "rank"))
_REASON, _CONFLICTING = f"{_INTERNAL}reason", f"{_INTERNAL}conflicting"


def _driver(column: str) -> str:
    return f"{_INTERNAL}driver:{column}"


# A text column is a driver when at least this share of its non-empty values are numbers.
_NUMERIC_SHARE_FOR_DRIVER = 0.95
_TZ_SUFFIX = r"(Z|[+-]\d{2}:?\d{2})$"
_NAIVE_FORMATS = (
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
_OFFSET_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M%z")


@dataclass(frozen=True)
class ColumnRoles:
    """How a source's columns map to the long format; drivers/attributes None means inferred."""

    series_id: str = UNIQUE_ID
    timestamp: str = DS
    target: str = Y
    drivers: tuple[str, ...] | None = None
    attributes: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    # Drivers known ahead of time (published forecasts, calendars): future exogenous model inputs.
    future_drivers: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "series_id": self.series_id,
            "timestamp": self.timestamp,
            "target": self.target,
            "drivers": list(self.drivers) if self.drivers is not None else None,
            "attributes": list(self.attributes) if self.attributes is not None else None,
            "ignore": list(self.ignore),
            "future_drivers": list(self.future_drivers),
        }


@dataclass(frozen=True)
class ValidatedRows:
    # unique_id, ds (naive UTC, us), y, driver columns (Float64), source_row
    valid: pl.DataFrame
    # source_row, unique_id (text as landed), raw_ts, raw_row (JSON text), reason
    quarantined: pl.DataFrame
    # every landed row as parsed, for the data-quality checks: source_row, series_id, ts, y,
    # missing_column, conflicting_duplicate, reason
    as_landed: pl.DataFrame
    drivers: list[str]
    # unique_id + one column per text attribute that is constant within each series
    attributes: pl.DataFrame
    warnings: list[str] = field(default_factory=list)


def parse_timestamps(raw: pl.Series) -> tuple[pl.Series, pl.Series]:
    """ISO 8601 text to naive UTC, and whether each value carried an offset (`Z`, `+02:00`).

    Explicit formats instead of pandas' per-element ISO parser (ten times faster on millions of
    rows), each tried only on the values the previous ones left unparsed: a file in one format
    costs one pass. Text matching none of them is null (the row is refused with a reason).
    """
    text = raw.cast(pl.Utf8).str.strip_chars()
    has_offset = text.str.contains(_TZ_SUFFIX).fill_null(False)
    parsed = pl.Series("ts", [None] * len(text), dtype=pl.Datetime("us"))
    offset_text = text.str.replace(r"Z$", "+00:00")
    attempts = [(fmt, False) for fmt in _NAIVE_FORMATS] + [(fmt, True) for fmt in _OFFSET_FORMATS]
    for fmt, aware in attempts:
        todo = parsed.is_null() & text.is_not_null() & (has_offset if aware else ~has_offset)
        if not todo.any():
            continue
        rows = todo.arg_true()
        source = offset_text.gather(rows) if aware else text.gather(rows)
        values = (
            source.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC").dt.replace_time_zone(
                None
            )
            if aware
            else source.str.to_datetime(fmt, strict=False, time_unit="us")
        )
        hit = values.is_not_null()
        if hit.any():
            parsed = parsed.scatter(rows.filter(hit), values.filter(hit))
    return parsed, has_offset


def _classify_extra_columns(
    rows: pl.DataFrame, roles: ColumnRoles, extra: list[str]
) -> tuple[list[str], list[str]]:
    """Drivers are numeric columns, attributes text ones, unless the source says otherwise."""
    if roles.drivers is not None:
        drivers = [c for c in roles.drivers if c in extra]
    else:
        shares = rows.select(
            [
                (
                    pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).is_not_null().sum()
                    / pl.max_horizontal(
                        (pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "")).sum(), pl.lit(1)
                    )
                ).alias(c)
                for c in extra
            ]
        )
        drivers = [c for c in extra if shares[c][0] >= _NUMERIC_SHARE_FOR_DRIVER] if extra else []
    if roles.attributes is not None:
        attributes = [c for c in roles.attributes if c in extra and c not in drivers]
    else:
        attributes = [c for c in extra if c not in drivers]
    return drivers, attributes


def _series_attributes(
    rows: pl.DataFrame, candidates: list[str], warnings: list[str]
) -> tuple[pl.DataFrame, list[str]]:
    """Text columns constant within every series become series attributes; others are ignored."""
    if not candidates or rows.height == 0:
        return pl.DataFrame({UNIQUE_ID: rows[UNIQUE_ID].unique()}), []
    distinct = rows.group_by(UNIQUE_ID).agg(
        [pl.col(c).str.strip_chars().drop_nulls().n_unique().alias(c) for c in candidates]
    )
    kept = [c for c in candidates if distinct[c].max() <= 1]
    for column in candidates:
        if column not in kept:
            warnings.append(f"column {column!r} is text that varies within a series: ignored")
    values = rows.group_by(UNIQUE_ID).agg(
        [pl.col(c).str.strip_chars().drop_nulls().first().alias(c) for c in kept]
    )
    return values, kept


def validate_rows(
    rows: pl.DataFrame,
    roles: ColumnRoles = ColumnRoles(),
    *,
    not_after: datetime | None = None,
    placeable_until: datetime | None = None,
) -> ValidatedRows:
    """Parse and check landed text rows; later rows win over earlier duplicates.

    `not_after`: timestamps later than this are future timestamps and refused. `placeable_until`:
    the end of a pinned calendar; later rows fit no partition and are refused. A required column
    absent from the data is not an exception: its rows are refused with a reason naming it, so
    one malformed file never blocks the others.
    """
    warnings: list[str] = []
    renames = {roles.series_id: UNIQUE_ID, roles.timestamp: DS, roles.target: Y}
    clashing = [c for c in (UNIQUE_ID, DS, Y) if c in rows.columns and c not in renames]
    rows = rows.drop(clashing).rename({k: v for k, v in renames.items() if k in rows.columns})
    absent = [c for c in (UNIQUE_ID, DS, Y) if c not in rows.columns]
    rows = rows.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c) for c in absent)
    landed_names = {UNIQUE_ID: roles.series_id, DS: roles.timestamp, Y: roles.target}
    extra = [c for c in rows.columns if c not in (UNIQUE_ID, DS, Y, SOURCE_ROW) and c not in roles.ignore]
    drivers, attribute_candidates = _classify_extra_columns(rows, roles, extra)
    for column in extra:
        if column not in drivers and column not in attribute_candidates:
            warnings.append(f"column {column!r} has no role: ignored")

    ts, has_offset = parse_timestamps(rows[DS])
    series_id = pl.col(UNIQUE_ID).str.strip_chars()
    parsed = rows.with_columns(
        series_id.alias(_ID),
        ts.alias(_DS),
        has_offset.alias(_OFFSET),
        pl.col(Y).str.strip_chars().cast(pl.Float64, strict=False).alias(_Y),
        *[pl.col(c).str.strip_chars().cast(pl.Float64, strict=False).alias(_driver(c)) for c in drivers],
    )
    readable = parsed[_DS].is_not_null()
    mixed_zones = bool((parsed[_OFFSET] & readable).any()) and bool((~parsed[_OFFSET] & readable).any())
    driver_reasons = [
        pl.when(
            pl.col(c).is_not_null() & (pl.col(c).str.strip_chars() != "") & pl.col(_driver(c)).is_null()
        ).then(pl.lit(f"non-numeric driver {c}"))
        for c in drivers
    ]
    reason = pl.coalesce(
        *[pl.lit(f"landed data has no {landed_names[c]!r} column") for c in absent],
        pl.when(pl.col(_ID).is_null() | (pl.col(_ID) == "")).then(pl.lit("missing series id")),
        pl.when(pl.col(_ID).str.contains(UNSAFE_CHARACTERS)).then(
            pl.lit(f"series id contains {UNSAFE_CHARACTERS_NAMED}")
        ),
        pl.when(pl.col(_ID).str.len_chars() > MAX_SERIES_ID_LENGTH).then(
            pl.lit(f"series id longer than {MAX_SERIES_ID_LENGTH} characters")
        ),
        pl.when(pl.col(_DS).is_null()).then(
            pl.lit("unparseable timestamp (expected ISO 8601, e.g. 2024-01-31 or 2024-01-31T13:00:00Z)")
        ),
        pl.when(pl.lit(mixed_zones) & ~pl.col(_OFFSET)).then(
            pl.lit("timestamp without a time zone in a file whose other timestamps have one")
        ),
        pl.when(pl.col(_Y).is_null()).then(pl.lit("missing or non-numeric target")),
        pl.when(~pl.col(_Y).is_finite()).then(pl.lit("non-finite target")),
        *driver_reasons,
        *([pl.when(pl.col(_DS) > not_after).then(pl.lit("timestamp in the future"))] if not_after else []),
        *(
            [pl.when(pl.col(_DS) >= placeable_until).then(pl.lit(BEYOND_LAST_WINDOW))]
            if placeable_until is not None
            else []
        ),
    )
    checked = parsed.with_columns(reason.alias(_REASON))

    # Among well-formed rows the last occurrence of a (series, ts) wins; earlier ones are kept in
    # quarantine, so a correction never silently erases what was there.
    ranked = checked.with_columns(
        pl.when(pl.col(_REASON).is_null())
        .then(pl.col(SOURCE_ROW).rank("ordinal", descending=True).over([_ID, _DS, pl.col(_REASON).is_null()]))
        .alias(_RANK),
        pl.when(pl.col(_REASON).is_null())
        .then(
            pl.struct([_Y, *[_driver(c) for c in drivers]])
            .n_unique()
            .over([_ID, _DS, pl.col(_REASON).is_null()])
            > 1
        )
        .otherwise(False)
        .alias(_CONFLICTING),
    ).with_columns(
        pl.when(pl.col(_REASON).is_null() & (pl.col(_RANK) > 1))
        .then(pl.when(pl.col(_CONFLICTING)).then(pl.lit(SUPERSEDED)).otherwise(pl.lit(EXACT_DUPLICATE)))
        .otherwise(pl.col(_REASON))
        .alias(_REASON)
    )

    accepted = ranked.filter(pl.col(_REASON).is_null())
    attributes, kept_attributes = _series_attributes(
        accepted.select(pl.col(_ID).alias(UNIQUE_ID), *attribute_candidates), attribute_candidates, warnings
    )
    valid = accepted.select(
        pl.col(_ID).alias(UNIQUE_ID),
        pl.col(_DS).alias(DS),
        pl.col(_Y).alias(Y),
        *[pl.col(_driver(c)).alias(c) for c in drivers],
        pl.col(SOURCE_ROW),
    ).sort([UNIQUE_ID, DS])
    raw_columns = [c for c in rows.columns if c not in absent and c != SOURCE_ROW]
    quarantined = ranked.filter(pl.col(_REASON).is_not_null()).select(
        pl.col(SOURCE_ROW),
        pl.col(UNIQUE_ID),
        pl.col(DS).alias(RAW_TS),
        pl.struct([pl.col(c) for c in raw_columns]).struct.json_encode().alias(RAW_ROW)
        if raw_columns
        else pl.lit("{}").alias(RAW_ROW),
        pl.col(_REASON).alias(REASON),
    )
    as_landed = ranked.select(
        pl.col(SOURCE_ROW),
        pl.when(pl.col(_ID) == "").then(None).otherwise(pl.col(_ID)).alias("series_id"),
        pl.col(_DS).alias("ts"),
        pl.col(_Y).alias("y"),
        pl.lit(absent[0] if absent else None, dtype=pl.Utf8).alias(MISSING_COLUMN),
        pl.col(_CONFLICTING).alias(CONFLICTING_DUPLICATE),
        pl.col(_REASON).alias(REASON),
    )
    return ValidatedRows(
        valid=valid,
        quarantined=quarantined,
        as_landed=as_landed,
        drivers=drivers,
        attributes=attributes.select(UNIQUE_ID, *kept_attributes),
        warnings=warnings,
    )


def future_limit(tolerance_hours: float, now: datetime | None = None) -> datetime:
    """Latest acceptable timestamp: now (UTC, naive) plus a tolerance for clocks and local time."""
    current = pd.Timestamp.now(tz="UTC").tz_convert(None).to_pydatetime() if now is None else now
    return current + pd.Timedelta(hours=tolerance_hours).to_pytimedelta()
