"""Unit tests of the `date` calendar: window arithmetic, how data decides the calendar, persistence."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from forecasting_pipeline.calendar import (
    DateCalendar,
    load_calendar,
    plan_calendar,
    save_calendar,
    shift_windows,
    window_floor,
    window_keys,
)
from forecasting_pipeline.partitions import build_date_partitions, window_keys_for_timestamps
from forecasting_pipeline.settings import Settings, SettingsError, load_settings

# A Wednesday in a week whose Sunday is 2024-06-02; "now" for the live-data tests.
NOW = datetime(2024, 6, 5, 12, 0)


# --- window arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "window"),
    [
        (date(2016, 10, 2), date(2016, 10, 2)),  # a Sunday is its own window
        (date(2016, 10, 3), date(2016, 10, 2)),  # Monday
        (date(2016, 10, 5), date(2016, 10, 2)),  # Wednesday
        (date(2016, 10, 8), date(2016, 10, 2)),  # Saturday, the window's last day
        (date(2017, 1, 3), date(2017, 1, 1)),  # across a year end: 2017-01-01 is a Sunday
        (date(2016, 12, 31), date(2016, 12, 25)),
    ],
)
def test_weekly_windows_start_on_sunday(day: date, window: date):
    assert window_floor("weekly", day) == window


@pytest.mark.parametrize(
    ("day", "window"),
    [
        (date(2016, 10, 1), date(2016, 10, 1)),
        (date(2016, 10, 15), date(2016, 10, 1)),
        (date(2016, 2, 29), date(2016, 2, 1)),
    ],
)
def test_monthly_windows_start_on_the_first(day: date, window: date):
    assert window_floor("monthly", day) == window


def test_daily_windows_are_the_day_itself():
    assert window_floor("daily", date(2016, 10, 5)) == date(2016, 10, 5)


@pytest.mark.parametrize(
    ("cadence", "start", "steps", "expected"),
    [
        ("daily", date(2016, 12, 31), 1, date(2017, 1, 1)),
        ("daily", date(2016, 3, 1), -1, date(2016, 2, 29)),
        ("weekly", date(2016, 10, 2), 4, date(2016, 10, 30)),
        ("weekly", date(2017, 1, 1), -1, date(2016, 12, 25)),
        ("weekly", date(2016, 10, 2), 0, date(2016, 10, 2)),
        ("monthly", date(2016, 11, 1), 3, date(2017, 2, 1)),
        ("monthly", date(2016, 12, 1), 1, date(2017, 1, 1)),
        ("monthly", date(2017, 1, 1), -1, date(2016, 12, 1)),
        ("monthly", date(2016, 10, 1), -22, date(2014, 12, 1)),
        ("monthly", date(2016, 10, 1), 24, date(2018, 10, 1)),
    ],
)
def test_shift_windows(cadence: str, start: date, steps: int, expected: date):
    assert shift_windows(cadence, start, steps) == expected


# --- the calendar after data lands ------------------------------------------------------------


def _provisional(cadence: str = "weekly") -> DateCalendar:
    """What a new deployment holds before its first ingest: only the current window."""
    return DateCalendar(cadence, window_floor(cadence, NOW.date()), None)


def test_first_ingest_of_historical_data_closes_after_its_newest_window():
    # Newest 2016-12-31 (a Saturday): window 2016-12-25; four windows of history before it.
    planned = plan_calendar(_provisional(), datetime(2016, 12, 31, 23), history_windows=4, now=NOW)
    assert planned == DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 1))
    assert build_date_partitions(planned).get_partition_keys() == [
        "2016-11-27",
        "2016-12-04",
        "2016-12-11",
        "2016-12-18",
        "2016-12-25",
    ]


def test_first_ingest_without_history_windows_starts_at_the_newest_window():
    planned = plan_calendar(_provisional(), datetime(2016, 12, 28), history_windows=0, now=NOW)
    assert (planned.start, planned.end) == (date(2016, 12, 25), date(2017, 1, 1))


def test_first_ingest_of_monthly_data_across_a_year_end():
    planned = plan_calendar(_provisional("monthly"), datetime(2017, 1, 15), history_windows=2, now=NOW)
    assert planned == DateCalendar("monthly", date(2016, 11, 1), date(2017, 2, 1))


def test_data_reaching_the_current_window_makes_a_live_calendar():
    planned = plan_calendar(_provisional(), datetime(2024, 6, 4, 10), history_windows=4, now=NOW)
    assert planned == DateCalendar("weekly", date(2024, 5, 5), None)


def test_data_up_to_the_previous_window_still_counts_as_live():
    # 2024-05-29 lies in the window of 2024-05-26, the one before the current window.
    planned = plan_calendar(_provisional(), datetime(2024, 5, 29), history_windows=4, now=NOW)
    assert planned == DateCalendar("weekly", date(2024, 4, 28), None)


def test_data_two_windows_old_is_historical():
    planned = plan_calendar(_provisional(), datetime(2024, 5, 22), history_windows=4, now=NOW)
    assert planned == DateCalendar("weekly", date(2024, 4, 21), date(2024, 5, 26))


@pytest.fixture
def persisted() -> DateCalendar:
    return DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 1), persisted=True)


def test_newer_data_extends_a_persisted_closed_calendar(persisted: DateCalendar):
    # 2017-01-20 is a Friday in the window of 2017-01-15.
    planned = plan_calendar(persisted, datetime(2017, 1, 20), history_windows=4, now=NOW)
    assert planned == DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 22), persisted=True)


@pytest.mark.parametrize(
    "newest", [datetime(2016, 12, 10), datetime(2016, 12, 31, 23, 59), datetime(2010, 1, 1)]
)
def test_older_data_leaves_a_persisted_calendar_alone(persisted: DateCalendar, newest: datetime):
    assert plan_calendar(persisted, newest, history_windows=4, now=NOW) == persisted


def test_live_data_opens_a_persisted_closed_calendar(persisted: DateCalendar):
    planned = plan_calendar(persisted, datetime(2024, 6, 4), history_windows=4, now=NOW)
    assert planned == DateCalendar("weekly", date(2016, 11, 27), None, persisted=True)


def test_a_persisted_live_calendar_stays_open():
    live = DateCalendar("weekly", date(2024, 5, 5), None, persisted=True)
    assert plan_calendar(live, datetime(2016, 1, 1), history_windows=4, now=NOW) == live


@pytest.mark.parametrize("newest", [datetime(2010, 1, 1), datetime(2016, 12, 31), datetime(2024, 6, 4)])
def test_a_pinned_calendar_never_moves(newest: datetime):
    pinned = DateCalendar("weekly", date(2016, 10, 2), date(2016, 10, 30), pinned=True)
    assert plan_calendar(pinned, newest, history_windows=4, now=NOW) == pinned


def test_same_windows_ignores_how_the_calendar_was_obtained():
    assert DateCalendar("weekly", date(2016, 10, 2), None).same_windows(
        DateCalendar("weekly", date(2016, 10, 2), None, pinned=True, persisted=True)
    )
    assert not DateCalendar("weekly", date(2016, 10, 2), None).same_windows(
        DateCalendar("weekly", date(2016, 10, 2), date(2016, 10, 30))
    )


# --- window keys of timestamps ----------------------------------------------------------------

OCTOBER = DateCalendar("weekly", date(2016, 10, 2), date(2016, 10, 30))
OCTOBER_TIMESTAMPS = [
    datetime(2010, 6, 1, 12),  # long before the first window: history slice
    datetime(2016, 10, 1, 23, 59),  # just before the first window: history slice
    datetime(2016, 10, 2),
    datetime(2016, 10, 8, 23, 59, 59),
    datetime(2016, 10, 9),  # on a boundary: belongs to the new window
    datetime(2016, 10, 29, 23),
    datetime(2016, 10, 30),  # the calendar's end: no window holds it
    datetime(2017, 3, 1),
]
OCTOBER_KEYS = [
    "2016-10-02",
    "2016-10-02",
    "2016-10-02",
    "2016-10-02",
    "2016-10-09",
    "2016-10-23",
    None,
    None,
]


def _keys(timestamps: list[datetime | None], calendar: DateCalendar) -> list[str | None]:
    frame = pl.DataFrame({"ts": timestamps}, schema={"ts": pl.Datetime("us")})
    return frame.select(window_keys(pl.col("ts"), calendar))["ts"].to_list()


def test_window_keys_of_a_closed_weekly_calendar():
    assert _keys(OCTOBER_TIMESTAMPS, OCTOBER) == OCTOBER_KEYS


def test_window_keys_agree_with_the_dagster_partitions():
    dagster_keys = window_keys_for_timestamps(pd.Series(OCTOBER_TIMESTAMPS), build_date_partitions(OCTOBER))
    assert dagster_keys.tolist() == OCTOBER_KEYS


def test_window_keys_of_an_open_calendar_have_no_end():
    calendar = DateCalendar("weekly", date(2016, 10, 2), None)
    assert _keys([datetime(2016, 9, 1), datetime(2016, 10, 30), datetime(2017, 3, 1, 8)], calendar) == [
        "2016-10-02",
        "2016-10-30",
        "2017-02-26",
    ]


def test_window_keys_of_monthly_and_daily_calendars():
    monthly = DateCalendar("monthly", date(2016, 11, 1), date(2017, 2, 1))
    assert _keys(
        [
            datetime(2016, 10, 31, 23),
            datetime(2016, 12, 31, 23, 59),
            datetime(2017, 1, 1),
            datetime(2017, 2, 1),
        ],
        monthly,
    ) == ["2016-11-01", "2016-12-01", "2017-01-01", None]
    daily = DateCalendar("daily", date(2016, 10, 5), date(2016, 10, 7))
    assert _keys(
        [
            datetime(2016, 10, 1),
            datetime(2016, 10, 5, 23, 59),
            datetime(2016, 10, 6, 0, 1),
            datetime(2016, 10, 7),
        ],
        daily,
    ) == ["2016-10-05", "2016-10-05", "2016-10-06", None]


def test_a_null_timestamp_has_no_window():
    assert _keys([None, datetime(2016, 10, 10)], OCTOBER) == [None, "2016-10-09"]


# --- the persisted calendar -------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A deployment without FP_PARTITION_START: its calendar comes from the data."""
    return load_settings({"FP_HOME": str(tmp_path)})


