"""User story: a landed file with bad rows → good rows are stored, every bad row is kept in
quarantine with its reason, and ingesting the same file again adds nothing."""

from __future__ import annotations

import pandas as pd
from dagster import materialize
from sqlalchemy import text

from forecasting_pipeline.assets.ingest import raw_observations
from forecasting_pipeline.definitions import build_resources
from forecasting_pipeline.ingestion.registration import register_landed_series
from forecasting_pipeline.resources.database import DatabaseResource
from forecasting_pipeline.resources.landing import LandingZoneResource

GOOD_HOURS = 30
WINDOW = "2016-10-30"


def _landed_file(folder) -> None:
    stamps = pd.date_range("2016-10-30 00:00", periods=GOOD_HOURS, freq="h")
    good = pd.DataFrame(
        {"unique_id": "q_store", "ds": stamps.strftime("%Y-%m-%d %H:%M:%S"), "y": range(GOOD_HOURS)}
    )
    bad = pd.DataFrame(
        {
            "unique_id": ["q_store", "q_store", "q_store", "q_store", "bad|id", "q_store"],
            "ds": [
                "not a date",
                "2016-10-31 08:00:00",
                "2016-10-31 09:00:00",
                "2016-10-30 05:00:00",
                "2016-10-30 01:00:00",
                "2099-01-01 00:00:00",  # far future: after every date window
            ],
            "y": ["1.0", "abc", "inf", "500.5", "2", "7"],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    # The last row repeats 05:00 with a correction: it wins, the original goes to quarantine.
    pd.concat([good.astype(str), bad]).to_csv(folder / "q_store.csv", index=False)


def _materialize(instance, deployment, landing: LandingZoneResource):
    resources = {
        **build_resources(deployment.settings),
        "landing": landing,
        "database": DatabaseResource(url=deployment.database_url),
    }
    return materialize(
        [raw_observations],
        instance=instance,
        partition_key=f"{WINDOW}|q_store",
        resources=resources,
    )


def test_bad_rows_are_quarantined_with_reasons_and_reruns_add_nothing(
    deployment, instance, db_engine, tmp_path
):
    landing = LandingZoneResource(path=str(tmp_path / "landing"))
    _landed_file(tmp_path / "landing")
    database = DatabaseResource(url=deployment.database_url)

    registration = register_landed_series(instance, database, landing)
    assert "q_store" in registration.series_ids and "bad|id" not in registration.series_ids
    assert registration.quarantined_rows == 1
    with db_engine.connect() as conn:
        span = conn.execute(
            text("SELECT first_ts, last_ts FROM forecasting.series WHERE series_id = 'q_store'")
        ).one()
    # The far-future row does not stretch the series' span (nor the latest window).
    assert span == (pd.Timestamp("2016-10-30 00:00"), pd.Timestamp("2016-10-31 05:00"))
    assert _materialize(instance, deployment, landing).success

    def state():
        with db_engine.connect() as conn:
            stored = conn.execute(
                text(
                    "SELECT count(*), max(y) FILTER (WHERE ts = '2016-10-30 05:00')"
                    " FROM forecasting.observations WHERE series_id = 'q_store'"
                )
            ).one()
            reasons = conn.execute(
                text(
                    "SELECT reason, count(*) FROM forecasting.quarantine "
                    "WHERE series_id IN ('q_store', 'bad|id') GROUP BY reason"
                )
            ).all()
        return tuple(stored), dict(reasons)

    stored, reasons = state()
    assert stored == (GOOD_HOURS, 500.5)
    assert reasons == {
        "unparseable timestamp": 1,
        "missing or non-numeric target": 1,
        "non-finite target": 1,
        "duplicate timestamp, superseded by a later row": 1,
        "series id not usable as a partition key": 1,
        "timestamp after the last date window": 1,
    }

    register_landed_series(instance, database, landing)
    assert _materialize(instance, deployment, landing).success
    assert state() == (stored, reasons)


def test_a_file_without_a_target_column_registers_nothing_and_loses_nothing(
    deployment, instance, db_engine, tmp_path
):
    folder = tmp_path / "landing"
    folder.mkdir()
    (folder / "no_target.csv").write_text("unique_id,ds,value\nq_no_target,2016-10-30 00:00,1\n")
    database = DatabaseResource(url=deployment.database_url)

    registration = register_landed_series(instance, database, LandingZoneResource(path=str(folder)))

    assert registration.series_ids == [] and registration.quarantined_rows == 1
    assert "q_no_target" not in instance.get_dynamic_partitions("series")
    with db_engine.connect() as conn:
        reason = conn.execute(
            text("SELECT reason FROM forecasting.quarantine WHERE series_id = 'q_no_target'")
        ).scalar_one()
    assert reason == "landed data has no 'y' column"
