"""The bounded history a study or feature run reads: per sampling frequency, a time range.

Features and studies of one window never need all history: lags and rolling windows need a
fixed number of points before the window, and a study looks back a fixed number of points.
Series sharing a frequency alias share the time range, so one bulk read per alias (a handful)
serves any number of series.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import polars as pl
from sqlalchemy import Connection

from forecasting_pipeline.modeling.frequency import season_length
from forecasting_pipeline.modeling.frequency_groups import frequency_group
from forecasting_pipeline.partitions import window_bounds
from forecasting_pipeline.schemas import UNIQUE_ID
from forecasting_pipeline.storage.catalog import stored_frequencies
from forecasting_pipeline.storage.observations import read_history


@dataclass(frozen=True)
class HistorySlice:
    """Series of one frequency alias in one window, and the time range to read for them."""

    window: str
    group: str
    freq: str
    season: int
    series_ids: list[str]
    since: datetime | None  # None: from the first observation
    until: datetime  # exclusive: the window's end
    window_start: datetime | None  # first timestamp the window owns (None: the history slice)

    def read(self, conn: Connection) -> pl.DataFrame:
        return read_history(conn, self.series_ids, self.since, self.until)


@dataclass(frozen=True)
class SlicedSeries:
    slices: list[HistorySlice]
    unplaced: list[str]  # series without a known frequency (group), left out with a warning


def history_slices(
    conn: Connection,
    window: str,
    series_ids: Sequence[str],
    points_before: Callable[[int], int],
    *,
    from_window_start: bool,
) -> SlicedSeries:
    """One slice per frequency alias among `series_ids`.

    `points_before(season)` points are read before the window's start (`from_window_start`:
    features, which own the window's rows) or before its end (studies, which look back from the
    newest data).
    """
    bounds = window_bounds(window)
    frequencies = stored_frequencies(conn, series_ids)
    by_freq = (
        frequencies.filter(pl.col("freq").is_not_null()).group_by("freq", maintain_order=True).agg(UNIQUE_ID)
    )
    slices: list[HistorySlice] = []
    unplaced = sorted(set(series_ids) - set(frequencies.filter(pl.col("freq").is_not_null())[UNIQUE_ID]))
    for freq, ids in sorted(zip(by_freq["freq"], by_freq[UNIQUE_ID], strict=True)):
        group = frequency_group(freq)
        if group is None:
            unplaced.extend(ids)
            continue
        anchor = bounds.start if from_window_start else bounds.end
        season = season_length(freq)
        since = None if anchor is None else points_before_anchor(anchor, freq, points_before(season))
        slices.append(HistorySlice(window, group, freq, season, sorted(ids), since, bounds.end, bounds.start))
    return SlicedSeries(slices, sorted(unplaced))


def points_before_anchor(anchor: datetime, freq: str, points: int) -> datetime:
    """The timestamp `points` steps of `freq` before `anchor` (calendar-aware for months)."""
    offset = pd.tseries.frequencies.to_offset(freq)
    return (pd.Timestamp(anchor) - points * offset).to_pydatetime()
