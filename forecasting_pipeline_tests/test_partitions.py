"""Unit tests of partition keys: the `date` calendar, window placement and series × date keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from dagster import MultiPartitionKey, TimeWindowPartitionsDefinition

from forecasting_pipeline.partitions import (
    InvalidSeriesIdError,
    SeriesWindow,
    build_date_partitions,
    parse_series_date_key,
    series_date_range,
    validate_series_id,
    window_bounds,
    window_key_for,
    window_keys_for_timestamps,
)
from forecasting_pipeline.settings import load_settings


def _partitions(**env: str) -> TimeWindowPartitionsDefinition:
    return build_date_partitions(load_settings({"FP_HOME": "/tmp/fp-unused", **env}))


@pytest.fixture
def october() -> TimeWindowPartitionsDefinition:
    """Weekly windows starting Sundays 2016-10-02, 09, 16 and 23; the last ends on 2016-10-30."""
    return _partitions(FP_PARTITION_START="2016-10-02", FP_PARTITION_END="2016-10-30")


# --- the `date` calendar -------------------------------------------------------------------


def test_weekly_start_on_a_wednesday_aligns_to_the_previous_sunday():
    partitions = _partitions(FP_PARTITION_START="2016-10-05", FP_PARTITION_END="2016-10-30")
    assert partitions.get_partition_keys() == [
        "2016-10-02",
        "2016-10-09",
        "2016-10-16",
        "2016-10-23",
    ]


@pytest.mark.parametrize("start", ["2016-10-02", "2016-10-08"])  # a Sunday, then a Saturday
def test_weekly_first_window_is_the_sunday_on_or_before_the_start(start: str):
    partitions = _partitions(FP_PARTITION_START=start, FP_PARTITION_END="2016-10-30")
    assert partitions.get_first_partition_key() == "2016-10-02"


def test_weekly_is_the_default_cadence(october: TimeWindowPartitionsDefinition):
    assert october.get_partition_keys() == ["2016-10-02", "2016-10-09", "2016-10-16", "2016-10-23"]


def test_daily_windows_start_on_the_given_day():
    partitions = _partitions(
        FP_DATE_CADENCE="daily", FP_PARTITION_START="2016-10-15", FP_PARTITION_END="2016-10-18"
    )
    assert partitions.get_partition_keys() == ["2016-10-15", "2016-10-16", "2016-10-17"]


def test_monthly_mid_month_start_aligns_to_the_first():
    partitions = _partitions(
        FP_DATE_CADENCE="monthly", FP_PARTITION_START="2016-10-15", FP_PARTITION_END="2017-01-01"
    )
    assert partitions.get_partition_keys() == ["2016-10-01", "2016-11-01", "2016-12-01"]


def test_open_ended_calendar_includes_the_window_in_progress():
    partitions = _partitions(FP_DATE_CADENCE="daily", FP_PARTITION_START="2024-01-01")
    before = datetime.now(UTC).strftime("%Y-%m-%d")
    last = partitions.get_last_partition_key()
    after = datetime.now(UTC).strftime("%Y-%m-%d")
    assert last in {before, after}


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


# --- series ids and series × date keys ------------------------------------------------------


@pytest.mark.parametrize("series_id", ["FR", "Birrarung Marr", "store_1.a-b", "a", "x" * 127])
def test_usable_series_ids_are_returned_unchanged(series_id: str):
    assert validate_series_id(series_id) == series_id


@pytest.mark.parametrize(
    "series_id",
    ["", " x", "x ", "a|b", "a,b", "a/b", "a\\b", "a[1]", "a*", "x" * 128],
)
def test_unusable_series_ids_are_rejected(series_id: str):
    with pytest.raises(InvalidSeriesIdError):
        validate_series_id(series_id)


def test_a_trailing_newline_is_trailing_whitespace():
    with pytest.raises(InvalidSeriesIdError):
        validate_series_id("FR\n")


def test_invalid_series_id_error_is_a_value_error():
    with pytest.raises(ValueError, match="not usable as a partition key"):
        validate_series_id("a|b")


def test_parse_key_object():
    key = MultiPartitionKey({"date": "2016-10-30", "series": "FR"})
    assert parse_series_date_key(key) == SeriesWindow(window="2016-10-30", series_id="FR")


def test_parse_key_string_form():
    assert parse_series_date_key("2016-10-30|FR") == SeriesWindow(window="2016-10-30", series_id="FR")


def test_series_window_key_round_trips():
    cell = SeriesWindow(window="2016-10-16", series_id="Birrarung Marr")
    assert str(cell.key) == "2016-10-16|Birrarung Marr"
    assert parse_series_date_key(cell.key) == cell
    assert parse_series_date_key(str(cell.key)) == cell


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