def test_a_new_deployment_has_a_provisional_calendar_of_the_current_window(settings: Settings):
    calendar = load_calendar(settings, today=date(2024, 6, 5))
    assert calendar == DateCalendar("weekly", date(2024, 6, 2), None)
    assert not settings.calendar_file.exists()


def test_a_provisional_calendar_follows_the_cadence(tmp_path: Path):
    monthly = load_settings({"FP_HOME": str(tmp_path), "FP_DATE_CADENCE": "monthly"})
    assert load_calendar(monthly, today=date(2024, 6, 5)) == DateCalendar("monthly", date(2024, 6, 1), None)


def test_save_and_load_round_trip(settings: Settings):
    saved = save_calendar(settings, DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 1)))

    assert saved == DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 1), persisted=True)
    assert json.loads(settings.calendar_file.read_text()) == {
        "cadence": "weekly",
        "start": "2016-11-27",
        "end": "2017-01-01",
    }
    assert load_calendar(settings, today=date(2024, 6, 5)) == saved
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in settings.calendar_file.parent.iterdir()) == ["calendar.json"]


def test_an_open_calendar_round_trips_without_an_end(settings: Settings):
    save_calendar(settings, DateCalendar("weekly", date(2024, 5, 5), None))
    assert json.loads(settings.calendar_file.read_text())["end"] is None
    assert load_calendar(settings) == DateCalendar("weekly", date(2024, 5, 5), None, persisted=True)


