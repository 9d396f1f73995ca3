"""Unit tests of frequency inference and the seasonal period that goes with a frequency."""

from __future__ import annotations

import pandas as pd
import pytest

from forecasting_pipeline.modeling.frequency import (
    FrequencyError,
    infer_series_frequency,
    panel_frequency,
    season_length,
)


def _range(start: str, periods: int, freq: str) -> pd.Series:
    return pd.Series(pd.date_range(start, periods=periods, freq=freq))


@pytest.mark.parametrize(
    ("timestamps", "expected"),
    [
        (_range("2020-01-01", 72, "h"), "h"),
        (_range("2020-01-01", 30, "D"), "D"),
        (_range("2020-01-01", 24, "MS"), "MS"),
        (_range("2020-01-05", 20, "W-SUN"), "W-SUN"),  # 2020-01-05 is a Sunday
        (_range("2020-01-01", 96, "15min"), "15min"),
    ],
    ids=["hourly", "daily", "month-start", "weekly", "quarter-hourly"],
)
def test_regular_ranges(timestamps: pd.Series, expected: str):
    assert infer_series_frequency(timestamps) == expected


def test_order_and_repeats_do_not_matter():
    hours = _range("2020-01-01", 10, "h")
    shuffled = pd.concat([hours.iloc[::-1], hours.iloc[:3]], ignore_index=True)
    assert infer_series_frequency(shuffled) == "h"


def test_hourly_series_with_gaps():
    hours = _range("2020-01-01", 100, "h").drop(index=[5, 6, 20, 41])
    assert infer_series_frequency(hours) == "h"


def test_daily_series_with_a_gap():
    days = _range("2020-01-01", 30, "D").drop(index=[10])
    assert infer_series_frequency(days) == "D"


def test_weekly_series_with_a_gap_stays_weekly():
    weeks = _range("2020-01-05", 20, "W-SUN").drop(index=[7])
    assert infer_series_frequency(weeks) == "W-SUN"


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_timestamps(n: int):
    with pytest.raises(FrequencyError, match="at least 3"):
        infer_series_frequency(_range("2020-01-01", n, "h"))


def test_repeated_timestamps_count_once():
    twice = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-01", "2020-01-02", "2020-01-02"]))
    with pytest.raises(FrequencyError):
        infer_series_frequency(twice)


def _panel(**series: pd.Series) -> pd.DataFrame:
    return pd.concat(
        [pd.DataFrame({"unique_id": name, "ds": ds, "y": 1.0}) for name, ds in series.items()],
        ignore_index=True,
    )


def test_panel_of_hourly_series_with_different_lengths():
    panel = _panel(FR=_range("2020-01-01", 48, "h"), DE=_range("2020-01-02 05:00", 10, "h"))
    assert panel_frequency(panel) == "h"


def test_panel_mixing_hourly_and_daily_series():
    panel = _panel(FR=_range("2020-01-01", 48, "h"), DE=_range("2020-01-01", 10, "D"))
    with pytest.raises(FrequencyError, match="different frequencies"):
        panel_frequency(panel)


def test_panel_with_a_too_short_series():
    panel = _panel(FR=_range("2020-01-01", 48, "h"), DE=_range("2020-01-01", 2, "h"))
    with pytest.raises(FrequencyError):
        panel_frequency(panel)


@pytest.mark.parametrize(
    ("freq", "expected"),
    [
        ("h", 24),  # a day of hours
        ("15min", 96),  # 24 * 4
        ("2h", 12),  # 24 / 2
        ("30min", 48),
        ("D", 7),  # the weekly cycle
        ("B", 5),  # a business week
        ("W-SUN", 52),  # a year of weeks
        ("MS", 12),
        ("ME", 12),
        ("QS-OCT", 4),
    ],
)
def test_season_length(freq: str, expected: int):
    assert season_length(freq) == expected


def test_season_length_without_a_known_cycle_is_one():
    assert season_length("YS") == 1
