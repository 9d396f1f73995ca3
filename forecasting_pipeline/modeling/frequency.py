"""Sampling frequency of a panel, and the seasonal period that goes with it."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import polars as pl

from forecasting_pipeline.schemas import DS, UNIQUE_ID

# Calendar offsets -> dominant seasonal period (weekly cycle for daily data, yearly for
# weekly, monthly and quarterly). Sub-daily data takes the daily cycle, computed from the step.
_SEASON_LENGTH = {"D": 7, "B": 5, "W": 52, "MS": 12, "ME": 12, "M": 12, "QS": 4, "QE": 4, "Q": 4}
_DAY = pd.Timedelta(days=1)


class FrequencyError(ValueError):
    """A series' timestamps are too few to have a spacing."""


def infer_series_frequency(timestamps: pd.Series) -> str:
    """Pandas alias of a series' spacing, e.g. `h`, `D`, `MS`; tolerates gaps."""
    ordered = pd.DatetimeIndex(pd.to_datetime(timestamps).sort_values().unique())
    if len(ordered) < 3:
        raise FrequencyError(f"need at least 3 timestamps to infer a frequency, got {len(ordered)}")
    inferred = pd.infer_freq(ordered[: min(len(ordered), 50)])
    if inferred is None:
        inferred = _frequency_between_gaps(ordered)
    return _normalize_alias(inferred)


_RUN = 5  # consecutive timestamps pandas needs to name a calendar frequency reliably
_SAMPLED_RUNS = 25