def test_saving_again_replaces_the_calendar(settings: Settings):
    first = save_calendar(settings, DateCalendar("weekly", date(2016, 11, 27), date(2017, 1, 1)))
    save_calendar(settings, plan_calendar(first, datetime(2017, 1, 20), 4, now=NOW))
    assert load_calendar(settings).end == date(2017, 1, 22)


def test_a_pinned_calendar_is_not_persisted(settings: Settings):
    pinned = DateCalendar("weekly", date(2016, 10, 2), None, pinned=True)
    assert save_calendar(settings, pinned) == pinned
    assert not settings.calendar_file.exists()


def test_partition_start_pins_the_calendar_over_a_persisted_one(tmp_path: Path):
    save_calendar(load_settings({"FP_HOME": str(tmp_path)}), DateCalendar("weekly", date(2020, 1, 5), None))
    pinned = load_settings(
        {"FP_HOME": str(tmp_path), "FP_PARTITION_START": "2016-10-05", "FP_PARTITION_END": "2016-10-30"}
    )
    assert load_calendar(pinned) == DateCalendar("weekly", date(2016, 10, 2), date(2016, 10, 30), pinned=True)


@pytest.mark.parametrize("content", ["not json", "{}", '{"cadence": "weekly", "start": "02/10/2016"}'])
def test_a_corrupt_calendar_file_is_a_settings_error(settings: Settings, content: str):
    settings.calendar_file.parent.mkdir(parents=True, exist_ok=True)
    settings.calendar_file.write_text(content)
    with pytest.raises(SettingsError, match="not a valid calendar file"):
        load_calendar(settings)


def test_a_different_cadence_in_the_environment_is_refused(tmp_path: Path):
    save_calendar(load_settings({"FP_HOME": str(tmp_path)}), DateCalendar("weekly", date(2016, 11, 27), None))
    daily = load_settings({"FP_HOME": str(tmp_path), "FP_DATE_CADENCE": "daily"})
    with pytest.raises(SettingsError, match=r"calendar .* is weekly; FP_DATE_CADENCE=daily"):
        load_calendar(daily)


def test_the_same_cadence_in_the_environment_is_fine(tmp_path: Path):
    save_calendar(load_settings({"FP_HOME": str(tmp_path)}), DateCalendar("daily", date(2016, 11, 27), None))
    daily = load_settings({"FP_HOME": str(tmp_path), "FP_DATE_CADENCE": "daily"})
    assert load_calendar(daily).cadence == "daily"


def test_without_a_cadence_in_the_environment_the_persisted_one_wins(tmp_path: Path):
    save_calendar(load_settings({"FP_HOME": str(tmp_path)}), DateCalendar("daily", date(2016, 11, 27), None))
    default = load_settings({"FP_HOME": str(tmp_path)})  # weekly by default
    assert load_calendar(default) == DateCalendar("daily", date(2016, 11, 27), None, persisted=True)
