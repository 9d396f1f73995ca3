"""User story: land the bundled dataset → series become partitions → observations ingested per
series × window → a global and a local model trained → forecasts with intervals stored, traced to
the Dagster runs that made them; and re-running changes nothing but versions."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
from dagster import AssetKey
from sqlalchemy import text

from forecasting_pipeline import operations
from forecasting_pipeline.datasets import EPF_FR_BE
from forecasting_pipeline_tests.conftest import TINY_GLOBAL_MODEL, ingest_and_forecast

LATEST_WINDOW = "2016-10-30"  # the bundled prices end on Monday 2016-10-31 23:00
SERIES = ["BE", "FR"]
HORIZON = 24


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
            text("SELECT * FROM forecasting.predictions WHERE window_key = :w"),
            conn,
            params={"w": LATEST_WINDOW},
        )
    assert len(rows) == len(SERIES) * 2 * HORIZON
    assert set(rows.groupby(["series_id", "model_name"]).size().to_dict().items()) == {
        ((s, m), HORIZON) for s in SERIES for m in ("NHITS", "SeasonalNaive")
    }
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
    assert [(run_id, status) for run_id, status, _ in joined] == [(forecasted.forecast_run_id, "SUCCESS")]
    assert events == [f"{LATEST_WINDOW}|{s}" for s in SERIES]
    ingested = instance.get_materialized_partitions(AssetKey("raw_observations"))
    assert {f"{w}|{s}" for w in ("2016-10-02", "2016-10-23", LATEST_WINDOW) for s in SERIES} <= set(ingested)


def test_global_model_is_registered_with_its_artefact_and_tracked_in_mlflow(pipeline, db_engine, deployment):
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
    assert model["model_name"] == "NHITS" and model["window_key"] == LATEST_WINDOW
    # The accelerator resource's own choice: CUDA on a GPU host, the CPU elsewhere.
    from forecasting_pipeline.resources.accelerator import AcceleratorResource

    assert model["device"] == AcceleratorResource().resolve_device()
    assert model["params"]["max_steps"] == TINY_GLOBAL_MODEL["max_steps"]
    artefact = Path(urlparse(model["artifact_uri"]).path)
    assert any(artefact.glob("*.safetensors")), f"no weights saved in {artefact}"
    assert loss > 0

    client = MlflowClient(tracking_uri=deployment.settings.default_mlflow_tracking_uri)
    run = client.get_run(model["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_steps"] == str(TINY_GLOBAL_MODEL["max_steps"])
    assert run.data.tags["dagster_run_id"] == forecasted.train_run_id
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == TINY_GLOBAL_MODEL["max_steps"]
    assert history[-1].value == pytest.approx(loss)
    version = client.get_model_version("NHITS", model["registry_version"])
    assert version.run_id == run.info.run_id
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/configuration.json"}


def test_rerunning_ingest_and_forecast_adds_no_rows(pipeline, deployment, instance, db_engine):
    counts_sql = (
        "SELECT (SELECT count(*) FROM forecasting.observations),"
        " (SELECT count(*) FROM forecasting.predictions)"
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
    assert run_ids == {second.forecast_run_id}  # the re-run replaced the rows, it did not add


def test_training_panel_holds_all_history_up_to_its_window(pipeline, instance, deployment):
    from forecasting_pipeline.definitions import defs

    job = defs.resolve_job_def("train_global_models")
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
    with pytest.raises(operations.PipelineRunError, match=r"global_models: .*unknown global model 'NOPE'"):
        operations.forecast(instance, LATEST_WINDOW, SERIES, global_model_config={"model": "NOPE"})
