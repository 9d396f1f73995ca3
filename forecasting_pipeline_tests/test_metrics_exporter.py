"""`forecasting-pipeline metrics` scraped over HTTP after the demo, a week of actuals and a bad file.

The deployment is built the way a user builds it (the CLI in subprocesses on a fresh database),
so the exporter sees real runs, steps, checks, quarantined rows and scored forecasts; every value
scraped is compared with what the domain tables and Dagster's event log hold.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterRunStatus, RunsFilter
from dagster._daemon.types import DaemonHeartbeat
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from forecasting_pipeline.monitoring.catalogue import BY_NAME
from forecasting_pipeline_tests.actuals import land_actuals
from forecasting_pipeline_tests.cli_runs import run_cli, user_env
from forecasting_pipeline_tests.conftest import _scratch_dir, query_frame

WINDOW = "2016-10-30"  # the demo's forecast origin; actuals for its horizon land in it
SCRAPE_TIMEOUT = 60
BAD_ROWS = [
    "FR,2016-11-03T00:00:00,n/a,1,2,4",
    "FR,2016-11-03T01:00:00,,1,2,4",
    "FR,not-a-date,41,1,2,4",
    "BE,2016-11-03T03:00:00,inf,1,2,4",
]


def _check(result: subprocess.CompletedProcess, *, expect_failure: bool = False) -> str:
    assert (result.returncode != 0) == expect_failure, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _late_file_with_bad_rows(landing: Path) -> None:
    """A day of FR's prices with a few refused rows: enough of them to fail blocking checks."""
    good = [f"FR,2016-11-02T{hour:02d}:00:00,40.5,50000,60000,2" for hour in range(24)]
    header = "unique_id,ds,y,gen_forecast,system_load,week_day"
    (landing / "late_2016-11-02.csv").write_text("\n".join([header, *good, *BAD_ROWS]) + "\n")


