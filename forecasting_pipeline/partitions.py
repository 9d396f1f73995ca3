"""Every partitions definition, and the only code that builds or parses partition keys.

Two dimensions:

* `series` — dynamic, one key per series id; the ingestion code adds keys as ids appear.
* `date`   — time windows of the *arrival calendar* (weekly by default). A window holds the
  observations whose timestamps fall in it, whatever the series' sampling frequency. The first
  window also holds everything older ("the history slice"), so the number of windows grows
  with operating cycles, not with history length.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

import numpy as np
import pandas as pd
from dagster import (
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    TimeWindowPartitionsDefinition,
)

from forecasting_pipeline.calendar import DATE_KEY_FORMAT, DateCalendar, load_calendar
from forecasting_pipeline.schemas import SERIES_DIMENSION
from forecasting_pipeline.series_keys import partition_key, partition_keys
from forecasting_pipeline.settings import load_settings

__all__ = ["partition_key", "partition_keys"]

DATE_DIMENSION = "date"

_CRON_BY_CADENCE = {
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",  # windows start on Sundays, Dagster's weekly convention
    "monthly": "0 0 1 * *",
}


def build_date_partitions(calendar: DateCalendar) -> TimeWindowPartitionsDefinition:
    """The `date` dimension of a deployment's calendar (see `calendar.py`)."""
    return TimeWindowPartitionsDefinition(
        cron_schedule=_CRON_BY_CADENCE[calendar.cadence],
        start=calendar.start.strftime(DATE_KEY_FORMAT),
        end=calendar.end.strftime(DATE_KEY_FORMAT) if calendar.end else None,
        fmt=DATE_KEY_FORMAT,
        # An open calendar includes the window in progress, so data landing this week is placed.
        end_offset=0 if calendar.end else 1,
    )


# The calendar this process was built with; `operations` refuses to launch runs if the
# persisted calendar moved since (the CLI decides it before importing this module).
loaded_calendar = load_calendar(load_settings())
series_partitions = DynamicPartitionsDefinition(name=SERIES_DIMENSION)
date_partitions = build_date_partitions(loaded_calendar)
series_date_partitions = MultiPartitionsDefinition(
    {SERIES_DIMENSION: series_partitions, DATE_DIMENSION: date_partitions}
)

# A window-level asset reads (or is read by) the series × date cells of the same window.
SAME_WINDOW = MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATE_DIMENSION)


@dataclass(frozen=True, order=True)
class SeriesWindow:
    """One cell of the series × date grid; `series_key` is the partition key, not the series id."""

    window: str
    series_key: str

    @property
    def key(self) -> MultiPartitionKey:
        return MultiPartitionKey({DATE_DIMENSION: self.window, SERIES_DIMENSION: self.series_key})


def series_window(series_key: str, window: str) -> SeriesWindow:
    return SeriesWindow(window=window, series_key=series_key)


def parse_series_date_key(key: str | MultiPartitionKey) -> SeriesWindow:
    """Split a series × date key (object or its `date|series` string form).

    Dagster joins the dimensions sorted by name (`date`, then `series`) with `|`, which neither
    a date key nor a derived series key contains; splitting the string directly is ~100× cheaper
    than Dagster's key validation, which matters for runs over thousands of keys.
    """
    if isinstance(key, MultiPartitionKey):
        parts = key.keys_by_dimension
        return SeriesWindow(window=parts[DATE_DIMENSION], series_key=parts[SERIES_DIMENSION])
    window, _, series_key = str(key).partition("|")
    return SeriesWindow(window=window, series_key=series_key)


def series_date_range(window: str, series_keys: list[str]) -> tuple[str, str]:
    """First and last key of one window across `series_keys`, as a run's partition range.

    Ranges over a dynamic dimension follow the order in which keys were added, so callers pass
    the keys in that order (`DagsterInstance.get_dynamic_partitions`).
    """
    if not series_keys:
        raise ValueError("a series × date range needs at least one series")
    return str(series_window(series_keys[0], window).key), str(series_window(series_keys[-1], window).key)


@dataclass(frozen=True)
class WindowBounds:
    """Half-open time range [start, end) of a `date` window; `start` is None for the history slice."""

    start: datetime | None
    end: datetime


@cache
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
