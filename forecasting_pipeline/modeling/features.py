"""Feature table of a batch of series: calendar, target lags, rolling statistics and drivers.

Tabular models see each (series, timestamp) row on its own, so whatever they may know about the
past has to be spelled out as columns. The one rule every feature obeys is that the row at `t`
is built only from values at or before `t` — the target strictly before `t` — so a model trained
on these rows learns nothing it could not know when forecasting. Every temporal feature is
computed within one series (`.over(unique_id)`): a panel is many unrelated histories stacked on
top of each other, and a lag that crossed a series boundary would be noise posing as signal.

Lags count rows, not time: rows sit on each series' regular grid, and on the rare gap a row-based
lag degrades gracefully (it reaches a little further back) where a time-based one would turn null.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import polars as pl

from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y

# Only calendar fields that change between consecutive steps of a group carry information: the hour
# of monthly data is constant, and the month of hourly data is what separates seasons.
CALENDAR_BY_GROUP: dict[str, tuple[str, ...]] = {
    "subhourly": ("minute", "hour", "day_of_week", "month"),
    "hourly": ("hour", "day_of_week", "month"),
    "daily": ("day_of_week", "day_of_month", "month", "week_of_year"),
    "weekly": ("week_of_year", "month"),
    "monthly": ("month", "quarter"),
    "quarterly": ("quarter",),
    "yearly": (),
}
# A group added to the catalog before it is added here still gets the one field that varies at
# every frequency up to monthly, rather than failing the batch.
DEFAULT_CALENDAR: tuple[str, ...] = ("month",)

_CALENDAR_FIELDS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "minute": lambda ds: ds.dt.minute(),
    "hour": lambda ds: ds.dt.hour(),
    "day_of_week": lambda ds: ds.dt.weekday(),  # 1 = Monday … 7 = Sunday
    "day_of_month": lambda ds: ds.dt.day(),
    "week_of_year": lambda ds: ds.dt.week(),  # ISO week, so week 1 never holds a stray few days
    "month": lambda ds: ds.dt.month(),
    "quarter": lambda ds: ds.dt.quarter(),
}
CALENDAR_FEATURES: tuple[str, ...] = tuple(_CALENDAR_FIELDS)

ROLLING_STATS: tuple[str, ...] = ("mean", "std", "min", "max")

CALENDAR_GROUP = "calendar"
TARGET_LAGS_GROUP = "target_lags"
TARGET_ROLLING_GROUP = "target_rolling"
DRIVER_GROUP_PREFIX = "driver:"

_TARGET_LAG = re.compile(rf"^{Y}_lag_\d+$")
_TARGET_ROLL = re.compile(rf"^{Y}_roll_({'|'.join(ROLLING_STATS)})_\d+$")
_KEY_COLUMNS: tuple[str, ...] = (UNIQUE_ID, DS)
FEATURES_JSON = "features"


@dataclass(frozen=True)
class FeatureSpec:
    """Which history a row sees; one spec per frequency group keeps a group's models comparable."""

    lags: tuple[int, ...] = (1, 2, 3)
    seasonal_lag: bool = True
    rolling_windows: tuple[int, ...] = (3, 7)
    driver_lags: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        # A lag of 0 would be the target itself; a window of 1 is just lag 1 again, with no std.
        if any(k < 1 for k in self.lags):
            raise ValueError(f"target lags must be >= 1, got {self.lags}")
        if any(w < 2 for w in self.rolling_windows):
            raise ValueError(f"rolling windows must be >= 2, got {self.rolling_windows}")
        # The driver at t is always a feature; lag 0 here would duplicate that column's name.
        if any(k < 1 for k in self.driver_lags):
            raise ValueError(f"driver lags must be >= 1, got {self.driver_lags}")

    def target_lags(self, season: int) -> tuple[int, ...]:
        """The configured lags plus the season's, since a season-ago value is the seasonal-naive forecast."""
        seasonal = (season,) if self.seasonal_lag and season > 1 else ()
        return tuple(sorted({*self.lags, *seasonal}))

    def lookback_steps(self, season: int) -> int:
        """Rows a caller must load before its first owned row so that row's features are all complete.

        A window of `w` ends at t-1 and so reaches back `w` rows, the same as lag `w`.
        """
        reaches = (*self.target_lags(season), *self.rolling_windows, *self.driver_lags)
        return max(reaches, default=0)


def calendar_features(group: str) -> tuple[str, ...]:
    return CALENDAR_BY_GROUP.get(group, DEFAULT_CALENDAR)


def target_lag_name(k: int) -> str:
    return f"{Y}_lag_{k}"


def rolling_name(stat: str, window: int) -> str:
    return f"{Y}_roll_{stat}_{window}"


def driver_lag_name(driver: str, k: int) -> str:
    return f"{driver}_lag_{k}"


def build_features(
    history: pl.DataFrame,
    *,
    spec: FeatureSpec,
    season: int,
    group: str,
    drivers: Sequence[str],
    since: datetime | None = None,
) -> pl.DataFrame:
    """Feature rows of every (series, timestamp) at or after `since`.

    Features are computed over the whole `history` and only then cut to `since`, so a caller that
    passes `spec.lookback_steps(season)` rows before its first owned row gets that row complete:
    the extra rows are context, never output.
    """
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    drivers = list(drivers)
    _check_history(history, drivers)
    _check_driver_names(drivers)
    ordered = history.sort(UNIQUE_ID, DS)
    features = ordered.select(
        UNIQUE_ID,
        DS,
        *_calendar_columns(group),
        *_target_lag_columns(spec.target_lags(season)),
        *_rolling_columns(spec.rolling_windows),
        *_driver_columns(drivers, spec.driver_lags),
    )
    if since is not None:
        features = features.filter(pl.col(DS) >= since)
    return features


