"""Unit tests of frequency inference and the seasonal period that goes with a frequency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from forecasting_pipeline.modeling.frequency import (
    MIN_TIMESTAMPS,
    FrequencyError,
    grid_flags,
    infer_frequencies,
    infer_series_frequency,
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


# --- Set-based inference over many series ---------------------------------------------------------

# (start, pandas freq to generate, alias both inference paths give back). Pandas names a quarter
# cycle by its month in OCT..DEC, so January-based quarters come back as QS-OCT / QE-OCT.
_KINDS = {
    "hourly": ("2020-01-01", "h", "h"),
    "half-hourly": ("2020-01-01", "30min", "30min"),
    "quarter-hourly": ("2020-01-01", "15min", "15min"),
    "two-hourly": ("2020-01-01 01:00", "2h", "2h"),
    "daily": ("2020-01-01", "D", "D"),
    "business-daily": ("2020-01-06", "B", "B"),
    "weekly-sunday": ("2020-01-05", "W-SUN", "W-SUN"),
    "weekly-wednesday": ("2020-01-01", "W-WED", "W-WED"),
    "fortnightly": ("2020-01-01", "2W-WED", "2W-WED"),
    "month-start": ("2020-01-01", "MS", "MS"),
    "month-end": ("2020-01-31", "ME", "ME"),
    "quarter-start-jan": ("2020-01-01", "QS-JAN", "QS-OCT"),
    "quarter-start-feb": ("2020-02-01", "QS-FEB", "QS-NOV"),
    "quarter-end-dec": ("2020-03-31", "QE-DEC", "QE-DEC"),
    "quarter-end-jan": ("2020-01-31", "QE-JAN", "QE-OCT"),
    "year-start": ("2000-01-01", "YS-JAN", "YS-JAN"),
    "year-start-jul": ("2000-07-01", "YS-JUL", "YS-JUL"),
    "year-end": ("2000-12-31", "YE-DEC", "YE-DEC"),
    "year-end-jun": ("2000-06-30", "YE-JUN", "YE-JUN"),
}


def _long(**series: pd.Series | pd.DatetimeIndex) -> pl.DataFrame:
    """A long polars frame, one block of rows per keyword, with a value column to carry along."""
    blocks = [
        pl.DataFrame({"unique_id": name, "ds": pd.Series(stamps), "y": np.arange(len(stamps), dtype=float)})
        for name, stamps in series.items()
    ]
    return pl.concat(blocks).with_columns(pl.col("ds").cast(pl.Datetime("us")))


def _inferred(frame: pl.DataFrame) -> dict[str, tuple[str | None, str | None, int]]:
    result = infer_frequencies(frame)
    return {row[0]: row[1:] for row in result.iter_rows()}


def test_every_kind_regular_and_gappy_in_one_call_agrees_with_infer_series_frequency():
    series = {}
    for name, (start, freq, _) in _KINDS.items():
        stamps = pd.date_range(start, periods=40, freq=freq)
        series[name] = stamps
        series[f"{name} with gaps"] = stamps.delete([3, 17, 18, 30])
    frame = _long(**series).sample(fraction=1.0, shuffle=True, seed=7)

    inferred = _inferred(frame)

    assert set(inferred) == set(series)
    for name, stamps in series.items():
        freq, reason, n = inferred[name]
        expected = _KINDS[name.removesuffix(" with gaps")][2]
        assert (freq, reason, n) == (expected, None, len(stamps)), name
        assert freq == infer_series_frequency(pd.Series(stamps)), name


def test_result_schema_and_one_row_per_series():
    frame = _long(b=_range("2020-01-01", 5, "h"), a=_range("2020-01-01", 2, "h"))
    result = infer_frequencies(frame)
    assert result.schema == pl.Schema(
        {"unique_id": pl.String, "freq": pl.String, "freq_reason": pl.String, "n_timestamps": pl.Int64}
    )
    assert result.get_column("unique_id").to_list() == ["a", "b"]


def test_gaps_do_not_change_the_frequency():
    months = pd.date_range("2015-01-01", periods=60, freq="MS").delete([4, 5, 6, 20, 41])
    days = pd.date_range("2020-01-01", periods=90, freq="D").delete([10, 11, 50])
    hours = pd.date_range("2020-01-01", periods=200, freq="h").delete(list(range(30, 40)))
    inferred = _inferred(_long(months=months, days=days, hours=hours))
    assert {name: freq for name, (freq, _, _) in inferred.items()} == {
        "months": "MS",
        "days": "D",
        "hours": "h",
    }


def test_business_days_with_holidays_stay_business_days():
    trading_days = pd.bdate_range("2020-01-01", periods=60).delete([0, 14, 33])  # New Year and two more
    freq, reason, _ = _inferred(_long(stocks=trading_days))["stocks"]
    assert (freq, reason) == ("B", None)


def test_unsorted_and_repeated_timestamps_count_once():
    hours = _range("2020-01-01", 24, "h")
    messy = pd.concat([hours.iloc[::-1], hours.iloc[5:9], hours.iloc[:2]], ignore_index=True)
    assert _inferred(_long(messy=messy))["messy"] == ("h", None, 24)


@pytest.mark.parametrize("n", [1, 2])
def test_too_short_series_get_a_reason(n: int):
    stamps = _range("2020-01-01", n, "h")
    repeated = pd.concat([stamps, stamps], ignore_index=True)
    freq, reason, count = _inferred(_long(short=repeated))["short"]
    noun = "timestamp" if n == 1 else "timestamps"
    assert (freq, count) == (None, n)
    assert reason == f"too short: {n} distinct {noun}, need at least {MIN_TIMESTAMPS}"


def test_series_without_any_timestamp_is_too_short():
    frame = pl.DataFrame(
        {"unique_id": ["empty", "empty"], "ds": [None, None]},
        schema={"unique_id": pl.String, "ds": pl.Datetime},
    )
    assert _inferred(frame)["empty"] == (None, "too short: 0 distinct timestamps, need at least 3", 0)


def test_irregular_reason_names_the_modal_step_and_its_share():
    hours = np.cumsum([0, 3, 3, 3, 3, 5, 7, 4, 8])  # 4 of 8 steps are multiples of 3h
    stamps = pd.Timestamp("2020-01-01") + pd.to_timedelta(hours, unit="h")
    freq, reason, _ = _inferred(_long(odd=stamps))["odd"]
    assert freq is None
    assert reason == "irregular spacing: the most common step 3h covers only 50% of steps"


def test_random_timestamps_are_irregular():
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 30 * 86_400, size=200)
    stamps = pd.Timestamp("2020-01-01") + pd.to_timedelta(seconds, unit="s")
    freq, reason, _ = _inferred(_long(noise=stamps))["noise"]
    assert freq is None
    assert reason.startswith("irregular spacing: the most common step ")


def test_monthly_steps_on_another_day_have_no_alias():
    stamps = pd.date_range("2020-01-01", periods=12, freq="MS") + pd.Timedelta(days=14)
    freq, reason, _ = _inferred(_long(mid=stamps))["mid"]
    assert freq is None
    assert reason.startswith("no pandas alias: monthly steps fall on day 15 of the month at 00:00")


@pytest.mark.parametrize(
    ("unit", "freq"), [("ns", "500ms"), ("us", "30min"), ("ms", "min")], ids=["ns", "us", "ms"]
)
def test_any_time_unit(unit: str, freq: str):
    frame = _long(a=_range("2020-01-01", 10, freq)).with_columns(pl.col("ds").cast(pl.Datetime(unit)))
    assert _inferred(frame)["a"][0] == freq
    assert grid_flags(frame, infer_frequencies(frame))["on_grid"].all()


def test_time_zone_aware_days_are_read_on_the_local_clock():
    days = pd.date_range("2020-03-20", periods=20, freq="D", tz="Europe/Paris")  # crosses a DST change
    frame = pl.DataFrame({"unique_id": "paris", "ds": days})
    assert _inferred(frame)["paris"][0] == "D"
    assert grid_flags(frame, infer_frequencies(frame))["steps_missing_before"].fill_null(0).sum() == 0


def test_mixed_panel_in_one_call():
    rng = np.random.default_rng(1)
    series = {}
    expected = {}
    for i in range(300):
        name, (start, freq, alias) = list(_KINDS.items())[i % len(_KINDS)]
        stamps = pd.date_range(start, periods=int(rng.integers(20, 60)), freq=freq)
        drop = rng.choice(len(stamps), size=2, replace=False)
        series[f"{name}-{i}"] = stamps.delete(drop)
        expected[f"{name}-{i}"] = alias
    series["short"], expected["short"] = _range("2020-01-01", 2, "D"), None
    frame = _long(**series).sample(fraction=1.0, shuffle=True, seed=3)

    result = infer_frequencies(frame)

    assert dict(zip(result["unique_id"], result["freq"], strict=True)) == expected
    assert (result["freq"].is_null() == result["freq_reason"].is_not_null()).all()


# --- Grid flags -------------------------------------------------------------------------------------


def _flags(frame: pl.DataFrame, **freqs: str | None) -> pl.DataFrame:
    frequencies = pl.DataFrame(
        {"unique_id": list(freqs), "freq": list(freqs.values())},
        schema={"unique_id": pl.String, "freq": pl.String},
    )
    return grid_flags(frame, frequencies)


def test_off_grid_hour_and_a_three_hour_hole():
    stamps = pd.to_datetime(
        ["2020-01-01 00:00", "2020-01-01 01:00", "2020-01-01 01:30", "2020-01-01 02:00", "2020-01-01 05:00"]
    )
    flags = _flags(_long(a=stamps), a="h")
    assert flags["on_grid"].to_list() == [True, True, False, True, True]
    assert flags["steps_missing_before"].to_list() == [None, 0, 0, 0, 2]


def test_flags_keep_rows_order_and_columns():
    hours = _range("2020-01-01", 6, "h")
    frame = _long(a=hours, b=hours).sample(fraction=1.0, shuffle=True, seed=5).with_columns(extra=pl.lit("x"))
    flags = _flags(frame, a="h", b="h")
    assert flags.select(frame.columns).equals(frame)
    assert flags.columns == [*frame.columns, "on_grid", "steps_missing_before"]
    assert flags.schema["on_grid"] == pl.Boolean
    assert flags.schema["steps_missing_before"] == pl.Int64
    first = flags.filter(pl.col("ds") == pl.col("ds").min())
    assert first["steps_missing_before"].to_list() == [None, None]


def test_repeated_timestamps_count_zero_after_their_first_row():
    stamps = pd.to_datetime(["2020-01-01 00:00", "2020-01-01 03:00", "2020-01-01 03:00", "2020-01-01 00:00"])
    flags = _flags(_long(a=stamps), a="h")
    assert flags["on_grid"].to_list() == [True, True, True, True]
    assert flags["steps_missing_before"].to_list() == [None, 2, 0, 0]


def test_month_start_off_grid_day_and_missing_months():
    stamps = pd.to_datetime(["2020-01-01", "2020-01-15", "2020-02-01", "2020-05-01"])
    flags = _flags(_long(m=stamps), m="MS")
    assert flags["on_grid"].to_list() == [True, False, True, True]
    assert flags["steps_missing_before"].to_list() == [None, 0, 0, 2]


def test_month_end_quarter_and_year_grids():
    month_ends = pd.to_datetime(["2020-01-31", "2020-02-29", "2020-03-30", "2020-06-30"])
    quarters = pd.to_datetime(["2020-01-01", "2020-04-01", "2020-05-01", "2021-01-01"])
    years = pd.to_datetime(["2018-12-31", "2019-12-31", "2020-06-30", "2022-12-31"])
    flags = _flags(_long(me=month_ends, qs=quarters, ye=years), me="ME", qs="QS-OCT", ye="YE-DEC")
    by_series = flags.partition_by("unique_id", as_dict=True)
    assert by_series[("me",)]["on_grid"].to_list() == [True, True, False, True]
    assert by_series[("me",)]["steps_missing_before"].to_list() == [None, 0, 0, 3]  # March, April, May
    assert by_series[("qs",)]["on_grid"].to_list() == [True, True, False, True]
    assert by_series[("qs",)]["steps_missing_before"].to_list() == [None, 0, 0, 2]  # July and October
    assert by_series[("ye",)]["on_grid"].to_list() == [True, True, False, True]
    assert by_series[("ye",)]["steps_missing_before"].to_list() == [None, 0, 0, 2]  # 2020 and 2021


def test_weekly_and_business_day_grids():
    weeks = pd.to_datetime(
        ["2020-01-01", "2020-01-08", "2020-01-09", "2020-01-29"]
    )  # Wednesdays + a Thursday
    business = pd.to_datetime(["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-08", "2020-01-11"])
    flags = _flags(_long(w=weeks, b=business), w="W-WED", b="B")
    by_series = flags.partition_by("unique_id", as_dict=True)
    assert by_series[("w",)]["on_grid"].to_list() == [True, True, False, True]
    assert by_series[("w",)]["steps_missing_before"].to_list() == [None, 0, 0, 2]
    # Friday -> Monday skips no business day; Monday -> Wednesday skips Tuesday; a Saturday is off it.
    assert by_series[("b",)]["on_grid"].to_list() == [True, True, True, True, False]
    assert by_series[("b",)]["steps_missing_before"].to_list() == [None, 0, 0, 1, 2]


def test_an_early_outlier_does_not_shift_the_grid():
    stamps = pd.to_datetime(["2020-01-01 09:30"]).append(
        pd.date_range("2020-01-01 10:00", periods=5, freq="h")
    )
    flags = _flags(_long(a=stamps), a="h")
    assert flags["on_grid"].to_list() == [False, True, True, True, True, True]
    assert flags["steps_missing_before"].to_list() == [None, 0, 0, 0, 0, 0]


def test_unknown_or_missing_frequency_gives_nulls():
    hours = _range("2020-01-01", 4, "h")
    flags = _flags(_long(a=hours, b=hours, c=hours, d=hours), a=None, b="not-an-alias", d="h")
    by_series = flags.partition_by("unique_id", as_dict=True)
    for name in ("a", "b", "c"):  # c has no row in frequencies at all
        assert by_series[(name,)]["on_grid"].null_count() == 4, name
        assert by_series[(name,)]["steps_missing_before"].null_count() == 4, name
    assert by_series[("d",)]["on_grid"].to_list() == [True] * 4


def test_inferred_frequencies_feed_grid_flags():
    series = {name: pd.date_range(start, periods=30, freq=freq) for name, (start, freq, _) in _KINDS.items()}
    series["noise"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(
        np.random.default_rng(2).integers(0, 10**7, 30), unit="s"
    )
    frame = _long(**series)
    flags = grid_flags(frame, infer_frequencies(frame))
    regular = flags.filter(pl.col("unique_id") != "noise")
    assert regular["on_grid"].all()
    assert regular["steps_missing_before"].fill_null(0).sum() == 0
    assert flags.filter(pl.col("unique_id") == "noise")["on_grid"].null_count() == 30
