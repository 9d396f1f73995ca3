"""Feature table: no feature at t sees anything after t (nor the target at t), the numbers are the
textbook lags and rolling statistics, and series never bleed into each other.

The leakage proof is by perturbation: everything after a timestamp is replaced by wild values and
every feature up to that timestamp must stay bit-for-bit the same.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from forecasting_pipeline.modeling.features import (
    CALENDAR_BY_GROUP,
    FeatureSpec,
    build_features,
    feature_groups,
    to_json_rows,
)

DRIVERS = ("temperature", "price")
SEASON = 24
SPEC = FeatureSpec(lags=(1, 2, 3), seasonal_lag=True, rolling_windows=(3, 7, 24), driver_lags=(1, 2))
START = datetime(2024, 1, 1)
WILD = 1e9


def _panel(seed: int = 7, points: int = 200) -> pl.DataFrame:
    """Three hourly series: staggered starts, one with a gap, drivers with a few nulls, rows shuffled."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, (offset, level) in enumerate([(0, 10.0), (5, 100.0), (11, -50.0)]):
        hours = np.arange(offset, offset + points)
        if i == 2:
            hours = np.delete(hours, [40, 41, 42])  # a rare gap on the grid
        n = len(hours)
        temperature = rng.normal(15, 5, n)
        temperature[rng.choice(n, 5, replace=False)] = np.nan
        frames.append(
            pl.DataFrame(
                {
                    "unique_id": f"s{i}",
                    "ds": [START + timedelta(hours=int(h)) for h in hours],
                    "y": level + rng.normal(0, 1, n).cumsum(),
                    "temperature": temperature,
                    "price": rng.gamma(2.0, 20.0, n),
                }
            )
            .with_columns(pl.col("ds").cast(pl.Datetime("ns")))
            .with_columns(pl.col("temperature").fill_nan(None))
        )
    return pl.concat(frames).sample(fraction=1.0, shuffle=True, seed=seed)


def _features(history: pl.DataFrame, **kwargs: object) -> pl.DataFrame:
    options = {"spec": SPEC, "season": SEASON, "group": "hourly", "drivers": DRIVERS} | kwargs
    return build_features(history, **options)  # type: ignore[arg-type]


def _perturbed(frame: pl.DataFrame, columns: tuple[str, ...], where: pl.Expr, seed: int) -> pl.DataFrame:
    """`columns` replaced where `where` holds by values no honest feature could produce."""
    rng = np.random.default_rng(seed)
    return frame.with_columns(
        pl.when(where).then(pl.Series(WILD * rng.random(frame.height))).otherwise(pl.col(c)).alias(c)
        for c in columns
    )


def _up_to(features: pl.DataFrame, t: datetime) -> pl.DataFrame:
    return features.filter(pl.col("ds") <= t)


@pytest.fixture(scope="module")
def panel() -> pl.DataFrame:
    return _panel()


@pytest.fixture(scope="module")
def full(panel: pl.DataFrame) -> pl.DataFrame:
    return _features(panel)


def test_every_feature_at_every_timestamp_uses_only_past_data(
    panel: pl.DataFrame, full: pl.DataFrame
) -> None:
    timestamps = panel["ds"].unique().sort().to_list()
    for n, t in enumerate(timestamps):
        perturbed = _perturbed(panel, ("y", *DRIVERS), pl.col("ds") > t, seed=n)
        assert_frame_equal(_up_to(_features(perturbed), t), _up_to(full, t), check_exact=True)


def test_the_target_at_t_never_reaches_a_feature_at_t(panel: pl.DataFrame, full: pl.DataFrame) -> None:
    timestamps = panel["ds"].unique().sort().to_list()
    for n, t in enumerate(timestamps[:-1]):
        perturbed = _features(_perturbed(panel, ("y",), pl.col("ds") == t, seed=n))
        assert_frame_equal(_up_to(perturbed, t), _up_to(full, t), check_exact=True)
    # The perturbation has teeth: the next step's lag 1 does move.
    t = timestamps[100]
    moved = _features(_perturbed(panel, ("y",), pl.col("ds") == t, seed=0))
    next_step = (pl.col("ds") == t + timedelta(hours=1)) & (pl.col("unique_id") == "s0")
    assert moved.filter(next_step)["y_lag_1"].item() != full.filter(next_step)["y_lag_1"].item()


def test_a_driver_at_t_is_a_feature_at_t(panel: pl.DataFrame, full: pl.DataFrame) -> None:
    """The leakage test allows drivers at t; this checks they are actually there and aligned."""
    expected = panel.sort("unique_id", "ds").select("unique_id", "ds", *DRIVERS)
    assert_frame_equal(full.select("unique_id", "ds", *DRIVERS), expected, check_exact=True)


# Each window reduced on its own: pandas' built-in rolling std keeps running sums of squares and drifts
# by ~1e-11 on these levels, so it is a worse yardstick than the code under test.
_BY_WINDOW = {
    "mean": np.mean,
    "std": lambda window: np.std(window, ddof=1),
    "min": np.min,
    "max": np.max,
}


