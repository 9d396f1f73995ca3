"""User story: after training, every candidate is backtested on rolling origins, ranked, and each
series' champion is published with calibrated intervals; a better challenger is promoted only
through the blocking check, a tampered one is stopped, and the CLI restores a previous champion."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from click.testing import CliRunner
from dagster import AssetCheckKey, AssetKey, materialize
from sqlalchemy import text

from forecasting_pipeline.assets.forecast import predictions
from forecasting_pipeline.assets.selection import model_selection, promotions_confirmed
from forecasting_pipeline.automation import launch
from forecasting_pipeline.cli import main
from forecasting_pipeline.modeling.catalog import load_catalog
from forecasting_pipeline.partitions import series_date_range
from forecasting_pipeline_tests.conftest import (
    TINY_BACKTEST,
    TINY_GLOBAL_MODEL,
    ingest_and_forecast,
    query_frame,
    series_keys,
)

WINDOW = "2016-10-30"
SERIES = ["BE", "FR"]
HORIZON = 24
FAMILIES = sorted(f.name for f in (*load_catalog().neural(), *load_catalog().local()))
ENSEMBLES = sorted(["MeanTop3", "MedianTop3", "GroupMeanTop3", "GroupMedianTop3", "BestPerSeries"])


@pytest.fixture(scope="module")
def pipeline(deployment, instance):
    return ingest_and_forecast(deployment, instance)


def _champion(db_engine, series: str) -> str:
    return query_frame(
        db_engine, "SELECT model_name FROM forecasting.current_champions WHERE series_id = :s", s=series
    )["model_name"].item()


def _published_model(db_engine, series: str) -> set[str]:
    return set(
        query_frame(
            db_engine,
            "SELECT model_name FROM forecasting.published_forecasts WHERE series_id = :s AND window_key = :w",
            s=series,
            w=WINDOW,
        )["model_name"]
    )


def test_every_candidate_is_backtested_on_rolling_origins_with_actuals(pipeline, db_engine):
    folds = query_frame(db_engine, "SELECT * FROM forecasting.backtest_folds WHERE window_key = :w", w=WINDOW)
    assert sorted(folds["model_name"].unique()) == sorted(FAMILIES + ENSEMBLES)
    per_model = folds.groupby(["series_id", "model_name"]).agg(
        cutoffs=("cutoff", "nunique"), rows=("step", "size"), last_step=("step", "max")
    )
    assert (per_model["cutoffs"] == TINY_BACKTEST["n_windows"]).all()
    assert (per_model["rows"] == TINY_BACKTEST["n_windows"] * HORIZON).all()
    assert (per_model["last_step"] == HORIZON).all()
    # Every fold forecasts strictly after its cutoff, and its origins lie in the past.
    assert (folds["ds"] > folds["cutoff"]).all()
    assert folds["ds"].max() <= pd.Timestamp("2016-10-31 23:00")
    # The actuals are the stored observations; family folds point at the window's model version.
    mismatched = query_frame(
        db_engine,
        """SELECT count(*) AS n FROM forecasting.backtest_folds f
           JOIN forecasting.observations o ON o.series_id = f.series_id AND o.ts = f.ds
           WHERE f.window_key = :w AND f.y IS DISTINCT FROM o.y""",
        w=WINDOW,
    )["n"].item()
    assert mismatched == 0
    versions = query_frame(
        db_engine,
        """SELECT DISTINCT f.model_name, m.window_key, m.freq_group, m.scope
           FROM forecasting.backtest_folds f JOIN forecasting.models m USING (model_id)
           WHERE f.window_key = :w""",
        w=WINDOW,
    )
    assert sorted(versions["model_name"]) == sorted(FAMILIES + ENSEMBLES)
    assert set(versions["window_key"]) == {WINDOW} and set(versions["freq_group"]) == {"hourly"}
    assert set(versions.loc[versions["model_name"].isin(ENSEMBLES), "scope"]) == {"ensemble"}


def test_metrics_exist_per_series_per_step_and_per_group(pipeline, db_engine):
    metrics = query_frame(
        db_engine, "SELECT * FROM forecasting.backtest_metrics WHERE window_key = :w", w=WINDOW
    )
    per_series = metrics[metrics["series_id"].notna()]
    assert set(per_series["metric"]) >= {
        "mae",
        "rmse",
        "mape",
        "smape",
        "mase",
        "scaled_mql",
        "coverage_80",
        "coverage_95",
        "width_80",
        "width_95",
    }
    assert set(per_series["series_id"]) == set(SERIES)
    per_step = metrics[metrics["series_id"].isna() & metrics["step"].notna()]
    assert sorted(per_step["step"].unique()) == list(range(1, HORIZON + 1))
    overall = metrics[metrics["series_id"].isna() & metrics["step"].isna()]
    mase = overall[overall["metric"] == "mase"].set_index("model_name")["value"]
    # The group's MASE is the mean of the series' MASE (the M-competition convention).
    series_mean = per_series[per_series["metric"] == "mase"].groupby("model_name")["value"].mean()
    pd.testing.assert_series_equal(mase.sort_index(), series_mean.sort_index(), check_names=False)
    ranks = query_frame(
        db_engine,
        "SELECT model_name, rank FROM forecasting.leaderboard WHERE window_key = :w AND series_id = 'BE' "
        "AND metric = 'mase' ORDER BY rank",
        w=WINDOW,
    )
    assert ranks["rank"].iloc[0] == 1 and len(ranks) == len(FAMILIES + ENSEMBLES)


def test_each_series_champion_is_published_with_calibrated_nested_intervals(pipeline, db_engine):
    decisions = query_frame(
        db_engine, "SELECT * FROM forecasting.selection_decisions WHERE window_key = :w", w=WINDOW
    )
    assert sorted(decisions["series_id"]) == SERIES and set(decisions["decision"]) == {"first"}
    # The champion is the group's best candidate, or the series' own best where that is clearly better.
    own_best = query_frame(
        db_engine,
        "SELECT series_id, model_name FROM forecasting.leaderboard WHERE window_key = :w "
        "AND metric = 'mase' AND rank = 1",
        w=WINDOW,
    )
    group_best = query_frame(
        db_engine,
        "SELECT model_name FROM forecasting.backtest_metrics WHERE window_key = :w AND series_id IS NULL "
        "AND step IS NULL AND metric = 'mase' ORDER BY value, model_name LIMIT 1",
        w=WINDOW,
    )["model_name"].item()
    for series in SERIES:
        champion = _champion(db_engine, series)
        assert champion == decisions.loc[decisions["series_id"] == series, "challenger"].item()
        assert champion in {group_best, *own_best.loc[own_best["series_id"] == series, "model_name"]}
    published = query_frame(
        db_engine, "SELECT * FROM forecasting.published_forecasts WHERE window_key = :w", w=WINDOW
    )
    assert published.groupby("series_id")["step"].apply(sorted).to_dict() == {
        s: list(range(1, HORIZON + 1)) for s in SERIES
    }
    assert set(published["interval_method"]) <= {"conformal", "native"}
    nested = (
        (published["lo_95"] <= published["lo_80"])
        & (published["lo_80"] <= published["yhat"])
        & (published["yhat"] <= published["hi_80"])
        & (published["hi_80"] <= published["hi_95"])
    )
    assert nested.all()
    # Provenance: the published rows are the champion's stored forecast of the newest origin.
    joined = query_frame(
        db_engine,
        """SELECT count(*) AS n FROM forecasting.published_forecasts p
           JOIN forecasting.predictions q USING (series_id, model_name, cutoff, step)
           WHERE p.window_key = :w AND p.yhat = q.yhat AND p.model_id = q.model_id""",
        w=WINDOW,
    )["n"].item()
    assert joined == len(published)
    calibration = query_frame(
        db_engine, "SELECT * FROM forecasting.interval_calibration WHERE window_key = :w", w=WINDOW
    )
    assert set(calibration["level"]) == {80, 95} and (calibration["quantile"] > 0).all()


def _worst_family(db_engine, series: str) -> str:
    ranked = query_frame(
        db_engine,
        "SELECT model_name FROM forecasting.leaderboard WHERE window_key = :w AND series_id = :s "
        "AND metric = 'mase' AND model_name = ANY(:families) ORDER BY value DESC",
        w=WINDOW,
        s=series,
        families=FAMILIES,
    )
    return ranked["model_name"].iloc[0]


def _select_and_publish(instance, margin: float = 0.02):
    """model_selection, its blocking check and predictions over the window, without re-backtesting."""
    from forecasting_pipeline.definitions import defs

    first, last = series_date_range(WINDOW, series_keys(instance))
    return materialize(
        [model_selection, promotions_confirmed, predictions],
        selection=[AssetKey("model_selection"), AssetKey("predictions")],
        resources=dict(defs.resources),
        instance=instance,
        tags={launch.RANGE_START_TAG: first, launch.RANGE_END_TAG: last},
        run_config={"ops": {"model_selection": {"config": {"margin": margin}}}},
        raise_on_error=False,
    )


def test_a_better_challenger_is_promoted_through_the_check_and_the_cli_restores_the_old_one(
    pipeline, deployment, instance, db_engine
):
    best = _champion(db_engine, "BE")
    worst = _worst_family(db_engine, "BE")
    assert worst != best
    runner = CliRunner()
    env = {"FP_DATABASE_URL": deployment.database_url}
    demoted = runner.invoke(main, ["champion", "restore", "--series", "BE", "--to", worst], env=env)
    assert demoted.exit_code == 0, demoted.output
    assert _champion(db_engine, "BE") == worst and _published_model(db_engine, "BE") == {worst}

    result = launch.forecast_window(
        instance,
        WINDOW,
        series_keys(instance),
        run_config={"ops": {"backtest_folds": {"config": TINY_BACKTEST}}},
    )
    assert result.success
    check = result.get_asset_check_evaluations()
    assert [(c.asset_check_key.name, c.passed) for c in check] == [("promotions_confirmed", True)]
    decision = query_frame(
        db_engine,
        "SELECT decision, champion, challenger FROM forecasting.selection_decisions WHERE series_id = 'BE'",
    ).iloc[0]
    assert (decision["decision"], decision["champion"], decision["challenger"]) == ("promote", worst, best)
    assert _champion(db_engine, "BE") == best and _published_model(db_engine, "BE") == {best}
    events = query_frame(
        db_engine,
        "SELECT event, model_name, previous_model FROM forecasting.champion_events WHERE series_id = 'BE' "
        "ORDER BY event_id",
    )
    assert events[["event", "model_name"]].values.tolist() == [
        ["first", best],
        ["restore", worst],
        ["promote", best],
    ]
    # FR's champion held: nothing was promoted or recorded for it.
    assert (
        query_frame(
            db_engine, "SELECT count(*) AS n FROM forecasting.champion_events WHERE series_id = 'FR'"
        )["n"].item()
        == 1
    )

    restored = runner.invoke(main, ["champion", "restore", "--series", "BE"], env=env)
    assert restored.exit_code == 0, restored.output
    assert f"BE: {best} -> {worst}" in restored.output
    assert _champion(db_engine, "BE") == worst and _published_model(db_engine, "BE") == {worst}
    history = runner.invoke(main, ["champion", "history", "BE"], env=env)
    assert history.exit_code == 0 and history.output.count("\n") == 4


def test_a_promotion_the_folds_do_not_back_is_blocked_and_nothing_is_published(pipeline, instance, db_engine):
    champion = _champion(db_engine, "BE")
    # The candidate model selection prefers for BE (it promoted it in the previous test).
    best = query_frame(
        db_engine, "SELECT challenger FROM forecasting.selection_decisions WHERE series_id = 'BE'"
    )["challenger"].item()
    assert champion != best  # left so by the previous test's restore
    published_before = query_frame(
        db_engine,
        "SELECT model_name, published_at FROM forecasting.published_forecasts WHERE series_id = 'BE'",
    )
    # The challenger's stored folds no longer support its metrics (as if another run rewrote them).
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE forecasting.backtest_folds SET yhat = yhat + 1e6 "
                "WHERE series_id = 'BE' AND window_key = :w AND model_name = :m"
            ),
            {"w": WINDOW, "m": best},
        )
    result = _select_and_publish(instance)
    assert not result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == AssetCheckKey(AssetKey("model_selection"), "promotions_confirmed")
    assert not evaluation.passed and evaluation.metadata["unconfirmed"].value == 1
    assert [m.asset_key for m in result.get_asset_materialization_events()] == [
        AssetKey("model_selection"),
        AssetKey("model_selection"),
    ]
    assert _champion(db_engine, "BE") == champion
    after = query_frame(
        db_engine,
        "SELECT model_name, published_at FROM forecasting.published_forecasts WHERE series_id = 'BE'",
    )
    pd.testing.assert_frame_equal(after, published_before)


def test_publishing_alone_never_applies_a_promotion_the_folds_do_not_back(pipeline, instance, db_engine):
    """Left by the previous test: BE's proposal is a promotion its (tampered) folds do not back."""
    from forecasting_pipeline.definitions import defs

    champion = _champion(db_engine, "BE")
    first, last = series_date_range(WINDOW, series_keys(instance))
    result = materialize(
        [model_selection, promotions_confirmed, predictions],
        selection=[AssetKey("predictions")],
        resources=dict(defs.resources),
        instance=instance,
        tags={launch.RANGE_START_TAG: first, launch.RANGE_END_TAG: last},
        raise_on_error=False,
    )
    assert result.success
    (materialization, *_) = result.get_asset_materialization_events()
    assert materialization.materialization.metadata["promotions_not_backed"].value == 1
    assert _champion(db_engine, "BE") == champion
    assert _published_model(db_engine, "BE") == {champion}


