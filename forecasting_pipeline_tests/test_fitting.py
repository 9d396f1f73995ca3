"""Local fitting on real statsforecast: series too short for a season are named and skipped,
the others are forecast with intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from forecasting_pipeline.modeling.catalog import local_model_spec
from forecasting_pipeline.modeling.fitting import fit_local_model


def _hourly(series_id: str, hours: int) -> pd.DataFrame:
    ds = pd.date_range("2024-01-01", periods=hours, freq="h")
    return pd.DataFrame({"unique_id": series_id, "ds": ds, "y": np.arange(hours, dtype=float) % 24})


def test_short_series_are_skipped_and_named_the_rest_are_forecast():
    history = pd.concat([_hourly("long", 24 * 5), _hourly("short", 10)], ignore_index=True)

    fit = fit_local_model(history, local_model_spec("SeasonalNaive"), "h", horizon=6)

    assert fit.season == 24
    assert fit.too_short == ["short"]
    assert set(fit.fitted["unique_id"]) == {"long"}
    forecast = fit.raw_forecast.reset_index()
    assert list(forecast["unique_id"].unique()) == ["long"]
    # Seasonal naive repeats the last day: hours 0..5 of the pattern y = hour of day.
    assert forecast["SeasonalNaive"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert {"SeasonalNaive-lo-80", "SeasonalNaive-hi-95"} <= set(forecast.columns)


def test_a_panel_of_only_short_series_fits_nothing():
    fit = fit_local_model(_hourly("short", 10), local_model_spec("SeasonalNaive"), "h", horizon=6)
    assert fit.raw_forecast is None and fit.too_short == ["short"]
