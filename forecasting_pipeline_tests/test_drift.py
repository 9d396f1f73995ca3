"""Forecast accuracy and the drift sensor on real forecasts and injected degraded actuals."""

from __future__ import annotations

import pytest
from dagster import SkipReason, build_sensor_context

from forecasting_pipeline import operations
from forecasting_pipeline.automation import launch
from forecasting_pipeline.automation.drift import accuracy_drift_sensor
from forecasting_pipeline.definitions import defs
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline_tests.actuals import land_actuals
from forecasting_pipeline_tests.conftest import (
    FAMILIES_ONLY_BACKTEST,
    TINY_GLOBAL_MODEL,
    land_and_ingest,
    query_frame,
    scalar,
    series_keys,
)

# Trains, backtests and publishes before it scores: with the daemon suite, a separate CI step.
pytestmark = pytest.mark.slow
WINDOW = "2016-10-30"
DEGRADED = "BE"


@pytest.fixture(scope="module")
def scored(deployment, instance, db_engine):
    """Forecast the last window, land actuals for the horizon (BE's three times the forecast),
    ingest them and score the forecasts."""
    land_and_ingest(deployment, instance)
    operations.forecast(
        instance,
        WINDOW,
        series_keys(instance),
        global_model_config=TINY_GLOBAL_MODEL,
        search_config={"families": []},
        local_model_config={"families": ["SeasonalNaive", "AutoTheta"]},
        backtest_config=FAMILIES_ONLY_BACKTEST,
    )
    published = land_actuals(
        db_engine, deployment.settings.landing_dir, WINDOW, {DEGRADED: 3.0}, "actuals_2016-11-01.csv"
    )
    ingested = operations.ingest(instance, deployment, progress=lambda _: None)
    assert ingested.cells == 2
    keys = [f"{WINDOW}|FR", f"{WINDOW}|BE"]
    order = sorted(keys, key=lambda k: list(instance.get_dynamic_partitions("series")).index(k.split("|")[1]))
    result = launch.run_partition_range("score_forecast_accuracy", instance, order[0], order[-1])
    assert result.success
    return published


def _evaluate(instance, deployment):
    return accuracy_drift_sensor(
        build_sensor_context(
            instance=instance,
            sensor_name="accuracy_drift_sensor",
            resources={"database": DatabaseResource(url=deployment.database_url)},
            definitions=defs,
        )
    )


def test_accuracy_scores_every_forecast_against_the_actuals_that_arrived(scored, db_engine):
    rows = query_frame(
        db_engine,
        "SELECT * FROM forecasting.forecast_accuracy WHERE window_key = :w AND champion ORDER BY series_id",
        w=WINDOW,
    )
    assert list(rows.series_id) == ["BE", "FR"]
    horizon = scored.groupby("series_id").size()
    assert rows.set_index("series_id").points.to_dict() == horizon.to_dict()
    fr, be = rows.set_index("series_id").loc["FR"], rows.set_index("series_id").loc["BE"]
    assert fr.mae == pytest.approx(0, abs=1e-6) and fr.mase == pytest.approx(0, abs=1e-6)
    expected_be = 2 * scored[scored.series_id == "BE"].yhat.abs().mean()
    assert be.mae == pytest.approx(expected_be, rel=1e-6)
    assert be.backtest_mase > 0 and be.mase > be.backtest_mase
    # Every candidate's forecast is scored too, each from its own origin.
    candidates = scalar(db_engine, "SELECT count(DISTINCT model_name) FROM forecasting.forecast_accuracy")
    assert candidates > 1


def test_drift_retrains_exactly_the_degraded_series_and_says_why(scored, deployment, instance, db_engine):
    skip = _evaluate(instance, deployment)
    assert isinstance(skip, SkipReason) and "submitted" in skip.skip_message
    (backfill,) = [
        b
        for b in instance.get_backfills()
        if b.tags.get("forecasting-pipeline/trigger") == "accuracy_drift_sensor"
    ]
    subset = backfill.asset_backfill_data.target_subset
    by_asset = {
        key.to_user_string(): set(subset.get_partitions_subset(key).get_partition_keys())
        for key in subset.asset_keys
    }
    assert by_asset == {
        "training_panel": {WINDOW},
        "hyperparameter_search": {WINDOW},
        "global_models": {WINDOW},
        "local_models": {WINDOW},
        "backtest_folds": {f"{WINDOW}|{DEGRADED}"},
        "model_selection": {f"{WINDOW}|{DEGRADED}"},
        "predictions": {f"{WINDOW}|{DEGRADED}"},
    }
    reason = backfill.tags["forecasting-pipeline/reason"]
    assert "1 series" in reason and f"{DEGRADED} @ {WINDOW}" in reason and "rolling MASE" in reason
    events = query_frame(db_engine, "SELECT * FROM forecasting.drift_events")
    assert list(events.series_id) == [DEGRADED] and events.ratio.iloc[0] > 1.5
    # Acted on once: the same drift asks for nothing again.
    again = _evaluate(instance, deployment)
    assert "no series past the drift threshold" in again.skip_message
    assert len(instance.get_backfills()) == 1