def test_a_preset_whose_time_budget_is_spent_skips_neural_work_and_still_publishes(
    pipeline, instance, db_engine
):
    from forecasting_pipeline import operations

    run = operations.preset_run("fast", started=time.time() - 3600)  # its 10 minutes ran out long ago
    configs = run.configs
    assert configs["backtest_config"]["n_windows"] == 2 and configs["search_config"]["trials"] == 0
    assert configs["global_model_config"]["families"] == ["NHITS"]
    assert sorted(configs["local_model_config"]["families"]) == ["AutoTheta", "SeasonalNaive"]
    configs["global_model_config"].update(TINY_GLOBAL_MODEL)
    configs["backtest_config"].update(TINY_BACKTEST)
    summary = operations.forecast(instance, WINDOW, series_keys(instance), **configs)
    trained = query_frame(
        db_engine,
        "SELECT DISTINCT model_name FROM forecasting.models WHERE dagster_run_id = :r",
        r=summary.train_run_id,
    )
    assert sorted(trained["model_name"]) == ["AutoTheta", "SeasonalNaive"]
    backtested = query_frame(
        db_engine,
        "SELECT DISTINCT model_name FROM forecasting.backtest_folds WHERE dagster_run_id = :r "
        "AND candidate = 'family'",
        r=summary.forecast_run_id,
    )
    assert sorted(backtested["model_name"]) == ["AutoTheta", "SeasonalNaive"]
    published = query_frame(
        db_engine,
        "SELECT DISTINCT series_id FROM forecasting.published_forecasts WHERE dagster_run_id = :r",
        r=summary.forecast_run_id,
    )
    assert sorted(published["series_id"]) == SERIES
