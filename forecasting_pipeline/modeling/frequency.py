"""Sampling frequency of a panel, and the seasonal period that goes with it."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from forecasting_pipeline.schemas import DS, UNIQUE_ID

# Calendar offsets -> dominant seasonal period (weekly cycle for daily data, yearly for
# weekly, monthly and quarterly). Sub-daily data takes the daily cycle, computed from the step.
_SEASON_LENGTH = {"D": 7, "B": 5, "W": 52, "MS": 12, "ME": 12, "M": 12, "QS": 4, "QE": 4, "Q": 4}
_DAY = pd.Timedelta(days=1)


class FrequencyError(ValueError):
    """A series' timestamps have no regular spacing, or series in one panel disagree."""


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


def panel_frequency(panel: pd.DataFrame) -> str:
    """The one frequency shared by every series in `panel` (global models need one)."""
    frequencies = {
        series_id: infer_series_frequency(group[DS]) for series_id, group in panel.groupby(UNIQUE_ID)
    }
    distinct = sorted(set(frequencies.values()))
    if len(distinct) != 1:
        raise FrequencyError(f"series in one panel have different frequencies: {frequencies}")
    return distinct[0]


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