def _check_history(history: pl.DataFrame, drivers: Sequence[str]) -> None:
    """Fail loudly on input whose features would be silently wrong rather than merely missing."""
    missing = [c for c in (UNIQUE_ID, DS, Y, *drivers) if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks columns {missing}")
    # Two rows at one timestamp would make "k rows earlier" depend on the order they happen to be in.
    duplicated = history.select(pl.struct(UNIQUE_ID, DS).is_duplicated().sum()).item()
    if duplicated:
        raise ValueError(f"history has {duplicated} rows sharing a (unique_id, ds) with another row")


def _check_driver_names(drivers: Sequence[str]) -> None:
    """Keep every feature name owned by exactly one source, so `feature_groups` can read it back."""
    if len(set(drivers)) != len(drivers):
        raise ValueError(f"drivers are listed more than once: {list(drivers)}")
    reserved = [
        d
        for d in drivers
        if d in (*_KEY_COLUMNS, Y, *CALENDAR_FEATURES) or _TARGET_LAG.match(d) or _TARGET_ROLL.match(d)
    ]
    if reserved:
        raise ValueError(f"driver names clash with generated feature names: {reserved}")
    shadowing = [d for d in drivers if any(_is_driver_lag(d, other) for other in drivers if other != d)]
    if shadowing:
        raise ValueError(f"driver names clash with another driver's lag columns: {shadowing}")


def _is_driver_lag(column: str, driver: str) -> bool:
    return re.fullmatch(rf"{re.escape(driver)}_lag_\d+", column) is not None


def _calendar_columns(group: str) -> list[pl.Expr]:
    # Floats throughout, so the table is one homogeneous matrix for any tabular learner.
    return [
        _CALENDAR_FIELDS[name](pl.col(DS)).cast(pl.Float64).alias(name) for name in calendar_features(group)
    ]


def _lagged(column: str, k: int) -> pl.Expr:
    return pl.col(column).shift(k).over(UNIQUE_ID).cast(pl.Float64)


def _target_lag_columns(lags: Sequence[int]) -> list[pl.Expr]:
    return [_lagged(Y, k).alias(target_lag_name(k)) for k in lags]


def _rolling_columns(windows: Sequence[int]) -> list[pl.Expr]:
    """Statistics of the `w` targets strictly before t; fewer than `w` of them gives null, not a guess."""
    past = pl.col(Y).cast(pl.Float64).shift(1)
    by_stat: dict[str, Callable[[int], pl.Expr]] = {
        "mean": lambda w: past.rolling_mean(w, min_samples=w),
        "std": lambda w: past.rolling_std(w, min_samples=w, ddof=1),
        "min": lambda w: past.rolling_min(w, min_samples=w),
        "max": lambda w: past.rolling_max(w, min_samples=w),
    }
    return [
        by_stat[stat](w).over(UNIQUE_ID).alias(rolling_name(stat, w))
        for w in sorted(set(windows))
        for stat in ROLLING_STATS
    ]


def _driver_columns(drivers: Sequence[str], lags: Sequence[int]) -> list[pl.Expr]:
    """Each driver as known at t, then its lags; a driver's value at t is known when forecasting t."""
    columns: list[pl.Expr] = []
    for driver in drivers:
        columns.append(pl.col(driver).cast(pl.Float64).alias(driver))
        columns.extend(_lagged(driver, k).alias(driver_lag_name(driver, k)) for k in sorted(set(lags)))
    return columns


def feature_groups(columns: Sequence[str], drivers: Sequence[str]) -> dict[str, str]:
    """Feature column -> group, so importances and ablations can speak of a driver, not of its lags.

    Groups are 'calendar', 'target_lags', 'target_rolling' and 'driver:<name>' (a driver with its
    lags). Key columns are skipped; an unknown column raises, since attributing it to the wrong
    group would mislead whoever reads the importances.
    """
    groups: dict[str, str] = {}
    for column in columns:
        if column in _KEY_COLUMNS:
            continue
        group = _group_of(column, drivers)
        if group is None:
            raise ValueError(f"column {column!r} is not a feature built by build_features")
        groups[column] = group
    return groups


def _group_of(column: str, drivers: Sequence[str]) -> str | None:
    if column in drivers:
        return DRIVER_GROUP_PREFIX + column
    owners = [d for d in drivers if _is_driver_lag(column, d)]
    if owners:
        return DRIVER_GROUP_PREFIX + owners[0]
    if column in CALENDAR_FEATURES:
        return CALENDAR_GROUP
    if _TARGET_LAG.match(column):
        return TARGET_LAGS_GROUP
    if _TARGET_ROLL.match(column):
        return TARGET_ROLLING_GROUP
    return None


def to_json_rows(features: pl.DataFrame) -> pl.DataFrame:
    """One JSON object of features per row, for a jsonb column whose feature set varies by group.

    Nulls stay null (an absent lag is information, not zero); NaN and infinities, which JSON cannot
    hold, are written as null too.
    """
    names = [c for c in features.columns if c not in _KEY_COLUMNS]
    encoded = pl.struct(names).struct.json_encode() if names else pl.lit("{}", dtype=pl.Utf8)
    return features.select(UNIQUE_ID, DS, encoded.alias(FEATURES_JSON))
