"""Every partitions definition, and the only code that builds or parses partition keys.

Two dimensions:

* `series` — dynamic, one key per series id; the ingestion code adds keys as ids appear.
* `date`   — time windows of the *arrival calendar* (weekly by default). A window holds the
  observations whose timestamps fall in it, whatever the series' sampling frequency. The first
  window also holds everything older ("the history slice"), so the number of windows grows
  with operating cycles, not with history length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    TimeWindowPartitionsDefinition,
)

from forecasting_pipeline.settings import Settings, load_settings

SERIES_DIMENSION = "series"
DATE_DIMENSION = "date"
DATE_KEY_FORMAT = "%Y-%m-%d"

_CRON_BY_CADENCE = {
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",  # windows start on Sundays, Dagster's weekly convention
    "monthly": "0 0 1 * *",
}

# Characters Dagster reserves in partition keys and ranges, plus path separators.
_SERIES_ID_PATTERN = re.compile(r"[^|,\[\]*/\\\s][^|,\[\]*/\\]{0,126}(?<!\s)")


class InvalidSeriesIdError(ValueError):
    """A series id cannot be used as a partition key."""


def validate_series_id(series_id: str) -> str:
    """Return `series_id` if it can be a partition key; raise with the reason otherwise."""
    if not isinstance(series_id, str) or not _SERIES_ID_PATTERN.fullmatch(series_id):
        raise InvalidSeriesIdError(
            f"series id {series_id!r} is not usable as a partition key: 1-127 characters, "
            "no leading/trailing space, none of | , [ ] * / \\"
        )
    return series_id


def _aligned_start(cadence: str, start: date) -> date:
    """Floor `start` to a window boundary so the first key is the date the user wrote or before."""
    if cadence == "weekly":
        return start - timedelta(days=(start.weekday() + 1) % 7)
    if cadence == "monthly":
        return start.replace(day=1)
    return start


def build_date_partitions(settings: Settings) -> TimeWindowPartitionsDefinition:
    """The `date` dimension for a deployment's cadence and start window."""
    start = _aligned_start(settings.date_cadence, settings.partition_start)
    return TimeWindowPartitionsDefinition(
        cron_schedule=_CRON_BY_CADENCE[settings.date_cadence],
        start=start.strftime(DATE_KEY_FORMAT),
        end=settings.partition_end.strftime(DATE_KEY_FORMAT) if settings.partition_end else None,
        fmt=DATE_KEY_FORMAT,
        # Include the window in progress, so data landing this week can be ingested this week.
        end_offset=1,
    )


series_partitions = DynamicPartitionsDefinition(name=SERIES_DIMENSION)
date_partitions = build_date_partitions(load_settings())
series_date_partitions = MultiPartitionsDefinition(
    {SERIES_DIMENSION: series_partitions, DATE_DIMENSION: date_partitions}
)

# A window-level asset reads (or is read by) the series × date cells of the same window.
SAME_WINDOW = MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIMENSION)


@dataclass(frozen=True, order=True)
class SeriesWindow:
    """One cell of the series × date grid."""

    window: str
    series_id: str

    @property
    def key(self) -> MultiPartitionKey:
        return MultiPartitionKey({DATE_DIMENSION: self.window, SERIES_DIMENSION: self.series_id})


def series_window(series_id: str, window: str) -> SeriesWindow:
    return SeriesWindow(window=window, series_id=series_id)


def parse_series_date_key(key: str | MultiPartitionKey) -> SeriesWindow:
    """Split a series × date key (object or its `date|series` string form)."""
    if isinstance(key, MultiPartitionKey):
        parts = key.keys_by_dimension
    else:
        parts = series_date_partitions.get_partition_key_from_str(key).keys_by_dimension
    return SeriesWindow(window=parts[DATE_DIMENSION], series_id=parts[SERIES_DIMENSION])


def series_date_range(window: str, series_ids: list[str]) -> tuple[str, str]:
    """First and last key of one window across `series_ids`, as a run's partition range.

    Ranges over a dynamic dimension follow the order in which ids were added, so callers pass
    the ids in that order (`DagsterInstance.get_dynamic_partitions`).
    """
    if not series_ids:
        raise ValueError("a series × date range needs at least one series")
    return str(series_window(series_ids[0], window).key), str(series_window(series_ids[-1], window).key)


@dataclass(frozen=True)
class WindowBounds:
    """Half-open time range [start, end) of a `date` window; `start` is None for the history slice."""

    start: datetime | None
    end: datetime


def window_bounds(window: str, partitions: TimeWindowPartitionsDefinition = date_partitions) -> WindowBounds:
    time_window = partitions.time_window_for_partition_key(window)
    first = partitions.get_first_partition_key()
    start = None if window == first else time_window.start.replace(tzinfo=None)
    return WindowBounds(start=start, end=time_window.end.replace(tzinfo=None))


def last_window_end(partitions: TimeWindowPartitionsDefinition = date_partitions) -> datetime:
    """Exclusive end of the last `date` window: later timestamps fit no partition yet."""
    last = partitions.get_last_partition_key()
    return partitions.time_window_for_partition_key(last).end.replace(tzinfo=None)


def window_keys_for_timestamps(
    timestamps: pd.Series, partitions: TimeWindowPartitionsDefinition = date_partitions
) -> pd.Series:
    """The `date` key of each timestamp; older ones map to the history slice, ones past the
    last window to None (they cannot be placed yet)."""
    keys = partitions.get_partition_keys()
    starts = np.array([pd.Timestamp(k) for k in keys], dtype="datetime64[ns]")
    last_end = last_window_end(partitions)
    values = pd.to_datetime(timestamps).to_numpy(dtype="datetime64[ns]")
    index = np.clip(np.searchsorted(starts, values, side="right") - 1, 0, len(keys) - 1)
    result = pd.Series(np.asarray(keys, dtype=object)[index], index=timestamps.index, dtype=object)
    result[values >= np.datetime64(last_end)] = None
    return result


def window_key_for(
    timestamp: datetime, partitions: TimeWindowPartitionsDefinition = date_partitions
) -> str | None:
    """Scalar form of `window_keys_for_timestamps`."""
    return window_keys_for_timestamps(pd.Series([timestamp]), partitions).iloc[0]
