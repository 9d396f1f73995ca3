"""Local families on real statsforecast: all fitted in one call, a failing family costs only its
own forecasts, and local families see a bounded recent history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from forecasting_pipeline.modeling.catalog import load_catalog
from forecasting_pipeline.modeling.fitting import fit_local_families, recent_history


def _hourly(series_id: str, hours: int) -> pd.DataFrame:
    ds = pd.date_range("2024-01-01", periods=hours, freq="h")
    wave = 10 + np.sin(np.arange(hours) * 2 * np.pi / 24)
    return pd.DataFrame({"unique_id": series_id, "ds": ds, "y": wave})


def test_every_family_of_a_group_is_fitted_in_one_call_with_intervals():
    catalog = load_catalog()
    families = [(catalog.family(name), {}) for name in ("SeasonalNaive", "AutoTheta")]
    history = pd.concat([_hourly("a", 24 * 6), _hourly("b", 24 * 5)], ignore_index=True)
    fits = fit_local_families(history, families, freq="h", season=24, horizon=12, n_jobs=1)
    assert fits.fitted == ["SeasonalNaive", "AutoTheta"] and not fits.failed
    frame = fits.raw_forecast.reset_index() if "unique_id" not in fits.raw_forecast else fits.raw_forecast
    assert frame.groupby("unique_id").size().to_dict() == {"a": 12, "b": 12}
    assert {"SeasonalNaive-lo-95", "AutoTheta-hi-80"} <= set(frame.columns)


def test_a_family_that_fails_is_named_and_the_others_still_forecast():
    catalog = load_catalog()
    # Conformal intervals need 2 × horizon + 1 points: Croston fails on this history, Naive does not.
    families = [(catalog.family("SeasonalNaive"), {}), (catalog.family("CrostonOptimized"), {})]
    history = _hourly("a", 30)
    fits = fit_local_families(history, families, freq="h", season=24, horizon=24, n_jobs=1)
    assert fits.fitted == ["SeasonalNaive"]
    assert set(fits.failed) == {"CrostonOptimized"}
    assert fits.raw_forecast is not None and "SeasonalNaive" in fits.raw_forecast.columns


def test_recent_history_keeps_each_series_last_points():
    panel = pl.from_pandas(pd.concat([_hourly("a", 50), _hourly("b", 5)], ignore_index=True))
    kept = recent_history(panel, 10)
    assert kept.group_by("unique_id").len().sort("unique_id").rows() == [("a", 10), ("b", 5)]
    assert kept.filter(pl.col("unique_id") == "a")["ds"].min() == pd.Timestamp(
        "2024-01-01 16:00"
    ) + pd.Timedelta(days=1)
    assert recent_history(panel, None).height == panel.height