def test_lags_and_rolling_statistics_match_pandas(panel: pl.DataFrame, full: pl.DataFrame) -> None:
    frame = panel.sort("unique_id", "ds").to_pandas()
    by_series = frame.groupby("unique_id", sort=False)
    past = by_series["y"].shift(1)
    expected: dict[str, pd.Series] = {}
    for k in (1, 2, 3, SEASON):
        expected[f"y_lag_{k}"] = by_series["y"].shift(k)
    for w in SPEC.rolling_windows:
        rolling = past.groupby(frame["unique_id"], sort=False).rolling(w)
        for stat, reduce in _BY_WINDOW.items():
            expected[f"y_roll_{stat}_{w}"] = rolling.apply(reduce, raw=True).reset_index(level=0, drop=True)
    for driver in DRIVERS:
        for k in SPEC.driver_lags:
            expected[f"{driver}_lag_{k}"] = by_series[driver].shift(k)

    for name, values in expected.items():
        actual = full[name].to_numpy()  # nulls become NaN, as pandas has them
        np.testing.assert_allclose(actual, values.to_numpy(dtype=float), rtol=0, atol=1e-12, err_msg=name)


def test_columns_are_keys_then_float_features_in_a_stable_order(full: pl.DataFrame) -> None:
    rolling = [f"y_roll_{s}_{w}" for w in (3, 7, 24) for s in ("mean", "std", "min", "max")]
    driver_columns = [c for d in DRIVERS for c in (d, f"{d}_lag_1", f"{d}_lag_2")]
    lags = ["y_lag_1", "y_lag_2", "y_lag_3", "y_lag_24"]
    assert full.columns == ["unique_id", "ds", *CALENDAR_BY_GROUP["hourly"], *lags, *rolling, *driver_columns]
    assert all(dtype == pl.Float64 for dtype in full.drop("unique_id", "ds").dtypes)
    assert full.equals(full.sort("unique_id", "ds"))


def test_since_keeps_owned_rows_complete_given_the_lookback(panel: pl.DataFrame, full: pl.DataFrame) -> None:
    lookback = SPEC.lookback_steps(SEASON)
    assert lookback == 24
    series = panel.filter(pl.col("unique_id") == "s1").sort("ds")
    first_owned = 60
    since = series["ds"][first_owned]
    window = series.slice(first_owned - lookback)

    owned = _features(window, since=since)

    assert owned["ds"].min() == since
    assert owned.height == series.height - first_owned
    assert owned.head(1).null_count().sum_horizontal().item() == 0
    expected = full.filter((pl.col("unique_id") == "s1") & (pl.col("ds") >= since))
    # Rolling kernels keep running sums, so a different first row moves the last bits, no more.
    assert_frame_equal(owned, expected, check_exact=False, rel_tol=1e-12, abs_tol=1e-12)
    # One row less of history and the first owned row is no longer complete.
    short = _features(series.slice(first_owned - lookback + 1), since=since)
    assert short.head(1).null_count().sum_horizontal().item() > 0


def test_lookback_covers_the_longest_reach() -> None:
    spec = FeatureSpec(lags=(1,), seasonal_lag=True, rolling_windows=(3,), driver_lags=(2,))
    assert spec.lookback_steps(12) == 12
    assert spec.lookback_steps(1) == 3
    assert FeatureSpec(lags=(1,), rolling_windows=(30,)).lookback_steps(7) == 30
    assert FeatureSpec(lags=(), seasonal_lag=False, rolling_windows=(), driver_lags=()).lookback_steps(7) == 0


def test_season_of_one_adds_no_seasonal_lag(panel: pl.DataFrame) -> None:
    columns = _features(panel, season=1).columns
    assert [c for c in columns if c.startswith("y_lag_")] == ["y_lag_1", "y_lag_2", "y_lag_3"]
    deduped = _features(panel, season=3).columns
    assert [c for c in deduped if c.startswith("y_lag_")] == ["y_lag_1", "y_lag_2", "y_lag_3"]


@pytest.mark.parametrize(
    ("group", "present", "absent"),
    [
        ("hourly", {"hour", "day_of_week", "month"}, {"quarter", "day_of_month"}),
        ("daily", {"day_of_week", "day_of_month", "month", "week_of_year"}, {"hour"}),
        ("monthly", {"month", "quarter"}, {"hour", "day_of_week"}),
        ("yearly", set(), {"month", "quarter", "hour"}),
        ("no-such-group", {"month"}, {"hour", "quarter"}),
    ],
)
def test_calendar_features_follow_the_group(group: str, present: set[str], absent: set[str]) -> None:
    history = pl.DataFrame(
        {
            "unique_id": ["a"] * 3,
            "ds": [datetime(2024, 5, 6, 13), datetime(2024, 8, 6, 14), datetime(2024, 11, 6)],
        }
    ).with_columns(pl.col("ds").cast(pl.Datetime("ns")), y=pl.lit(1.0))
    features = build_features(history, spec=FeatureSpec(), season=1, group=group, drivers=())
    calendar = {c for c in features.columns if not c.startswith("y_")} - {"unique_id", "ds"}
    assert calendar == present
    assert not calendar & absent
    assert all(features[c].dtype == pl.Float64 for c in calendar)
    expected_first = {
        "hour": 13.0,
        "day_of_week": 1.0,  # 2024-05-06 is a Monday
        "day_of_month": 6.0,
        "week_of_year": 19.0,
        "month": 5.0,
        "quarter": 2.0,
    }
    assert {c: features[c][0] for c in calendar} == {c: expected_first[c] for c in calendar}