@pytest.fixture(scope="module")
def deployment_after_demo(fresh_database):
    """The demo, actuals for its forecasts (BE 20% above them), their scoring, then a file whose
    bad rows are quarantined and whose batch is held by the blocking checks (a failed run)."""
    home = _scratch_dir("fp-metrics-")
    url = fresh_database()
    env = user_env(home, url)
    _check(run_cli(env, "demo", "--max-steps", "5", "--trials", "1"))
    engine = create_engine(url)
    land_actuals(engine, home / "landing", WINDOW, {"BE": 1.2}, "actuals_2016-11-01.csv")
    _check(run_cli(env, "ingest"))
    _check(run_cli(env, "backfill", "--from", WINDOW, "--to", WINDOW, "--asset", "forecast_accuracy"))
    _late_file_with_bad_rows(home / "landing")
    held = _check(run_cli(env, "ingest"), expect_failure=True)
    assert "blocking asset checks failed" in held
    yield home, url, env, engine
    engine.dispose()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def exporter_url(deployment_after_demo):
    """`forecasting-pipeline metrics` started as a user starts it, on a port the system picks."""
    env = deployment_after_demo[2]
    exporter = subprocess.Popen(
        [sys.executable, "-m", "forecasting_pipeline.cli", "metrics", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = exporter.stdout.readline()  # printed once it listens
        match = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", line)
        assert match, line + (exporter.stdout.read() if exporter.poll() is not None else "")
        yield match.group(0)
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)


def _scrape(url: str) -> dict[str, dict[frozenset, float]]:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return _samples(response.read().decode())


@pytest.fixture(scope="module")
def scraped(exporter_url):
    return _scrape(exporter_url)


def _samples(body: str) -> dict[str, dict[frozenset, float]]:
    """metric name -> {label set -> value}; counters under their `_total` name."""
    samples: dict[str, dict[frozenset, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples[sample.name][frozenset(sample.labels.items())] = sample.value
    return samples


def _by(samples: dict[frozenset, float], label: str, **fixed: str) -> dict[str, float]:
    """Values keyed by one label, among the samples carrying the `fixed` labels."""
    wanted = set(fixed.items())
    return {dict(labels)[label]: value for labels, value in samples.items() if wanted <= labels}


def test_every_metric_served_is_declared_with_its_labels(scraped):
    assert set(scraped) <= set(BY_NAME)
    for name, samples in scraped.items():
        for labels in samples:
            assert {key for key, _ in labels} == set(BY_NAME[name].labels), name
    assert all(value == 0 for value in scraped["fp_exporter_section_errors_total"].values())


def test_runs_agree_with_the_run_storage(scraped, deployment_after_demo):
    _, url, _, engine = deployment_after_demo
    runs = query_frame(engine, "SELECT pipeline_name AS job, status, count(*) AS n FROM runs GROUP BY 1, 2")
    ended = runs[runs.status.isin(["SUCCESS", "FAILURE", "CANCELED"])]
    served = {(dict(k)["job"], dict(k)["status"]): v for k, v in scraped["fp_dagster_runs_total"].items()}
    assert {key: n for key, n in served.items() if n} == {(r.job, r.status): r.n for r in ended.itertuples()}
    # Each job that ran is served with every ended status, 0 until the first such run.
    assert set(served) == {(job, s) for job in set(runs.job) for s in ("SUCCESS", "FAILURE", "CANCELED")}
    assert not scraped.get("fp_dagster_runs_active")  # nothing runs after the CLI returned
    # The held batch failed its ingestion run: the job's newest run failed, the others succeeded.
    assert served[("ingest_observations", "FAILURE")] == 1
    last_failed = _by(scraped["fp_dagster_job_last_run_failed"], "job")
    assert last_failed.pop("ingest_observations") == 1 and set(last_failed.values()) == {0}
    failures = _dagster(url).runs.get_runs_count(RunsFilter(statuses=[DagsterRunStatus.FAILURE]))
    assert sum(v for (_, status), v in served.items() if status == "FAILURE") == failures


def test_step_durations_agree_with_the_event_log(scraped, deployment_after_demo):
    dagster = _dagster(deployment_after_demo[1])
    (run,) = dagster.runs.get_run_records(RunsFilter(job_name="train_models"))
    stats = {
        s.step_key: s.end_time - s.start_time
        for s in dagster.events.get_step_stats_for_run(run.dagster_run.run_id)
    }
    longest = _by(scraped["fp_dagster_step_duration_seconds"], "step", quantile="1")
    # train_models ran once, so its steps' longest executions are that run's.
    for step in ("hyperparameter_search", "global_models", "local_models"):
        assert longest[step] == pytest.approx(stats[step], abs=0.01)
    slowest_run = _by(scraped["fp_dagster_run_duration_seconds"], "job", quantile="1")["train_models"]
    assert slowest_run == pytest.approx(run.end_time - run.start_time, abs=0.01)


def test_rows_and_quarantine_agree_with_the_tables(scraped, deployment_after_demo):
    engine = deployment_after_demo[3]
    observations = query_frame(engine, "SELECT count(*) AS n FROM forecasting.observations").n[0]
    assert scraped["fp_rows_ingested_total"][frozenset()] == observations == 32_160 + 48
    quarantined = query_frame(
        engine, "SELECT reason, count(*) AS n FROM forecasting.quarantine GROUP BY reason"
    )
    assert quarantined.n.sum() == len(BAD_ROWS)
    assert _by(scraped["fp_rows_quarantined_total"], "reason") == dict(
        zip(quarantined.reason, quarantined.n, strict=True)
    )
    files = query_frame(engine, "SELECT status, count(*) AS n FROM forecasting.landed_files GROUP BY status")
    assert (
        _by(scraped["fp_landed_files"], "status")
        == dict(zip(files.status, files.n, strict=True))
        == {"ingested": 2, "held": 1}
    )
    assert _by(scraped["fp_rows_pending"], "status") == {"held": 24}


def test_blocking_checks_that_failed_are_served_as_failing(scraped):
    passed = scraped["fp_asset_check_passed"]
    failing = {dict(k)["check"] for k, v in passed.items() if v == 0}
    assert failing == {"finite_targets", "timestamps_parse"}
    assert all(dict(k)["blocking"] == "true" for k, v in passed.items() if v == 0)
    assert _by(passed, "check")["no_gaps"] == 1 and _by(passed, "blocking", check="no_gaps") == {"false": 1}


def test_asset_freshness_agrees_with_the_event_log(scraped, deployment_after_demo):
    events = _dagster(deployment_after_demo[1]).events
    served = _by(scraped["fp_asset_last_materialization_timestamp_seconds"], "asset")
    keys = [AssetKey(asset) for asset in ("raw_observations", "predictions", "forecast_accuracy")]
    for key, event in events.get_latest_materialization_events(keys).items():
        assert served[key.to_user_string()] == pytest.approx(event.timestamp, abs=1e-3)
    materialized = _by(scraped["fp_asset_partitions"], "asset", state="materialized")
    assert materialized["raw_observations"] == 10  # 5 windows × 2 series
    # The actuals changed both cells of the demo's window after their forecasts were made.
    stale = _by(scraped["fp_asset_stale_partitions"], "asset")
    assert stale["predictions"] == 2 and stale["global_models"] == 1 and stale["raw_observations"] == 0


def test_accuracy_agrees_with_the_scored_forecasts(scraped, deployment_after_demo):
    engine = deployment_after_demo[3]
    scored = query_frame(
        engine, "SELECT * FROM forecasting.forecast_accuracy WHERE champion AND window_key = :w", w=WINDOW
    )
    assert sorted(scored.series_id) == ["BE", "FR"]

    def weighted(column: str) -> float:
        return float((scored[column] * scored.points).sum() / scored.points.sum())

    assert scraped["fp_forecast_mase"][frozenset({("freq_group", "hourly")})] == pytest.approx(
        weighted("mase")
    )
    assert scraped["fp_forecast_smape"][frozenset({("freq_group", "hourly")})] == pytest.approx(
        weighted("smape")
    )
    backtest = scraped["fp_forecast_backtest_mase"][frozenset({("freq_group", "hourly")})]
    assert backtest == pytest.approx(weighted("backtest_mase"))
    coverage = _by(scraped["fp_forecast_interval_coverage"], "level", freq_group="hourly")
    assert coverage == pytest.approx({"80": weighted("coverage_80"), "95": weighted("coverage_95")})
    assert _by(scraped["fp_forecast_interval_nominal_coverage"], "level") == {"80": 0.8, "95": 0.95}
    # FR's actuals are its forecast: no error; BE's are 20% above: its error is the whole MASE.
    assert scored.set_index("series_id").mase["FR"] == pytest.approx(0, abs=1e-9)
    window_start = pd.Timestamp(WINDOW, tz="UTC").timestamp()
    assert scraped["fp_forecast_newest_scored_window_timestamp_seconds"][frozenset()] == window_start
    assert scraped["fp_drift_flagged_series"][frozenset()] == 0  # nobody ran the drift sensor


def test_dataset_freshness_and_training_cost_agree_with_the_tables(scraped, deployment_after_demo):
    engine = deployment_after_demo[3]
    series = query_frame(
        engine,
        "SELECT dataset_id, count(*) AS n, extract(epoch FROM max(updated_at)) AS updated "
        "FROM forecasting.series GROUP BY 1",
    )
    assert _by(scraped["fp_dataset_series"], "dataset") == dict(zip(series.dataset_id, series.n, strict=True))
    updated = _by(scraped["fp_dataset_last_update_timestamp_seconds"], "dataset")
    assert updated == pytest.approx(dict(zip(series.dataset_id, series.updated.astype(float), strict=True)))
    assert time.time() - max(updated.values()) < 3600
    assert scraped["fp_dataset_stale_after_seconds"][frozenset()] == 192 * 3600
    costs = query_frame(
        engine,
        "SELECT DISTINCT ON (stage, model_name, freq_group) stage, model_name, wall_seconds "
        "FROM forecasting.resource_stats ORDER BY stage, model_name, freq_group, recorded_at DESC",
    )
    served = {(dict(k)["stage"], dict(k)["model"]): v for k, v in scraped["fp_model_fit_seconds"].items()}
    assert served == pytest.approx({(r.stage, r.model_name): r.wall_seconds for r in costs.itertuples()})
    assert {dict(k)["device"] for k in scraped["fp_model_fit_seconds"]} == {"cpu"} or _cuda_host()


@dataclass
class DagsterStorage:
    """Dagster's own storage classes on the deployment's database: what the UI reads."""

    runs: PostgresRunStorage
    events: PostgresEventLogStorage


def _dagster(url: str) -> DagsterStorage:
    return DagsterStorage(
        PostgresRunStorage(url, should_autocreate_tables=False),
        PostgresEventLogStorage(url, should_autocreate_tables=False),
    )


def _cuda_host() -> bool:
    import torch

    return torch.cuda.is_available()


def test_a_later_scrape_counts_new_quarantined_rows_and_daemon_heartbeats(
    scraped, exporter_url, deployment_after_demo
):
    home, url, env, engine = deployment_after_demo
    assert "fp_dagster_daemon_heartbeat_age_seconds" not in scraped  # no daemon ever ran here
    (home / "landing" / "more_bad_rows.csv").write_text(
        "unique_id,ds,y\nBE,2016-11-04T00:00:00,oops\nBE,2016-11-04T01:00:00,12\n"
    )
    _check(run_cli(env, "ingest"), expect_failure=True)
    beat = DaemonHeartbeat(time.time() - 600, "SENSOR", "test-daemon", errors=[])
    _dagster(url).runs.add_daemon_heartbeat(beat)

    later = _scrape(exporter_url)
    quarantined = query_frame(
        engine, "SELECT reason, count(*) AS n FROM forecasting.quarantine GROUP BY reason"
    )
    assert quarantined.n.sum() > len(BAD_ROWS)
    served = _by(later["fp_rows_quarantined_total"], "reason")
    assert served == dict(zip(quarantined.reason, quarantined.n, strict=True))
    age = later["fp_dagster_daemon_heartbeat_age_seconds"][frozenset({("daemon", "SENSOR")})]
    assert 600 <= age < 900
    assert later["fp_dagster_daemon_errors"][frozenset({("daemon", "SENSOR")})] == 0


def test_a_failing_section_is_left_out_and_counted_while_the_others_are_served(
    scraped, exporter_url, deployment_after_demo
):
    engine = deployment_after_demo[3]
    with engine.begin() as conn:  # as a database not migrated to the drift tables would be
        conn.exec_driver_sql("ALTER TABLE forecasting.drift_events RENAME TO drift_events_away")
    try:
        broken = _scrape(exporter_url)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE forecasting.drift_events_away RENAME TO drift_events")
    errors = _by(broken["fp_exporter_section_errors_total"], "section")
    assert errors["drift"] >= 1 and {s for s, n in errors.items() if n} == {"drift"}
    assert "fp_drift_events_total" not in broken and "fp_drift_flagged_series" not in broken
    assert broken["fp_rows_ingested_total"] == scraped["fp_rows_ingested_total"]
    assert _by(broken["fp_dagster_runs_total"], "job", status="SUCCESS") == _by(
        scraped["fp_dagster_runs_total"], "job", status="SUCCESS"
    )
    healed = _scrape(exporter_url)
    assert healed["fp_drift_events_total"][frozenset()] == 0
