"""User story: land the bundled dataset → series become partitions → observations ingested per
series × window → the catalog's families tuned and trained per frequency group → forecasts with
intervals stored, traced to the Dagster runs, MLflow versions and code that made them; and
re-running the same origin changes nothing but versions."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import AssetKey
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.datasets import EPF_FR_BE
from forecasting_pipeline.modeling.catalog import load_catalog
from forecasting_pipeline_tests.conftest import TINY_GLOBAL_MODEL, ingest_and_forecast

LATEST_WINDOW = "2016-10-30"  # the bundled prices end on Monday 2016-10-31 23:00
SERIES = ["BE", "FR"]
HORIZON = 24  # the catalog's hourly horizon
FAMILIES = sorted(f.name for f in (*load_catalog().neural(), *load_catalog().local()))


@pytest.fixture(scope="module")
def pipeline(deployment, instance):
    return ingest_and_forecast(deployment, instance)


def test_landed_series_become_partitions_and_all_windows_are_ingested(pipeline, instance, db_engine):
    ingested, _ = pipeline
    assert sorted(ingested.new_series) == SERIES
    assert list(instance.get_dynamic_partitions("series")) == SERIES
    assert ingested.latest_window == LATEST_WINDOW
    # The history slice and four weekly windows, for both series: ten cells, one rectangle run.
    assert ingested.cells == 10
    (landed,) = ingested.files
    assert (landed.status, landed.rows_read, landed.rows_accepted, landed.rows_quarantined) == (
        "staged",
        32160,
        32160,
        0,
    )

    expected = EPF_FR_BE.load().groupby("unique_id").size()
    with db_engine.connect() as conn:
        stored = dict(
            conn.execute(
                text("SELECT series_id, count(*) FROM forecasting.observations GROUP BY series_id")
            ).all()
        )
        # Everything before the first window is the history slice, not hundreds of partitions.
        history = conn.execute(
            text("SELECT min(ts), max(ts) FROM forecasting.observations WHERE window_key = '2016-10-02'")
        ).one()
        drivers = conn.execute(
            text(
                "SELECT drivers FROM forecasting.observations WHERE series_id='FR' AND ts='2015-01-01 00:00'"
            )
        ).scalar_one()
    assert stored == {"BE": expected["BE"], "FR": expected["FR"]}
    assert history == (
        pd.Timestamp("2015-01-01").to_pydatetime(),
        pd.Timestamp("2016-10-08 23:00").to_pydatetime(),
    )
    assert drivers == {"gen_forecast": 76905.0, "system_load": 74812.0, "week_day": 3.0}


def test_every_series_gets_forecasts_with_nested_intervals(pipeline, db_engine):
    with db_engine.connect() as conn:
        rows = pd.read_sql(
            text("SELECT * FROM forecasting.predictions WHERE window_key = :w AND model_name = ANY(:f)"),
            conn,
            params={"w": LATEST_WINDOW, "f": FAMILIES},
        )
    assert len(rows) == len(SERIES) * len(FAMILIES) * HORIZON
    assert set(rows.groupby(["series_id", "model_name"]).size().to_dict().items()) == {
        ((s, m), HORIZON) for s in SERIES for m in FAMILIES
    }
    assert (rows["freq_group"] == "hourly").all() and rows["model_id"].notna().all()
    cutoff = pd.Timestamp("2016-10-31 23:00")
    assert (rows["cutoff"] == cutoff).all()
    assert (rows["ds"] == cutoff + pd.to_timedelta(rows["step"], unit="h")).all()
    assert (rows["lo_95"] <= rows["lo_80"]).all() and (rows["lo_80"] <= rows["hi_80"]).all()
    assert (rows["hi_80"] <= rows["hi_95"]).all()
    naive = rows[rows["model_name"] == "SeasonalNaive"]
    assert ((naive["lo_80"] <= naive["yhat"]) & (naive["yhat"] <= naive["hi_80"])).all()
    # The seasonal naive forecast repeats the last observed day: check against the raw data.
    data = EPF_FR_BE.load()
    last_day = data[(data["unique_id"] == "FR") & (data["ds"] >= "2016-10-31")].sort_values("ds")["y"]
    fr = naive[naive["series_id"] == "FR"].sort_values("step")["yhat"]
    assert fr.to_numpy() == pytest.approx(last_day.to_numpy())


def test_predictions_join_to_the_dagster_runs_and_events_that_made_them(pipeline, db_engine, instance):
    _, forecasted = pipeline
    with db_engine.connect() as conn:
        joined = conn.execute(
            text(
                """
            SELECT DISTINCT p.dagster_run_id, r.status, fr.code_version
            FROM forecasting.predictions p
            JOIN public.runs r ON r.run_id = p.dagster_run_id
            JOIN forecasting.runs fr ON fr.dagster_run_id = p.dagster_run_id
            WHERE p.window_key = :w
            """
            ),
            {"w": LATEST_WINDOW},
        ).all()
        events = (
            conn.execute(
                text(
                    """
            SELECT partition FROM event_logs
            WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = :key AND run_id = :run
            ORDER BY partition
            """
                ),
                {"key": '["predictions"]', "run": forecasted.forecast_run_id},
            )
            .scalars()
            .all()
        )
    # Every family writes its forecasts from the training run; the ensembles come from the
    # backtest in the forecast run, which publishes the champions.
    assert sorted((run_id, status) for run_id, status, _ in joined) == sorted(
        [(forecasted.train_run_id, "SUCCESS"), (forecasted.forecast_run_id, "SUCCESS")]
    )
    assert events == [f"{LATEST_WINDOW}|{s}" for s in SERIES]
    ingested = instance.get_materialized_partitions(AssetKey("raw_observations"))
    assert {f"{w}|{s}" for w in ("2016-10-02", "2016-10-23", LATEST_WINDOW) for s in SERIES} <= set(ingested)


def test_global_model_is_registered_with_its_lineage_and_tracked_in_mlflow(pipeline, db_engine, deployment):
    from mlflow import MlflowClient

    _, forecasted = pipeline
    with db_engine.connect() as conn:
        model = (
            conn.execute(
                text("SELECT * FROM forecasting.models WHERE scope = 'global' AND dagster_run_id = :run"),
                {"run": forecasted.train_run_id},
            )
            .mappings()
            .one()
        )
        loss = conn.execute(
            text("SELECT value FROM forecasting.metrics WHERE model_id = :id AND metric = 'train_loss'"),
            {"id": model["model_id"]},
        ).scalar_one()
        stats = (
            conn.execute(
                text("SELECT * FROM forecasting.resource_stats WHERE model_id = :id"),
                {"id": model["model_id"]},
            )
            .mappings()
            .one()
        )
    assert (model["model_name"], model["freq_group"], model["window_key"]) == (
        "NHITS",
        "hourly",
        LATEST_WINDOW,
    )
    # The accelerator resource's own choice: CUDA on a GPU host, the CPU elsewhere.
    from forecasting_pipeline.resources.accelerator import AcceleratorResource

    assert model["device"] == AcceleratorResource().resolve_device() == stats["device"]
    assert stats["stage"] == "training" and stats["wall_seconds"] > 0 and stats["peak_rss_mb"] > 100
    assert model["params"]["max_steps"] == TINY_GLOBAL_MODEL["max_steps"]
    # The drivers of the bundled data are used; no future values exist after its last day.
    assert model["params"]["hist_exog"] == ["gen_forecast", "system_load", "week_day"]
    assert model["params"]["futr_exog"] == []
    assert loss > 0

    client = MlflowClient(tracking_uri=deployment.settings.default_mlflow_tracking_uri)
    run = client.get_run(model["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_steps"] == str(TINY_GLOBAL_MODEL["max_steps"])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == TINY_GLOBAL_MODEL["max_steps"]
    assert history[-1].value == pytest.approx(loss)
    version = client.get_model_version("NHITS-hourly", model["registry_version"])
    assert version.run_id == run.info.run_id
    assert {
        key: version.tags[key] for key in ("dagster_run_id", "partition_key", "code_version", "data_version")
    } == {
        "dagster_run_id": forecasted.train_run_id,
        "partition_key": LATEST_WINDOW,
        "code_version": model["code_version"],
        "data_version": model["data_version"],
    }
    # Weights are stored once: in the MLflow run's artifacts, which the model row points at.
    assert model["artifact_uri"] == f"{run.info.artifact_uri}/model"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/configuration.json"}
    assert not (deployment.settings.home / "models").exists()


def test_the_registered_model_reloads_and_predicts_what_was_stored(pipeline, db_engine, deployment):
    import mlflow
    from neuralforecast import NeuralForecast

    from forecasting_pipeline.modeling.forecast_frame import catalog_forecast_frame, last_timestamps

    with db_engine.connect() as conn:
        model = (
            conn.execute(
                text(
                    "SELECT * FROM forecasting.models WHERE model_name = 'NHITS' "
                    "ORDER BY model_id DESC LIMIT 1"
                )
            )
            .mappings()
            .one()
        )
        stored = pd.read_sql(
            text("SELECT * FROM forecasting.predictions WHERE model_id = :id ORDER BY series_id, step"),
            conn,
            params={"id": model["model_id"]},
        )
    mlflow.set_registry_uri(deployment.settings.default_mlflow_tracking_uri)
    mlflow.set_tracking_uri(deployment.settings.default_mlflow_tracking_uri)
    folder = mlflow.artifacts.download_artifacts(f"models:/NHITS-hourly/{model['registry_version']}")
    reloaded = NeuralForecast.load(folder)
    panel = pd.read_parquet(deployment.settings.storage_dir / "training_panel" / f"{LATEST_WINDOW}.parquet")
    columns = ["unique_id", "ds", "y", *model["params"]["hist_exog"]]
    raw = reloaded.predict(df=panel[columns])
    spec = load_catalog().family("NHITS")
    again = catalog_forecast_frame(raw, spec, model["model_version"], last_timestamps(panel))
    again = again.sort_values(["unique_id", "step"]).reset_index(drop=True)
    assert len(again) == len(stored) == len(SERIES) * HORIZON
    for column in ("yhat", "lo_80", "hi_80", "lo_95", "hi_95"):
        assert again[column].to_numpy() == pytest.approx(stored[column].to_numpy(), rel=1e-5), column


def test_rerunning_ingest_and_forecast_adds_no_rows(pipeline, deployment, instance, db_engine):
    counts_sql = (
        "SELECT (SELECT count(*) FROM forecasting.observations),"
        " (SELECT count(*) FROM forecasting.predictions),"
        " (SELECT count(*) FROM forecasting.backtest_folds),"
        " (SELECT count(*) FROM forecasting.published_forecasts),"
        " (SELECT count(*) FROM forecasting.champion_events)"
    )
    with db_engine.connect() as conn:
        before = conn.execute(text(counts_sql)).one()
    _, second = ingest_and_forecast(deployment, instance)
    with db_engine.connect() as conn:
        after = conn.execute(text(counts_sql)).one()
        run_ids = set(
            conn.execute(text("SELECT DISTINCT dagster_run_id FROM forecasting.predictions")).scalars()
        )
    assert after == before
    # The same origin was forecast again: its rows were replaced, none added.
    assert run_ids == {second.train_run_id, second.forecast_run_id}


def test_training_panel_holds_all_history_up_to_its_window(pipeline, instance, deployment):
    from forecasting_pipeline.definitions import defs

    job = defs.resolve_job_def("train_models")
    result = job.execute_in_process(
        instance=instance, partition_key="2016-10-16", asset_selection=[AssetKey("training_panel")]
    )
    assert result.success
    panel = pd.read_parquet(deployment.settings.storage_dir / "training_panel" / "2016-10-16.parquet")
    data = EPF_FR_BE.load()
    expected = data[data["ds"] < "2016-10-23"].groupby("unique_id").size().to_dict()
    assert panel.groupby("unique_id").size().to_dict() == expected
    assert panel["ds"].max() == pd.Timestamp("2016-10-22 23:00")


def test_a_failing_step_is_reported_with_its_error_and_run(pipeline, instance):
    with pytest.raises(operations.PipelineRunError, match=r"global_models: .*NOPE"):
        operations.forecast(
            instance,
            LATEST_WINDOW,
            SERIES,
            global_model_config={"families": ["NOPE"], "max_steps": 1},
            search_config={"families": []},
            local_model_config={"families": ["SeasonalNaive"]},
        )


def _latest_materialization(instance, asset: str, partition: str):
    from dagster import AssetRecordsFilter

    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"no materialization of {asset} {partition}"
    return records[0].asset_materialization.metadata


def test_each_partition_reports_its_own_counts_and_the_predictions_page_a_fan_chart(
    pipeline, instance, db_engine
):
    import base64
    import io
    import re

    import matplotlib.image

    with db_engine.connect() as conn:
        expected = dict(
            conn.execute(
                text("SELECT series_id, rows FROM forecasting.cell_versions WHERE window_key = :w"),
                {"w": LATEST_WINDOW},
            ).all()
        )
        published = dict(
            conn.execute(
                text(
                    "SELECT series_id, count(*) FROM forecasting.published_forecasts "
                    "WHERE window_key = :w GROUP BY series_id"
                ),
                {"w": LATEST_WINDOW},
            ).all()
        )
        folds = dict(
            conn.execute(
                text(
                    "SELECT series_id, count(*) FROM forecasting.backtest_folds "
                    "WHERE window_key = :w GROUP BY series_id"
                ),
                {"w": LATEST_WINDOW},
            ).all()
        )
    for series_id in SERIES:
        key = f"{LATEST_WINDOW}|{series_id}"
        raw = _latest_materialization(instance, "raw_observations", key)
        assert raw["observations"].value == expected[series_id]  # the cell's rows, not the run's total
        backtest = _latest_materialization(instance, "backtest_folds", key)
        assert backtest["fold_rows"].value == folds[series_id]
        assert backtest["best_candidate"].value in FAMILIES or backtest["best_candidate"].value.startswith(
            "ensemble"
        )
        page = _latest_materialization(instance, "predictions", key)
        assert page["published_rows"].value == published[series_id] == HORIZON
        chart = page["fan_chart"].value
        assert series_id in chart
        png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", chart).group(1))
        pixels = matplotlib.image.imread(io.BytesIO(png))
        assert pixels.shape[0] > 100 and pixels.std() > 0.05  # a drawn plot, not a blank image
    # Run-level metadata keeps the run's view: the leaderboard and the error by horizon step.
    selection = _latest_materialization(instance, "model_selection", f"{LATEST_WINDOW}|FR")
    assert r"model\_name" in selection["leaderboard"].value  # Markdown-escaped, shown as model_name
    assert "data:image/png;base64," in backtest["error_by_horizon_step"].value