def test_features_never_mix_series() -> None:
    hours = [datetime(2024, 1, 1) + timedelta(hours=h) for h in range(30)]
    low = pl.DataFrame({"unique_id": "low", "ds": hours, "y": np.linspace(0, 1, 30), "x": 1.0})
    high = pl.DataFrame({"unique_id": "high", "ds": hours, "y": 1e6 + np.linspace(0, 1, 30), "x": 1e6})
    history = pl.concat([low, high]).reverse().with_columns(pl.col("ds").cast(pl.Datetime("ns")))

    features = build_features(
        history, spec=FeatureSpec(rolling_windows=(3, 7)), season=24, group="hourly", drivers=["x"]
    )

    # Every temporal feature that is on the series' level (a std is not).
    temporal = [c for c in features.columns if c.startswith(("y_", "x")) and "_std_" not in c]
    levels = features.group_by("unique_id").agg(
        pl.min_horizontal(pl.col(temporal).min()).alias("lowest"),
        pl.max_horizontal(pl.col(temporal).max()).alias("highest"),
    )
    by_id = {row["unique_id"]: row for row in levels.iter_rows(named=True)}
    assert by_id["low"]["highest"] <= 1.0
    assert by_id["high"]["lowest"] >= 1e6 - 1.0
    # Each series' first row has no past, rather than the other series' last value.
    firsts = features.group_by("unique_id").first()
    assert firsts.select(pl.col("y_lag_1", "y_roll_mean_3", "x_lag_1").is_null().all()).row(0) == (True,) * 3


def test_unsorted_input_gives_the_same_table(panel: pl.DataFrame, full: pl.DataFrame) -> None:
    assert_frame_equal(_features(panel.sort("ds", "unique_id", descending=True)), full, check_exact=True)


def test_bad_input_is_rejected(panel: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="lacks columns"):
        _features(panel.drop("price"))
    with pytest.raises(ValueError, match="sharing"):
        _features(pl.concat([panel, panel.head(1)]))
    with pytest.raises(ValueError, match="clash"):
        _features(panel.rename({"price": "month"}), drivers=("temperature", "month"))
    with pytest.raises(ValueError, match="clash"):
        _features(panel.rename({"price": "temperature_lag_1"}), drivers=("temperature", "temperature_lag_1"))
    with pytest.raises(ValueError):
        FeatureSpec(lags=(0, 1))
    with pytest.raises(ValueError):
        FeatureSpec(rolling_windows=(1,))
    with pytest.raises(ValueError):
        FeatureSpec(driver_lags=(0,))


def test_feature_groups_name_each_column(full: pl.DataFrame) -> None:
    drivers = ("temperature", "temperature_max")
    columns = ["unique_id", "ds", "hour", "month", "y_lag_1", "y_lag_24", "y_roll_std_7"]
    columns += ["temperature", "temperature_lag_1", "temperature_max", "temperature_max_lag_2"]
    assert feature_groups(columns, drivers) == {
        "hour": "calendar",
        "month": "calendar",
        "y_lag_1": "target_lags",
        "y_lag_24": "target_lags",
        "y_roll_std_7": "target_rolling",
        "temperature": "driver:temperature",
        "temperature_lag_1": "driver:temperature",
        "temperature_max": "driver:temperature_max",
        "temperature_max_lag_2": "driver:temperature_max",
    }
    every = feature_groups(full.columns, DRIVERS)
    assert set(every) == set(full.columns) - {"unique_id", "ds"}
    with pytest.raises(ValueError, match="not a feature"):
        feature_groups(["humidity"], DRIVERS)


def test_json_rows_round_trip(full: pl.DataFrame) -> None:
    rows = to_json_rows(full)

    assert rows.columns == ["unique_id", "ds", "features"]
    assert rows["features"].dtype == pl.Utf8
    schema = pl.Struct({c: pl.Float64 for c in full.columns[2:]})
    decoded = rows.select("unique_id", "ds", pl.col("features").str.json_decode(schema)).unnest("features")
    assert_frame_equal(decoded, full, check_exact=True)
    assert decoded["y_lag_24"].null_count() > 0  # nulls survive as nulls, not as zeros
