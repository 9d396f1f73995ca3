"""Frequency groups: a window holding hourly, monthly and a two-point series forecasts both
groups with their own horizons and records the short series as not forecastable, instead of
failing the window."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pytest
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.modeling.catalog import load_catalog
from forecasting_pipeline.modeling.forecast_frame import restamp
from forecasting_pipeline.modeling.frequency_groups import frequency_group, group_panel
from forecasting_pipeline_tests.conftest import FAMILIES_ONLY_BACKTEST, TINY_GLOBAL_MODEL, series_keys

LATEST_WINDOW = "2016-10-30"


@pytest.mark.parametrize(
    ("alias", "group"),
    [
        ("15min", "subhourly"),
        ("h", "hourly"),
        ("2h", "hourly"),
        ("D", "daily"),
        ("B", "daily"),
        ("W-SUN", "weekly"),
        ("MS", "monthly"),
        ("ME", "monthly"),
        ("QS-OCT", "quarterly"),
        ("YS-JAN", "yearly"),
        ("ms", "subhourly"),
        ("", None),
        (None, None),
        ("nonsense", None),
    ],
)
def test_aliases_map_to_their_group(alias, group):
    assert frequency_group(alias) == group


def test_unforecastable_series_are_set_aside_with_reasons_and_the_rest_are_grouped():
    catalog = load_catalog()
    hours = pd.date_range("2024-01-01", periods=100, freq="h")
    months = pd.date_range("2010-01-01", periods=60, freq="MS")
    panel = pl.from_pandas(
        pd.concat(
            [
                pd.DataFrame({"unique_id": "hourly", "ds": hours, "y": range(100)}),
                pd.DataFrame({"unique_id": "monthly", "ds": months, "y": range(60)}),
                pd.DataFrame({"unique_id": "flat", "ds": months, "y": 5.0}),
                pd.DataFrame({"unique_id": "short_monthly", "ds": months[:20], "y": range(20)}),
                pd.DataFrame({"unique_id": "two", "ds": months[:2], "y": [1.0, 2.0]}),
                pd.DataFrame({"unique_id": "ragged", "ds": hours[[0, 1, 5, 17, 40]], "y": range(5)}),
            ],
            ignore_index=True,
        ).astype({"y": "float64"})
    )
    frequencies = pl.DataFrame(
        {
            "unique_id": ["hourly", "monthly", "flat", "short_monthly", "two", "ragged"],
            "freq": ["h", "MS", "MS", "MS", None, None],
        }
    )
    grouped = group_panel(panel, frequencies, catalog)
    assert grouped.groups() == ["hourly", "monthly"]
    reasons = {
        row["unique_id"]: (row["reason"], row["detail"]) for row in grouped.excluded.iter_rows(named=True)
    }
    assert reasons == {
        "flat": ("constant", "every observation equals 5.0"),
        "short_monthly": (
            "too_short",
            f"20 observations; the monthly group needs at least {catalog.group('monthly').min_points}",
        ),
        "two": ("too_short", "2 observations; at least 3 are needed to tell its sampling frequency"),
        "ragged": ("irregular", "no regular sampling frequency was found for this series at registration"),
    }
    assert grouped.panel.group_by("freq_group").agg(pl.col("unique_id").n_unique()).sort(
        "freq_group"
    ).rows() == [
        ("hourly", 1),
        ("monthly", 1),
    ]


def test_forecasts_of_a_series_on_another_alias_of_the_group_are_redated():
    frame = pd.DataFrame(
        {
            "unique_id": ["sun", "sun", "mon", "mon"],
            "ds": pd.to_datetime(["2024-01-07", "2024-01-14", "2024-01-07", "2024-01-14"]),
            "step": [1, 2, 1, 2],
            "cutoff": pd.to_datetime(["2023-12-31", "2023-12-31", "2024-01-01", "2024-01-01"]),
        }
    )
    series_freq = pl.DataFrame({"unique_id": ["sun", "mon"], "freq": ["W-SUN", "W-MON"]})
    dated = restamp(frame, series_freq, "W-SUN")
    assert dated["ds"].dt.strftime("%Y-%m-%d").tolist() == [
        "2024-01-07",
        "2024-01-14",
        "2024-01-08",
        "2024-01-15",
    ]


def _land_mixed(landing: Path) -> None:
    from forecasting_pipeline.datasets import EPF_FR_BE

    landing.mkdir(parents=True, exist_ok=True)
    prices = EPF_FR_BE.load()
    prices[prices["unique_id"] == "FR"][["unique_id", "ds", "y"]].to_csv(
        landing / "fr_prices.csv", index=False
    )
    passengers = pd.read_csv(Path(EPF_FR_BE.path()).parent / "AirPassengers.csv")
    passengers.assign(unique_id="air_passengers")[["unique_id", "ds", "y"]].to_csv(
        landing / "air_passengers.csv", index=False
    )
    pd.DataFrame({"unique_id": "two_points", "ds": ["2016-10-30", "2016-10-31"], "y": [1.0, 2.0]}).to_csv(
        landing / "two_points.csv", index=False
    )


@pytest.fixture(scope="module")
def mixed(deployment, instance):
    _land_mixed(deployment.settings.landing_dir)
    ingested = operations.ingest(instance, deployment, progress=lambda _: None)
    assert ingested.latest_window == LATEST_WINDOW
    return operations.forecast(
        instance,
        LATEST_WINDOW,
        series_keys(instance),
        global_model_config=TINY_GLOBAL_MODEL | {"input_size": None},
        search_config={"families": []},
        local_model_config={"families": ["SeasonalNaive"]},
        backtest_config=FAMILIES_ONLY_BACKTEST,
    )


def test_a_mixed_window_forecasts_each_group_with_its_horizon_and_sets_the_short_series_aside(
    mixed, db_engine
):
    catalog = load_catalog()
    with db_engine.connect() as conn:
        steps = dict(
            conn.execute(
                text(
                    "SELECT series_id || '/' || model_name || '/' || freq_group, count(*) "
                    "FROM forecasting.predictions WHERE window_key = :w GROUP BY 1"
                ),
                {"w": LATEST_WINDOW},
            ).all()
        )
        set_aside = conn.execute(
            text(
                "SELECT series_id, reason, detail FROM forecasting.forecast_exclusions WHERE window_key = :w"
            ),
            {"w": LATEST_WINDOW},
        ).all()
        models = conn.execute(
            text(
                "SELECT model_name, freq_group, params->>'horizon', params->>'freq' FROM forecasting.models "
                "ORDER BY 1, 2"
            )
        ).all()
        first_monthly = conn.execute(
            text(
                "SELECT min(ds) FROM forecasting.predictions WHERE series_id = 'air_passengers' "
                "AND model_name = 'SeasonalNaive'"
            )
        ).scalar_one()
    hourly, monthly = catalog.group("hourly").horizon, catalog.group("monthly").horizon
    assert steps == {
        "FR/NHITS/hourly": hourly,
        "FR/SeasonalNaive/hourly": hourly,
        "air_passengers/NHITS/monthly": monthly,
        "air_passengers/SeasonalNaive/monthly": monthly,
    }
    assert set_aside == [
        ("two_points", "too_short", "2 observations; at least 3 are needed to tell its sampling frequency")
    ]
    assert models == [
        ("NHITS", "hourly", str(hourly), "h"),
        ("NHITS", "monthly", str(monthly), "MS"),
        ("SeasonalNaive", "hourly", str(hourly), "h"),
        ("SeasonalNaive", "monthly", str(monthly), "MS"),
    ]
    assert first_monthly == pd.Timestamp("1961-01-01")