def _frequency_between_gaps(ordered: pd.DatetimeIndex) -> str:
    """Gaps defeat `infer_freq` on the whole series; ask it about short gap-free runs instead.

    The most common answer over evenly spread runs keeps calendar offsets (`W-SUN`, `MS`) that a
    plain modal step (`7D`, `31D`) would lose. Falls back to the modal step when no run names one.
    """
    starts = range(0, len(ordered) - _RUN + 1)
    stride = max(len(starts) // _SAMPLED_RUNS, 1)
    votes = Counter(
        answer
        for start in starts[::stride]
        if (answer := pd.infer_freq(ordered[start : start + _RUN])) is not None
    )
    if votes:
        return votes.most_common(1)[0][0]
    step = pd.Series(ordered[1:] - ordered[:-1]).mode().iloc[0]
    return pd.tseries.frequencies.to_offset(step).freqstr


def _normalize_alias(alias: str) -> str:
    offset = pd.tseries.frequencies.to_offset(alias)
    return offset.freqstr


def season_length(freq: str) -> int:
    """Seasonal period used by seasonal baselines for a pandas frequency alias."""
    offset = pd.tseries.frequencies.to_offset(freq)
    if isinstance(offset, pd.offsets.Tick) and pd.Timedelta(offset) < _DAY:
        return max(int(_DAY / pd.Timedelta(offset)), 1)
    base = offset.name.split("-")[0]
    for prefix in sorted(_SEASON_LENGTH, key=len, reverse=True):
        if base.startswith(prefix):
            return _SEASON_LENGTH[prefix]
    return 1


# --- Set-based inference and grid checks over many series at once ----------------------------------
#
# The functions above ask pandas about one series at a time, which is fine for a panel of a few
# series but not for 10,000 of them. The functions below answer the same questions for every
# series in one pass of polars expressions, group_bys and joins: timestamps become integer ticks,
# each series becomes a dense integer id, and every per-series answer is an aggregate of rows.

MIN_TIMESTAMPS = 3
# A step that is a whole multiple of the modal step is a gap, not an irregularity; below this share
# of such steps the series has no spacing a model could rely on.
REGULAR_SHARE = 0.8

_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# 1970-01-01, day 0 of the epoch, was a Thursday: weekday(day) = (day + 3) mod 7 with Monday = 0.
_EPOCH_WEEKDAY = 3
_TICKS_PER_SECOND = {"ns": 1_000_000_000, "us": 1_000_000, "ms": 1_000}
# Spacing whose modal step falls in these day ranges is judged against the calendar (whole months
# with a day-of-month anchor) rather than as a fixed duration: months, quarters, years.
_CALENDAR_UNITS = ((28, 31, 1), (89, 92, 3), (365, 366, 12))
_CALENDAR_NAMES = {1: "month", 3: "quarter", 12: "year"}

# Working columns, prefixed so they cannot collide with the caller's.
_T = "__ticks"
_SID = "__series"
_ROW = "__row"
_STEP = "__step"
_WEEKDAY = "__weekday"


def _wall_clock_ticks(schema: pl.Schema) -> tuple[pl.Expr, int]:
    """`ds` as Int64 ticks of its own time unit, and the ticks in a second.

    Staying in the column's unit keeps nanosecond data exact. Time-zone-aware stamps are read as
    local wall-clock time, because that is the clock on which daily and monthly data are regular
    (local midnight drifts by an hour in UTC twice a year).
    """
    dtype = schema.get(DS)
    if dtype == pl.Date:
        return pl.col(DS).cast(pl.Datetime("ms")).cast(pl.Int64), _TICKS_PER_SECOND["ms"]
    if not isinstance(dtype, pl.Datetime):
        raise TypeError(f"column {DS!r} must be a polars Datetime (or Date), got {dtype}")
    stamps = pl.col(DS)
    if dtype.time_zone is not None:
        stamps = stamps.dt.replace_time_zone(None)
    return stamps.cast(pl.Int64), _TICKS_PER_SECOND[dtype.time_unit]


def _tick_units(ticks_per_second: int) -> list[tuple[str, str, int]]:
    """(pandas alias, short label, ticks) per unit, largest first, as fine as the time unit allows.

    Largest-first mirrors how pandas names a fixed step: 36 hours is `36h`, 24 hours is `D`.
    """
    per_second = (("s", 1), ("ms", 1_000), ("us", 1_000_000), ("ns", 1_000_000_000))
    units = [("D", "d", 86_400 * ticks_per_second), ("h", "h", 3_600 * ticks_per_second)]
    units.append(("min", "min", 60 * ticks_per_second))
    units += [
        (name, name, ticks_per_second // fraction)
        for name, fraction in per_second
        if ticks_per_second % fraction == 0
    ]
    return units


def _count_prefix(count: pl.Expr) -> pl.Expr:
    """Pandas writes a multiple of one unit as `2h` but the unit itself as `h`, not `1h`."""
    return pl.when(count == 1).then(pl.lit("")).otherwise(count.cast(pl.String))


def _fixed_alias(step: pl.Expr, weekday: pl.Expr, business: pl.Expr, ticks_per_second: int) -> pl.Expr:
    """Pandas alias of a fixed step, as `pd.infer_freq` spells it: weeks carry their weekday."""
    day = 86_400 * ticks_per_second
    weekday_name = weekday.replace_strict(dict(enumerate(_WEEKDAYS)), default=None, return_dtype=pl.String)
    alias = pl.when(step % (7 * day) == 0).then(
        pl.concat_str(_count_prefix(step // (7 * day)), pl.lit("W-"), weekday_name)
    )
    alias = alias.when(step == day).then(pl.when(business).then(pl.lit("B")).otherwise(pl.lit("D")))
    for name, _, ticks in _tick_units(ticks_per_second):
        alias = alias.when(step % ticks == 0).then(pl.concat_str(_count_prefix(step // ticks), pl.lit(name)))
    return alias.otherwise(None)


def _step_label(step: pl.Expr, ticks_per_second: int) -> pl.Expr:
    """A step for people reading a reason: always with its count (`1h`, `31d`), unlike an alias."""
    (_, first_short, first_ticks), *finer = _tick_units(ticks_per_second)

    def counted(short: str, ticks: int) -> pl.Expr:
        return pl.concat_str((step // ticks).cast(pl.String), pl.lit(short))

    label = pl.when(step % first_ticks == 0).then(counted(first_short, first_ticks))
    for _, short, ticks in finer:
        label = label.when(step % ticks == 0).then(counted(short, ticks))
    return label.otherwise(None)


def _calendar_alias(unit: pl.Expr, at_end: pl.Expr, phase: pl.Expr) -> pl.Expr:
    """`MS`/`ME`, `QS-<m>`/`QE-<m>`, `YS-<m>`/`YE-<m>` from months per step, anchor and phase.

    `phase` is the month index modulo the unit. Pandas names a quarter cycle by its month in
    OCT..DEC (`QS-JAN` data comes back as `QS-OCT`), so the quarterly anchor is 10 + phase.
    """
    month_name = pl.when(unit == 3).then(phase + 9).otherwise(phase)
    month_name = month_name.replace_strict(dict(enumerate(_MONTHS)), default=None, return_dtype=pl.String)
    kind = pl.when(at_end).then(pl.lit("E")).otherwise(pl.lit("S"))
    return (
        pl.when(unit == 1)
        .then(pl.concat_str(pl.lit("M"), kind))
        .when(unit == 3)
        .then(pl.concat_str(pl.lit("Q"), kind, pl.lit("-"), month_name))
        .when(unit == 12)
        .then(pl.concat_str(pl.lit("Y"), kind, pl.lit("-"), month_name))
        .otherwise(None)
    )


def _month_features(ticks: pl.Expr, time_unit: str, day: int) -> dict[str, pl.Expr]:
    """Month index, day of month, its length and time of day: what calendar anchors are made of."""
    stamp = ticks.cast(pl.Datetime(time_unit))
    return {
        "__month": stamp.dt.year().cast(pl.Int64) * 12 + stamp.dt.month().cast(pl.Int64) - 1,
        "__dom": stamp.dt.day().cast(pl.Int64),
        "__dim": stamp.dt.days_in_month().cast(pl.Int64),
        "__tod": ticks % day,
    }


def _time_unit(ticks_per_second: int) -> str:
    return next(unit for unit, ticks in _TICKS_PER_SECOND.items() if ticks == ticks_per_second)


def _indexed_rows(observations: pl.DataFrame) -> tuple[pl.DataFrame, pl.LazyFrame, int]:
    """Dense integer ids for the series, and the rows as (`__row`, `__series`, `__ticks`).

    Sorting or hashing 5M strings costs seconds; 5M small integers, a fraction of one. The string
    ids are therefore looked up once, in a table of one row per series, and everything after works
    on integers. The ids are numbered in sorted order so per-series results come out sorted.
    """
    ticks, ticks_per_second = _wall_clock_ticks(observations.schema)
    series_id = pl.col(UNIQUE_ID).cast(pl.String)
    ids = observations.lazy().select(series_id.unique().sort()).with_row_index(_SID).collect()
    rows = (
        observations.lazy()
        .select(series_id, ticks.alias(_T))
        .with_row_index(_ROW)
        .join(ids.lazy(), on=UNIQUE_ID, how="left", nulls_equal=True, maintain_order="left")
        .select(_ROW, _SID, _T)
    )
    return ids, rows, ticks_per_second


def _time_ordered(rows: pl.LazyFrame, *, keep_rows: bool) -> pl.LazyFrame:
    """Rows regrouped series by series, each series in time order (ties in row order).

    One sort per series inside a group_by is several times cheaper than one global sort on
    (series, time), which polars does through a row encoding of both keys.
    """
    columns = [pl.col(_T).sort()]
    if keep_rows:
        # Ties broken by row number explicitly: rows reach the group in no guaranteed order.
        columns.append(pl.col(_ROW).sort_by([_T, _ROW]))
    return rows.drop_nulls(_T).group_by(_SID).agg(columns).explode([_T, _ROW] if keep_rows else [_T])


def _steps(day: int) -> dict[str, pl.Expr]:
    """Step to the previous distinct timestamp of the series (null on its first), and weekday.

    Meant for time-ordered rows: a row whose previous row is of another series starts a series.
    """
    same_series = pl.col(_SID) == pl.col(_SID).shift(1)
    return {
        _STEP: pl.when(same_series).then(pl.col(_T) - pl.col(_T).shift(1)),
        _WEEKDAY: (pl.col(_T) // day + _EPOCH_WEEKDAY) % 7,
    }


def _distinct_timestamps(rows: pl.LazyFrame, ticks_per_second: int) -> pl.DataFrame:
    """Distinct (series, tick) rows in time order per series, with `__step` and `__weekday`."""
    repeated = (pl.col(_SID) == pl.col(_SID).shift(1)) & (pl.col(_T) == pl.col(_T).shift(1))
    return (
        _time_ordered(rows, keep_rows=False)
        .filter(~repeated.fill_null(False))
        .with_columns(**_steps(86_400 * ticks_per_second))
        .collect()
    )


def _fixed_spacing(distinct: pl.DataFrame) -> pl.DataFrame:
    """Per series: the modal step (ties to the shortest) and the share of steps it divides.

    Works on the (series, step) histogram, which is tiny next to the rows: a regular series has
    one or a handful of distinct steps however long it is.
    """
    histogram = distinct.lazy().drop_nulls(_STEP).group_by(_SID, _STEP).agg(pl.len().alias("__count"))
    modal = (
        histogram.sort([_SID, "__count", _STEP], descending=[False, True, False])
        .unique(_SID, keep="first")
        .select(_SID, pl.col(_STEP).alias("modal_step"))
    )
    return (
        histogram.join(modal, on=_SID)
        .group_by(_SID)
        .agg(
            pl.col("modal_step").first(),
            (
                pl.col("__count").filter(pl.col(_STEP) % pl.col("modal_step") == 0).sum()
                / pl.col("__count").sum()
            ).alias("fixed_share"),
        )
        .collect()
    )


def _calendar_spacing(distinct: pl.DataFrame, spacing: pl.DataFrame, ticks_per_second: int) -> pl.DataFrame:
    """Per month-like series: how many steps land on month starts / ends a whole unit apart.

    A month is 28 to 31 days, so no fixed step describes monthly data; a step is monthly when both
    ends share the anchor (first day at midnight, or last day at midnight) and lie a whole number of
    months apart. The phase (month index modulo the unit) names the quarter or year cycle.
    """
    day = 86_400 * ticks_per_second
    unit = pl.lit(None, dtype=pl.Int64)
    for low, high, months in reversed(_CALENDAR_UNITS):
        in_range = pl.col("modal_step").is_between(low * day, high * day)
        unit = pl.when(in_range).then(pl.lit(months, dtype=pl.Int64)).otherwise(unit)
    candidates = spacing.select(_SID, unit.alias("unit")).drop_nulls("unit")
    rows = (
        distinct.lazy()
        .filter(pl.col(_SID).is_in(candidates.get_column(_SID).implode()))
        .join(candidates.lazy(), on=_SID, how="left", maintain_order="left")
        .with_columns(**_month_features(pl.col(_T), _time_unit(ticks_per_second), day))
        .with_columns(
            ((pl.col("__dom") == 1) & (pl.col("__tod") == 0)).alias("__start"),
            ((pl.col("__dom") == pl.col("__dim")) & (pl.col("__tod") == 0)).alias("__end"),
            (pl.col("__month") % pl.col("unit")).alias("__phase"),
        )
    )
    previous = {name: pl.col(name).shift(1) for name in ("__month", "__dom", "__tod", "__start", "__end")}
    whole_units = ((pl.col("__month") - previous["__month"]) % pl.col("unit") == 0) & (
        pl.col("__month") != previous["__month"]
    )
    steps = pl.col(_STEP).is_not_null()
    return (
        rows.with_columns(
            (pl.col("__start") & previous["__start"] & whole_units).alias("__by_start"),
            (pl.col("__end") & previous["__end"] & whole_units).alias("__by_end"),
            (
                (pl.col("__dom") == previous["__dom"]) & (pl.col("__tod") == previous["__tod"]) & whole_units
            ).alias("__by_day"),
        )
        .group_by(_SID)
        .agg(
            pl.col("unit").first(),
            pl.col("__by_start").filter(steps).mean().alias("start_share"),
            pl.col("__by_end").filter(steps).mean().alias("end_share"),
            pl.col("__by_day").filter(steps).mean().alias("day_share"),
            pl.col("__phase").filter(pl.col("__start")).mode().min().alias("start_phase"),
            pl.col("__phase").filter(pl.col("__end")).mode().min().alias("end_phase"),
            pl.col("__dom").mode().min().alias("anchor_day"),
            pl.col("__tod").mode().min().alias("anchor_time"),
        )
        .collect()
    )


def _weekday_traits(distinct: pl.DataFrame, spacing: pl.DataFrame, ticks_per_second: int) -> pl.DataFrame:
    """Per daily or weekly series: the modal weekday, and whether it skips weekends (`B`).

    Pandas calls daily data `B` when no stamp falls on a weekend and at least one weekend is
    skipped; a Monday-to-Wednesday run stays `D`, as `pd.infer_freq` has it.
    """
    day = 86_400 * ticks_per_second
    daily_or_weekly = spacing.filter(pl.col("modal_step") % day == 0).get_column(_SID)
    rows = distinct.lazy().filter(pl.col(_SID).is_in(daily_or_weekly.implode()))
    skips_weekend = pl.col(_STEP).is_not_null() & (
        (pl.col(_WEEKDAY) < pl.col(_WEEKDAY).shift(1)) | (pl.col(_STEP) >= 7 * day)
    )
    traits = rows.group_by(_SID).agg(
        ((pl.col(_WEEKDAY) >= 5).sum() == 0).alias("__weekdays_only"),
        skips_weekend.any().alias("__skips_weekend"),
    )
    modal_weekday = (
        rows.group_by(_SID, _WEEKDAY)
        .agg(pl.len().alias("__count"), pl.col(_T).min().alias("__first"))
        .sort([_SID, "__count", "__first"], descending=[False, True, False])
        .unique(_SID, keep="first")
        .select(_SID, pl.col(_WEEKDAY).alias("weekday"))
    )
    return (
        traits.join(modal_weekday, on=_SID)
        .select(_SID, "weekday", (pl.col("__weekdays_only") & pl.col("__skips_weekend")).alias("business"))
        .collect()
    )


def _percent(share: pl.Expr) -> pl.Expr:
    """Floored, so a share just under the threshold never prints as the threshold itself."""
    return (share * 100).floor().cast(pl.Int64).cast(pl.String)


def infer_frequencies(observations: pl.DataFrame) -> pl.DataFrame:
    """Frequency alias of every series in a long frame, in one set-based pass.

    `observations` needs `unique_id` and `ds` (any Datetime unit, any order, duplicates allowed).
    One row per `unique_id` comes back with `freq` (a pandas alias, the same one
    `infer_series_frequency` gives a regular series) or, when no alias fits, `freq_reason` saying
    why, and `n_timestamps`, the number of distinct timestamps. Gaps are tolerated: a step that is
    a whole multiple of the modal step counts as regular, and a series is irregular only when
    fewer than `REGULAR_SHARE` of its steps are. Month, quarter and year steps are judged on the
    calendar (anchor day and whole months), not as a number of days.
    """
    ids, rows, ticks_per_second = _indexed_rows(observations)
    distinct = _distinct_timestamps(rows, ticks_per_second)
    counts = distinct.lazy().group_by(_SID).agg(pl.len().cast(pl.Int64).alias("n_timestamps"))
    spacing = _fixed_spacing(distinct)
    calendar = _calendar_spacing(distinct, spacing, ticks_per_second)
    weekdays = _weekday_traits(distinct, spacing, ticks_per_second)
    series = (
        counts.join(spacing.lazy(), on=_SID, how="left")
        .join(calendar.lazy(), on=_SID, how="left")
        .join(weekdays.lazy(), on=_SID, how="left")
    )

    n = pl.col("n_timestamps")
    at_end = pl.col("end_share") > pl.col("start_share")
    calendar_share = pl.max_horizontal("start_share", "end_share")
    calendar_fits = calendar_share >= REGULAR_SHARE
    fixed_fits = pl.col("fixed_share") >= REGULAR_SHARE
    freq = (
        pl.when(n < MIN_TIMESTAMPS)
        .then(None)
        .when(calendar_fits)
        .then(
            _calendar_alias(
                pl.col("unit"),
                at_end,
                pl.when(at_end).then(pl.col("end_phase")).otherwise(pl.col("start_phase")),
            )
        )
        .when(fixed_fits)
        .then(
            _fixed_alias(
                pl.col("modal_step"), pl.col("weekday"), pl.col("business").fill_null(False), ticks_per_second
            )
        )
        .otherwise(None)
    )
    unit_name = pl.col("unit").replace_strict(_CALENDAR_NAMES, default=None, return_dtype=pl.String)
    calendar_is_best = pl.col("unit").is_not_null() & (calendar_share >= pl.col("fixed_share"))
    best_label = (
        pl.when(calendar_is_best)
        .then(pl.concat_str(pl.lit("1 "), unit_name))
        .otherwise(_step_label(pl.col("modal_step"), ticks_per_second))
    )
    best_share = pl.when(calendar_is_best).then(calendar_share).otherwise(pl.col("fixed_share"))
    reason = (
        pl.when(n < MIN_TIMESTAMPS)
        .then(
            pl.format(
                "too short: {} distinct {}, need at least {}",
                n,
                pl.when(n == 1).then(pl.lit("timestamp")).otherwise(pl.lit("timestamps")),
                pl.lit(MIN_TIMESTAMPS),
            )
        )
        .when(calendar_fits | fixed_fits)
        .then(None)
        .when(pl.col("day_share") >= REGULAR_SHARE)
        .then(
            pl.format(
                "no pandas alias: {}ly steps fall on day {} of the month at {}, "
                "but month aliases need midnight on the first or last day",
                unit_name,
                pl.col("anchor_day"),
                pl.col("anchor_time").cast(pl.Datetime(_time_unit(ticks_per_second))).dt.strftime("%H:%M"),
            )
        )
        .otherwise(
            pl.format(
                "irregular spacing: the most common step {} covers only {}% of steps",
                best_label,
                _percent(best_share),
            )
        )
    )
    inferred = series.select(_SID, freq.alias("freq"), reason.alias("freq_reason"), "n_timestamps")
    return (
        ids.lazy()
        .join(inferred, on=_SID, how="left")
        .select(UNIQUE_ID, "freq", "freq_reason", "n_timestamps")
        .with_columns(
            pl.col("n_timestamps").fill_null(0),
            pl.when(pl.col("n_timestamps").is_null())
            .then(pl.lit(f"too short: 0 distinct timestamps, need at least {MIN_TIMESTAMPS}"))
            .otherwise(pl.col("freq_reason"))
            .alias("freq_reason"),
        )
        .sort(UNIQUE_ID)
        .collect()
    )


def _grid_of(alias: str, ticks_per_second: int) -> dict[str, object] | None:
    """How rows of one alias are checked, or None for aliases without a defined grid here.

    Called once per distinct alias, not per series. Multiples of calendar offsets (`2MS`) and of
    business days are left unknown: their phase is not fixed by the alias alone.
    """
    try:
        offset = pd.tseries.frequencies.to_offset(alias)
    except ValueError:
        return None
    day = 86_400 * ticks_per_second
    n = offset.n
    if n < 1 or offset.normalize:
        return None
    grid: dict[str, object] = {"freq": alias}
    kind = type(offset)
    if kind is pd.offsets.Week:
        grid |= {"kind": "tick", "step": 7 * n * day, "weekday": offset.weekday}
    elif isinstance(offset, pd.offsets.Tick):
        ticks, rest = divmod(pd.Timedelta(offset).value * ticks_per_second, 1_000_000_000)
        if rest or ticks < 1:
            return None
        grid |= {"kind": "tick", "step": ticks}
    elif kind is pd.offsets.BusinessDay and n == 1 and not offset.offset:
        grid |= {"kind": "business", "step": day}
    elif n == 1 and kind in (pd.offsets.MonthBegin, pd.offsets.MonthEnd):
        grid |= {"kind": "calendar", "unit": 1, "at_end": kind is pd.offsets.MonthEnd, "phase": 0}
    elif n == 1 and kind in (pd.offsets.QuarterBegin, pd.offsets.QuarterEnd):
        phase = (offset.startingMonth - 1) % 3
        grid |= {"kind": "calendar", "unit": 3, "at_end": kind is pd.offsets.QuarterEnd, "phase": phase}
    elif n == 1 and kind in (pd.offsets.YearBegin, pd.offsets.YearEnd):
        phase = offset.month - 1
        grid |= {"kind": "calendar", "unit": 12, "at_end": kind is pd.offsets.YearEnd, "phase": phase}
    else:
        return None
    return grid


_GRID_SCHEMA = pl.Schema(
    {
        "freq": pl.String,
        "kind": pl.String,
        "step": pl.Int64,
        "weekday": pl.Int64,
        "unit": pl.Int64,
        "at_end": pl.Boolean,
        "phase": pl.Int64,
    }
)


def _series_grids(frequencies: pl.DataFrame, ticks_per_second: int) -> pl.DataFrame:
    """One row per series with a known grid: the alias parsed into columns expressions can use."""
    if frequencies.get_column(UNIQUE_ID).is_duplicated().any():
        raise ValueError("frequencies must have one row per unique_id")
    aliases = frequencies.get_column("freq").cast(pl.String).drop_nulls().unique().to_list()
    grids = [grid for alias in aliases if (grid := _grid_of(alias, ticks_per_second)) is not None]
    table = pl.DataFrame(grids, schema=_GRID_SCHEMA)
    series = frequencies.select(pl.col(UNIQUE_ID).cast(pl.String), pl.col("freq").cast(pl.String))
    return series.join(table, on="freq", how="inner")


def grid_flags(observations: pl.DataFrame, frequencies: pl.DataFrame) -> pl.DataFrame:
    """`observations` with `on_grid` and `steps_missing_before` added, rows and order unchanged.

    The grid of a series is the set of timestamps its alias allows. Fixed steps (`h`, `30min`,
    `D`, `W-WED`) are anchored on the series itself: on the phase most of its rows share (modulo
    the step, among rows on the alias's weekday for weeks), ties going to the earliest row, which
    is the series' first timestamp whenever that one is on the grid. A lone early outlier thus
    cannot push a whole series off its grid. `B` is a whole number of days from that phase on a
    weekday; month-like aliases need the anchor day at midnight (1st for `MS`/`QS`/`YS`, last day
    for `ME`/`QE`/`YE`) in a month of the alias's cycle.

    `steps_missing_before` counts grid points strictly between a timestamp and the previous
    distinct timestamp of its series, so a consecutive on-grid row counts 0 and an off-grid row
    counts the grid points it skipped. It is null on a series' first timestamp; a timestamp seen
    again counts 0 after its first occurrence in row order, so sums over rows count each hole
    once. Both columns are null where the series' freq is null or names no grid handled here.
    """
    ids, rows, ticks_per_second = _indexed_rows(observations)
    day = 86_400 * ticks_per_second
    grids = (
        _series_grids(frequencies, ticks_per_second)
        .join(ids, on=UNIQUE_ID, nulls_equal=True)
        .drop(UNIQUE_ID, "freq")
    )
    t = pl.col(_T)
    weekday = (t // day + _EPOCH_WEEKDAY) % 7
    known = rows.drop_nulls(_T).join(grids.lazy(), on=_SID, how="inner")

    # Phase of fixed-step and business-day series: the modal residue of the stamps that may lie
    # on the grid at all (the alias's weekday for weeks, Monday to Friday for `B`).
    may_be_on_grid = (pl.col("kind") == "tick") & (
        pl.col("weekday").is_null() | (weekday == pl.col("weekday"))
    ) | ((pl.col("kind") == "business") & (weekday < 5))
    phases = (
        known.filter(may_be_on_grid)
        .group_by(_SID, (t % pl.col("step")).alias("__residue"))
        .agg(pl.len().alias("__count"), t.min().alias("__first"))
        .sort([_SID, "__count", "__first"], descending=[False, True, False])
        .unique(_SID, keep="first")
        .select(_SID, "__residue")
    )
    # A week series without a single stamp on its weekday still has a grid: that weekday's midnight.
    default_residue = (
        pl.when(pl.col("weekday").is_not_null())
        .then((pl.col("weekday") - _EPOCH_WEEKDAY) % 7 * day)
        .otherwise(0)
    )
    series_grids = (
        grids.lazy()
        .join(phases, on=_SID, how="left")
        .with_columns(pl.col("__residue").fill_null(default_residue))
    )

    # For every row: whether it is on the grid, and its level, the number of grid points at or
    # before it counted from an arbitrary origin. Grid points strictly between two rows are then
    # level(later) - on_grid(later) - level(earlier).
    since_phase = t - pl.col("__residue")
    business_day = since_phase // day + _EPOCH_WEEKDAY  # days since a Monday
    month = _month_features(t, _time_unit(ticks_per_second), day)
    at_anchor = pl.when(pl.col("at_end")).then(month["__dom"] == month["__dim"]).otherwise(
        month["__dom"] == 1
    ) & (month["__tod"] == 0)
    # The last anchor at or before a stamp is in its own month, except for month ends before the
    # last day, whose latest month end was the previous month's.
    anchor_month = month["__month"] - (pl.col("at_end") & (month["__dom"] != month["__dim"])).cast(pl.Int64)
    rules = {
        "tick": (since_phase % pl.col("step") == 0, since_phase // pl.col("step")),
        "business": (
            (since_phase % day == 0) & (weekday < 5),
            5 * (business_day // 7) + pl.min_horizontal(business_day % 7, pl.lit(4)),
        ),
        "calendar": (
            at_anchor & ((month["__month"] - pl.col("phase")) % pl.col("unit") == 0),
            (anchor_month - pl.col("phase")) // pl.col("unit"),
        ),
    }
    # Only the kinds present get a branch: when/then evaluates every branch on every row, and the
    # calendar one (year, month, day of 5M stamps) is the costly one.
    present = {kind: rules[kind] for kind in grids.get_column("kind").unique().sort().to_list()}
    on_grid = _by_kind(present, 0, pl.Boolean)
    level = _by_kind(present, 1, pl.Int64)

    same_series = pl.col(_SID) == pl.col(_SID).shift(1)
    missing = (
        pl.when(same_series & (t == t.shift(1)))
        .then(0)
        .when(same_series)
        .then(pl.col("__level") - pl.col("on_grid").cast(pl.Int64) - pl.col("__level").shift(1))
    )
    flags = (
        _time_ordered(known.select(_ROW, _SID, _T), keep_rows=True)
        .join(series_grids, on=_SID, how="left", maintain_order="left")
        .with_columns(on_grid.alias("on_grid"), level.alias("__level"))
        .select(_ROW, "on_grid", missing.cast(pl.Int64).alias("steps_missing_before"))
        .collect()
    )
    # Back to the caller's row order by scattering, which is linear, unlike sorting on `__row`.
    return observations.with_columns(
        _scattered(flags, "on_grid", pl.Boolean, observations.height),
        _scattered(flags, "steps_missing_before", pl.Int64, observations.height),
    )


def _by_kind(rules: dict[str, tuple[pl.Expr, pl.Expr]], which: int, dtype: pl.DataType) -> pl.Expr:
    """One when/then chain over the kinds given; all-null when there are none."""
    chain: pl.Expr | None = None
    for kind, exprs in rules.items():
        is_kind = pl.col("kind") == kind
        chain = (pl.when(is_kind) if chain is None else chain.when(is_kind)).then(exprs[which])
    if chain is None:
        return pl.lit(None, dtype=dtype)
    return chain.otherwise(None).cast(dtype)


def _scattered(flags: pl.DataFrame, name: str, dtype: pl.DataType, height: int) -> pl.Series:
    """A column of `height` nulls with `flags[name]` written at the rows `flags` covers."""
    column = pl.Series(name, dtype=dtype).extend_constant(None, height)
    if flags.height:
        column = column.scatter(flags.get_column(_ROW), flags.get_column(name))
    return column
