"""Unit tests of partition keys: the `date` calendar, window placement and series × date keys."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from dagster import MultiPartitionKey, TimeWindowPartitionsDefinition

from forecasting_pipeline.calendar import DateCalendar, load_calendar
from forecasting_pipeline.partitions import (
    SeriesWindow,
    build_date_partitions,
    last_window_end,
    parse_series_date_key,
    partition_key,
    series_date_range,
    series_window,
    window_bounds,
    window_key_for,
    window_keys_for_timestamps,
)
from forecasting_pipeline.settings import load_settings


def _pinned(**env: str) -> TimeWindowPartitionsDefinition:
    """Partitions of a calendar pinned by FP_PARTITION_START (no calendar file is read)."""
    return build_date_partitions(load_calendar(load_settings({"FP_HOME": "/tmp/fp-unused", **env})))


@pytest.fixture
def october() -> TimeWindowPartitionsDefinition:
    """Weekly windows starting Sundays 2016-10-02, 09, 16 and 23; the last ends on 2016-10-30."""
    return build_date_partitions(DateCalendar("weekly", date(2016, 10, 2), date(2016, 10, 30)))


# --- the `date` calendar -------------------------------------------------------------------


def test_weekly_start_on_a_wednesday_aligns_to_the_previous_sunday():
    partitions = _pinned(FP_PARTITION_START="2016-10-05", FP_PARTITION_END="2016-10-30")
    assert partitions.get_partition_keys() == [
        "2016-10-02",
        "2016-10-09",
        "2016-10-16",
        "2016-10-23",
    ]


@pytest.mark.parametrize("start", ["2016-10-02", "2016-10-08"])  # a Sunday, then a Saturday
def test_weekly_first_window_is_the_sunday_on_or_before_the_start(start: str):
    partitions = _pinned(FP_PARTITION_START=start, FP_PARTITION_END="2016-10-30")
    assert partitions.get_first_partition_key() == "2016-10-02"


def test_weekly_is_the_default_cadence():
    partitions = _pinned(FP_PARTITION_START="2016-10-02", FP_PARTITION_END="2016-10-30")
    assert partitions.get_partition_keys() == ["2016-10-02", "2016-10-09", "2016-10-16", "2016-10-23"]


def test_a_closed_calendar_ends_before_its_end(october: TimeWindowPartitionsDefinition):
    assert october.get_partition_keys() == ["2016-10-02", "2016-10-09", "2016-10-16", "2016-10-23"]


def test_daily_windows_start_on_the_given_day():
    partitions = _pinned(
        FP_DATE_CADENCE="daily", FP_PARTITION_START="2016-10-15", FP_PARTITION_END="2016-10-18"
    )
    assert partitions.get_partition_keys() == ["2016-10-15", "2016-10-16", "2016-10-17"]


def test_monthly_mid_month_start_aligns_to_the_first():
    partitions = _pinned(
        FP_DATE_CADENCE="monthly", FP_PARTITION_START="2016-10-15", FP_PARTITION_END="2017-01-01"
    )
    assert partitions.get_partition_keys() == ["2016-10-01", "2016-11-01", "2016-12-01"]


def test_monthly_calendar_across_a_year_end():
    partitions = build_date_partitions(DateCalendar("monthly", date(2016, 11, 1), date(2017, 3, 1)))
    assert partitions.get_partition_keys() == ["2016-11-01", "2016-12-01", "2017-01-01", "2017-02-01"]


def test_open_ended_calendar_includes_the_window_in_progress():
    partitions = build_date_partitions(DateCalendar("daily", date(2024, 1, 1), None))
    before = datetime.now(UTC).strftime("%Y-%m-%d")
    last = partitions.get_last_partition_key()
    after = datetime.now(UTC).strftime("%Y-%m-%d")
    assert last in {before, after}


def test_open_weekly_calendar_ends_with_the_current_week():
    partitions = build_date_partitions(DateCalendar("weekly", date(2024, 1, 7), None))
    today = datetime.now(UTC).date()
    this_sunday = today - timedelta(days=(today.weekday() + 1) % 7)
    last = partitions.get_last_partition_key()
    # Allow for midnight passing between the two reads.
    assert last in {this_sunday.isoformat(), (this_sunday + timedelta(days=7)).isoformat()}
    assert partitions.get_first_partition_key() == "2024-01-07"


# --- placing timestamps in windows ---------------------------------------------------------


def test_timestamps_map_to_windows(october: TimeWindowPartitionsDefinition):
    timestamps = pd.Series(
        pd.to_datetime(
            [
                "2010-06-01 12:00",  # long before the first window: history slice
                "2016-10-01 23:59",  # just before the first window: history slice
                "2016-10-02 00:00",
                "2016-10-08 23:59",
                "2016-10-09 00:00",  # on a boundary: belongs to the new window
                "2016-10-29 23:00",
                "2016-10-30 00:00",  # end of the last window: not placeable
                "2017-03-01 00:00",
            ]
        ),
        index=[10, 11, 12, 13, 14, 15, 16, 17],
    )
    keys = window_keys_for_timestamps(timestamps, october)

    assert keys.index.tolist() == [10, 11, 12, 13, 14, 15, 16, 17]
    assert keys.tolist() == [
        "2016-10-02",
        "2016-10-02",
        "2016-10-02",
        "2016-10-02",
        "2016-10-09",
        "2016-10-23",
        None,
        None,
    ]


def test_timestamps_need_not_be_sorted(october: TimeWindowPartitionsDefinition):
    timestamps = pd.Series(pd.to_datetime(["2016-10-20", "2016-10-03", "2016-10-12"]))
    assert window_keys_for_timestamps(timestamps, october).tolist() == [
        "2016-10-16",
        "2016-10-02",
        "2016-10-09",
    ]


@pytest.mark.parametrize(
    ("timestamp", "key"),
    [
        (datetime(2001, 1, 1), "2016-10-02"),
        (datetime(2016, 10, 15, 23, 59, 59), "2016-10-09"),
        (datetime(2016, 10, 16), "2016-10-16"),
        (datetime(2016, 10, 30), None),
    ],
)
def test_window_key_for_a_single_timestamp(
    october: TimeWindowPartitionsDefinition, timestamp: datetime, key: str | None
):
    assert window_key_for(timestamp, october) == key


def test_first_window_is_open_at_the_start(october: TimeWindowPartitionsDefinition):
    bounds = window_bounds("2016-10-02", october)
    assert bounds.start is None
    assert bounds.end == datetime(2016, 10, 9)


def test_later_windows_are_half_open_weeks(october: TimeWindowPartitionsDefinition):
    bounds = window_bounds("2016-10-16", october)
    assert bounds.start == datetime(2016, 10, 16)
    assert bounds.end == datetime(2016, 10, 23)
    assert bounds.end - bounds.start == timedelta(days=7)
    assert bounds.start.tzinfo is None
    assert bounds.end.tzinfo is None


def test_bounds_agree_with_window_placement(october: TimeWindowPartitionsDefinition):
    bounds = window_bounds("2016-10-09", october)
    assert window_key_for(bounds.start, october) == "2016-10-09"
    assert window_key_for(bounds.end - timedelta(microseconds=1), october) == "2016-10-09"
    assert window_key_for(bounds.end, october) == "2016-10-16"


def test_last_window_end_is_the_calendar_end(october: TimeWindowPartitionsDefinition):
    assert last_window_end(october) == datetime(2016, 10, 30)


def test_monthly_windows_have_calendar_month_bounds():
    partitions = build_date_partitions(DateCalendar("monthly", date(2016, 11, 1), date(2017, 3, 1)))
    bounds = window_bounds("2017-02-01", partitions)
    assert (bounds.start, bounds.end) == (datetime(2017, 2, 1), datetime(2017, 3, 1))
    assert window_key_for(datetime(2016, 12, 31, 23, 59), partitions) == "2016-12-01"
    assert window_key_for(datetime(2017, 3, 1), partitions) is None


# --- series × date keys ---------------------------------------------------------------------


def test_series_window_holds_a_partition_key_not_an_id():
    cell = series_window(partition_key("Store, North"), "2016-10-16")
    assert cell == SeriesWindow(window="2016-10-16", series_key="Store_North~aa15b4618e99")


def test_parse_key_object():
    key = MultiPartitionKey({"date": "2016-10-30", "series": "FR"})
    assert parse_series_date_key(key) == SeriesWindow(window="2016-10-30", series_key="FR")


def test_parse_key_string_form():
    assert parse_series_date_key("2016-10-30|FR") == SeriesWindow(window="2016-10-30", series_key="FR")


@pytest.mark.parametrize("series_id", ["Birrarung Marr", "Store, North", "T-shirt S/M", "a|b", "Zürich"])
def test_series_window_key_round_trips_for_any_series_id(series_id: str):
    cell = series_window(partition_key(series_id), "2016-10-16")
    assert str(cell.key) == f"2016-10-16|{cell.series_key}"
    assert parse_series_date_key(cell.key) == cell
    assert parse_series_date_key(str(cell.key)) == cell


def test_series_windows_sort_by_window_then_series():
    cells = [
        series_window("FR", "2016-10-16"),
        series_window("BE", "2016-10-16"),
        series_window("FR", "2016-10-09"),
    ]
    assert sorted(cells) == [
        SeriesWindow(window="2016-10-09", series_key="FR"),
        SeriesWindow(window="2016-10-16", series_key="BE"),
        SeriesWindow(window="2016-10-16", series_key="FR"),
    ]


def test_series_date_range_keeps_the_given_order():
    assert series_date_range("2016-10-30", ["FR", "DE", "AT"]) == (
        "2016-10-30|FR",
        "2016-10-30|AT",
    )


def test_series_date_range_of_one_series():
    assert series_date_range("2016-10-09", ["FR"]) == ("2016-10-09|FR", "2016-10-09|FR")


def test_series_date_range_needs_a_series():
    with pytest.raises(ValueError, match="at least one series"):
        series_date_range("2016-10-30", [])
