"""The README's main command, as a user runs it: `forecasting-pipeline demo`, twice."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from sqlalchemy import create_engine, text

from forecasting_pipeline_tests.conftest import _scratch_dir


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "forecasting_pipeline.cli", "demo", "--max-steps", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_forecasts_every_series_and_a_second_run_adds_no_rows(fresh_database):
    home = _scratch_dir("fp-cli-")
    url = fresh_database()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(FP_HOME=str(home), FP_DATABASE_URL=url)

    first = _demo(env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    for expected in (
        "[1/5] database",
        "ingested windows 2016-10-02 … 2016-10-30",
        "Forecasts of window 2016-10-30",
        "forecasting-pipeline ui",
    ):
        assert expected in first.stdout
    table = [line.split() for line in first.stdout.splitlines() if line.startswith(("BE ", "FR "))]
    assert sorted((row[0], row[1]) for row in table) == [
        ("BE", "NHITS"),
        ("BE", "SeasonalNaive"),
        ("FR", "NHITS"),
        ("FR", "SeasonalNaive"),
    ]

    engine = create_engine(url)
    counts = (
        "SELECT (SELECT count(*) FROM forecasting.predictions),"
        " (SELECT count(*) FROM forecasting.observations),"
        " (SELECT count(DISTINCT partition) FROM event_logs"
        "  WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        " AND asset_key = '[\"raw_observations\"]')"
    )
    with engine.connect() as conn:
        after_first = conn.execute(text(counts)).one()
    assert after_first == (2 * 2 * 24, 32_160, 5 * 2)  # 5 windows × 2 series ingested

    second = _demo(env)
    assert second.returncode == 0, second.stderr[-3000:]
    with engine.connect() as conn:
        assert conn.execute(text(counts)).one() == after_first
    engine.dispose()
    shutil.rmtree(home, ignore_errors=True)
