"""The whole automation through a real `dagster-daemon`: files land, predictions appear.

Marked `slow` (minutes, a separate CI step): the daemon evaluates `new_data_sensor`, its run
coordinator and launcher start the ingest runs in their own processes, `raw_observations`
queues the changed cells, `retraining_cascade_sensor` submits one asset backfill, and the
backfill daemon runs it, level by level, until the new series has published forecasts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from dagster import DagsterRunStatus, SkipReason, build_sensor_context

from forecasting_pipeline.automation.new_data import new_data_sensor
from forecasting_pipeline.definitions import defs
from forecasting_pipeline.modeling.catalog import BUNDLED_CATALOG
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline_tests import dagster_processes
from forecasting_pipeline_tests.automation_story import (
    NEW_SERIES,
    land_first_weeks,
    land_new_weeks_and_series,
)
from forecasting_pipeline_tests.conftest import query_frame, scalar

pytestmark = pytest.mark.slow
TIMEOUT_SECONDS = 25 * 60
TINY_PRESET = {
    "description": "test size",
    "families": "enabled",
    "trials": 1,
    "max_steps": 5,
    "n_windows": 2,
    "ensembles": False,
    "time_budget_minutes": 5,
}


def _tiny_catalog(folder: Path) -> Path:
    catalog = yaml.safe_load(Path(BUNDLED_CATALOG).read_text())
    catalog["presets"]["tiny"] = TINY_PRESET
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return path


@pytest.fixture(scope="module")
def daemon(deployment, instance, db_engine, tmp_path_factory):
    """The first weeks ingested by the CLI path; then a daemon watching the landing folder."""
    from forecasting_pipeline import operations

    landing = deployment.settings.landing_dir
    os.environ["FP_LANDING_DIR"] = str(landing)
    land_first_weeks(landing)
    operations.ingest(instance, deployment, progress=lambda _: None)
    with db_engine.begin() as conn:  # as if those weeks had been forecast already
        conn.exec_driver_sql("DELETE FROM forecasting.cascade_queue")
    folder = tmp_path_factory.mktemp("daemon")
    env = {
        **os.environ,
        "FP_AUTOMATION": "on",
        "FP_MODEL_CATALOG": str(_tiny_catalog(folder)),
        "FP_PRESET": "tiny",
        "FP_LANDING_DIR": str(landing),
        "MLFLOW_LOGGING_LEVEL": "WARNING",
    }
    log = (folder / "daemon.log").open("w")
    process = dagster_processes.start(
        [str(dagster_processes.BIN / "dagster-daemon"), "run", "-w", dagster_processes.WORKSPACE], env, log
    )
    yield process, folder / "daemon.log"
    dagster_processes.stop(process)
    log.close()
    os.environ.pop("FP_LANDING_DIR", None)


def _published(db_engine, series_id: str) -> int:
    return scalar(
        db_engine, "SELECT count(*) FROM forecasting.published_forecasts WHERE series_id = :s", s=series_id
    )


def test_a_new_series_landed_in_the_folder_ends_with_predictions(daemon, deployment, instance, db_engine):
    process, log = daemon
    land_new_weeks_and_series(deployment.settings.landing_dir)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while _published(db_engine, NEW_SERIES) == 0:
        failures = query_frame(db_engine, "SELECT job_name, message FROM forecasting.run_failures")
        assert failures.empty, failures.to_dict("records")
        assert process.poll() is None, log.read_text()[-5000:]
        assert time.monotonic() < deadline, log.read_text()[-5000:]
        time.sleep(10)

    window = scalar(
        db_engine,
        "SELECT max(window_key) FROM forecasting.published_forecasts WHERE series_id = :s",
        s=NEW_SERIES,
    )
    assert window == "2016-10-30"
    # The ingest runs came from the sensor and ran in their own processes via the run launcher.
    sensor_runs = [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == "new_data_sensor"]
    assert sensor_runs and all(r.job_name == "ingest_observations" for r in sensor_runs)
    assert all(r.status == DagsterRunStatus.SUCCESS and r.remote_job_origin is not None for r in sensor_runs)
    # One cascade backfill followed, over exactly the changed cells' downstream.
    (backfill,) = instance.get_backfills()
    assert backfill.tags["forecasting-pipeline/trigger"] == "retraining_cascade_sensor"
    # Runs follow partition definitions, not keys: far fewer runs than partitions materialized.
    backfill_runs = [r for r in instance.get_runs() if r.tags.get("dagster/backfill") == backfill.backfill_id]
    cells = backfill.asset_backfill_data.target_subset.num_partitions_and_non_partitioned_assets
    assert 0 < len(backfill_runs) < cells / 2
    # A second evaluation of the sensor asks for nothing.
    second = new_data_sensor(
        build_sensor_context(
            instance=instance,
            sensor_name="new_data_sensor",
            resources={"database": DatabaseResource(url=deployment.database_url)},
            definitions=defs,
        )
    )
    assert isinstance(second, SkipReason)
