"""User story: on the bundled prices the pipeline builds feature tables, studies the drivers
(correlation, Granger with FDR), lets the verdict choose the models' drivers, and measures which
features explain the champions' backtest error — all stored in PostgreSQL and shown on the assets."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest
from dagster import AssetKey
from scipy import stats
from sqlalchemy import text
from statsmodels.stats.multitest import multipletests

from forecasting_pipeline.automation import launch
from forecasting_pipeline.modeling.features import FeatureSpec, build_features
from forecasting_pipeline.modeling.granger import GrangerSettings, granger_tests
from forecasting_pipeline.partitions import window_bounds
from forecasting_pipeline.storage.features import read_features
from forecasting_pipeline.storage.observations import read_history
from forecasting_pipeline_tests.conftest import ingest_and_forecast, query_frame, series_keys

WINDOW = "2016-10-30"
SERIES = ["BE", "FR"]
DRIVERS = ["gen_forecast", "system_load", "week_day"]


@pytest.fixture(scope="module")
def pipeline(deployment, instance):
    return ingest_and_forecast(deployment, instance)


def _history(db_engine, since=None) -> pl.DataFrame:
    with db_engine.connect() as conn:
        return read_history(conn, SERIES, since, window_bounds(WINDOW).end)


def test_feature_table_holds_the_window_rows_built_from_past_values_only(pipeline, db_engine):
    bounds = window_bounds(WINDOW)
    with db_engine.connect() as conn:
        stored = read_features(conn, SERIES, bounds.start, bounds.end)
    observed = _history(db_engine, bounds.start)
    assert stored.height == observed.height  # one feature row per observation the window owns
    # The run read only a bounded lookback; its rows equal features built from all history.
    full = build_features(
        _history(db_engine),
        spec=FeatureSpec(),
        season=24,
        group="hourly",
        drivers=DRIVERS,
        since=bounds.start,
    )
    columns = [c for c in full.columns if c not in ("unique_id", "ds")]
    assert set(columns) <= set(stored.columns)
    joined = full.join(stored, on=["unique_id", "ds"], suffix="_stored")
    assert joined.height == full.height
    for column in columns:
        np.testing.assert_allclose(
            joined[column].to_numpy(), joined[f"{column}_stored"].to_numpy(), rtol=1e-9
        )
    assert {"hour", "y_lag_1", "y_lag_24", "y_roll_mean_7", "gen_forecast", "gen_forecast_lag_1"} <= set(
        columns
    )


def test_correlation_study_matches_scipy_and_shows_a_heatmap(pipeline, db_engine, instance):
    rows = query_frame(
        db_engine,
        "SELECT series_id, other, pearson, spearman, n, best_lag FROM forecasting.correlations "
        "WHERE window_key = :w AND kind = 'driver' ORDER BY 1, 2",
        w=WINDOW,
    )
    assert set(rows["series_id"]) == set(SERIES) and set(rows["other"]) == set(DRIVERS)
    # The study reads each series' last 512 hours before the window's end (by time, not rows).
    history = _history(db_engine, since=window_bounds(WINDOW).end - timedelta(hours=512))
    for row in rows.itertuples():
        one = history.filter(pl.col("unique_id") == row.series_id)
        y, x = one["y"].to_numpy(), one[row.other].to_numpy()
        assert row.n == len(y)
        assert row.pearson == pytest.approx(stats.pearsonr(y, x).statistic, abs=1e-6)
        assert row.spearman == pytest.approx(stats.spearmanr(y, x).statistic, abs=1e-6)
    kinds = set(query_frame(db_engine, "SELECT DISTINCT kind FROM forecasting.correlations")["kind"])
    assert kinds == {"driver", "lagged", "cross_series"}
    event = instance.get_latest_materialization_event(AssetKey("correlation_study"))
    metadata = event.asset_materialization.metadata
    assert metadata["heatmap"].value.startswith("![correlation heatmap](data:image/png;base64,")


def test_granger_study_stores_every_test_with_window_wide_fdr(pipeline, db_engine, instance):
    tests = query_frame(
        db_engine,
        "SELECT * FROM forecasting.granger_tests WHERE window_key = :w AND cause_kind = 'driver'",
        w=WINDOW,
    )
    assert len(tests) == len(SERIES) * len(DRIVERS) * 2  # both directions
    assert set(tests["direction"]) == {"driver_to_target", "target_to_driver"}
    assert set(tests["partition_key"]) == {f"{WINDOW}|{s}" for s in SERIES}
    testable = tests[tests["testable"]]
    assert len(testable) > 0 and testable["lag"].ge(1).all() and testable["n_obs"].gt(0).all()
    every = query_frame(
        db_engine,
        "SELECT p_value, adjusted_p FROM forecasting.granger_tests WHERE window_key = :w AND testable",
        w=WINDOW,
    )
    expected = multipletests(every["p_value"].to_numpy(), method="fdr_bh")[1]
    np.testing.assert_allclose(every["adjusted_p"].to_numpy(), expected, atol=1e-12)
    assert tests[~tests["testable"]]["reason"].notna().all()
    # The asset tested each series' last 720 hours: the same call on that slice gives the same rows.
    since = window_bounds(WINDOW).end - timedelta(hours=720)
    again = granger_tests(_history(db_engine, since), DRIVERS, GrangerSettings(max_lag=24))
    merged = tests.merge(
        again.rename({"unique_id": "series_id"}).to_pandas(), on=["series_id", "cause", "direction"]
    )
    assert len(merged) == len(tests)
    np.testing.assert_allclose(merged["statistic_x"], merged["statistic_y"], atol=1e-6)
    np.testing.assert_allclose(merged["p_value_x"], merged["p_value_y"], atol=1e-6)
    assert (merged["lag_x"] == merged["lag_y"]).all()
    summary = instance.get_latest_materialization_event(AssetKey("granger_study")).asset_materialization
    assert r"driver\_to\_target" in summary.metadata["summary"].value  # Markdown-escaped


def test_studies_are_idempotent_when_run_again(pipeline, db_engine, instance):
    counts = (
        "SELECT (SELECT count(*) FROM forecasting.features), "
        "(SELECT count(*) FROM forecasting.correlations), "
        "(SELECT count(*) FROM forecasting.granger_tests WHERE cause_kind = 'driver')"
    )
    with db_engine.connect() as conn:
        before = tuple(conn.execute(text(counts)).one())
    assert launch.study_series(instance, WINDOW, series_keys(instance)).success
    assert launch.study_correlations(instance, WINDOW).success
    with db_engine.connect() as conn:
        assert tuple(conn.execute(text(counts)).one()) == before


def test_screened_drivers_are_the_models_inputs_and_recorded_on_their_versions(pipeline, db_engine):
    decisions = query_frame(
        db_engine,
        "SELECT * FROM forecasting.driver_selection WHERE window_key = :w ORDER BY driver",
        w=WINDOW,
    )
    assert list(decisions["driver"]) == DRIVERS
    assert (decisions["rule"] == "screened").all() and decisions["reason"].str.len().gt(0).all()
    passing = query_frame(
        db_engine,
        "SELECT cause, count(*) FILTER (WHERE adjusted_p < 0.05) AS passing, "
        "count(*) FILTER (WHERE testable) AS tested FROM forecasting.granger_tests "
        "WHERE window_key = :w AND direction = 'driver_to_target' "
        "GROUP BY cause ORDER BY cause",
        w=WINDOW,
    )
    expected = passing["passing"].gt(0) & (passing["passing"] / passing["tested"] >= 0.5)
    assert list(decisions["selected"]) == list(expected)
    chosen = set(decisions.loc[decisions["selected"], "driver"])
    params = query_frame(
        db_engine,
        "SELECT model_name, params FROM forecasting.models "
        "WHERE window_key = :w AND scope IN ('global', 'local')",
        w=WINDOW,
    )
    for model, recorded in zip(params["model_name"], params["params"], strict=True):
        used = set(recorded["hist_exog"]) | set(recorded["futr_exog"])
        assert used <= chosen, model
    neural = params[params["model_name"] == "NHITS"]["params"].item()
    assert set(neural["hist_exog"]) | set(neural["futr_exog"]) == chosen


def test_feature_effects_rank_feature_groups_on_the_champion_error(pipeline, db_engine, instance):
    effects = query_frame(
        db_engine,
        "SELECT * FROM forecasting.feature_importances WHERE window_key = :w ORDER BY rank",
        w=WINDOW,
    )
    assert len(effects) > 0
    groups = set(effects["feature_group"])
    assert {"calendar", "target_lags", "target_rolling"} <= groups
    assert {f"driver:{d}" for d in DRIVERS} <= groups
    assert list(effects["rank"]) == list(range(1, len(effects) + 1))
    assert effects["baseline_error"].gt(0).all() and effects["rows"].gt(0).all()
    event = instance.get_latest_materialization_event(AssetKey("feature_effects"))
    assert "driver:" in event.asset_materialization.metadata["importances"].value


def test_peers_of_the_correlation_study_are_tested_as_causes(pipeline, db_engine, instance):
    result = launch.study_series(
        instance,
        WINDOW,
        series_keys(instance),
        run_config={"ops": {"granger_study": {"config": {"peers": 1}}}},
    )
    assert result.success
    peers = query_frame(
        db_engine,
        "SELECT series_id, cause, testable FROM forecasting.granger_tests "
        "WHERE window_key = :w AND cause_kind = 'peer' AND direction = 'driver_to_target' ORDER BY 1",
        w=WINDOW,
    )
    # Two series: each one's strongest peer is the other market.
    assert list(peers["cause"]) == ["peer:FR", "peer:BE"] and peers["testable"].all()
