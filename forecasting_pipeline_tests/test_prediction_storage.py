"""Forecast history in bulk: the same origin is replaced, a later origin is added beside the
earlier one, a shorter horizon drops the steps it no longer has, and one family's write never
touches another family's rows."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import text

from forecasting_pipeline.storage.predictions import store_predictions


def _forecast(series: str, model: str, steps: int, cutoff: str = "2016-10-31 23:00") -> pd.DataFrame:
    origin = pd.Timestamp(cutoff)
    return pd.DataFrame(
        {
            "unique_id": series,
            "ds": [origin + pd.Timedelta(hours=h) for h in range(1, steps + 1)],
            "step": range(1, steps + 1),
            "cutoff": origin,
            "model_name": model,
            "model_version": f"{model}.v1",
            "yhat": [float(h) for h in range(1, steps + 1)],
            "lo_80": None,
            "hi_80": None,
            "lo_95": None,
            "hi_95": None,
            "window_key": "2016-10-30",
            "partition_key": f"2016-10-30|{series}",
            "model_id": None,
            "freq_group": "hourly",
        }
    )


def _rows(db_engine) -> set[tuple[str, str, str, int]]:
    with db_engine.connect() as conn:
        return {
            (s, m, f"{c:%m-%d}", step)
            for s, m, c, step in conn.execute(
                text("SELECT series_id, model_name, cutoff, step FROM forecasting.predictions")
            ).all()
        }


@pytest.fixture(scope="module", autouse=True)
def _series(db_engine):
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO forecasting.series (series_id, partition_key) VALUES ('p1', 'p1'), ('p2', 'p2')"
            )
        )


def test_same_origin_replaces_later_origin_adds_and_families_never_touch_each_other(db_engine):
    with db_engine.begin() as conn:
        store_predictions(conn, pd.concat([_forecast("p1", "A", 3), _forecast("p2", "A", 2)]), "run-1")
    first = _rows(db_engine)
    assert len(first) == 5

    # Family B for p1 arrives in another run: A's rows stay as they were.
    with db_engine.begin() as conn:
        store_predictions(conn, _forecast("p1", "B", 2), "run-2")
    assert _rows(db_engine) == first | {("p1", "B", "10-31", 1), ("p1", "B", "10-31", 2)}

    # Re-running A's origin with a shorter horizon replaces it and drops the extra step.
    with db_engine.begin() as conn:
        store_predictions(conn, _forecast("p1", "A", 2), "run-3")
    assert ("p1", "A", "10-31", 3) not in _rows(db_engine)
    assert len(_rows(db_engine)) == 6

    # A later origin adds rows; the earlier origin is kept for scoring against actuals.
    with db_engine.begin() as conn:
        store_predictions(conn, _forecast("p1", "A", 2, cutoff="2016-11-01 23:00"), "run-4")
    rows = _rows(db_engine)
    assert {("p1", "A", "10-31", 1), ("p1", "A", "11-01", 1)} <= rows and len(rows) == 8

    with db_engine.connect() as conn:
        current = conn.execute(
            text(
                "SELECT model_name, min(cutoff), count(*) FROM forecasting.current_predictions "
                "WHERE series_id = 'p1' GROUP BY model_name ORDER BY model_name"
            )
        ).all()
        runs = dict(
            conn.execute(
                text(
                    "SELECT cutoff, min(dagster_run_id) FROM forecasting.predictions "
                    "WHERE series_id = 'p1' AND model_name = 'A' GROUP BY cutoff"
                )
            ).all()
        )
    assert [(m, f"{c:%m-%d}", n) for m, c, n in current] == [("A", "11-01", 2), ("B", "10-31", 2)]
    assert sorted(runs.values()) == ["run-3", "run-4"]


def test_an_empty_forecast_writes_and_deletes_nothing(db_engine):
    before = _rows(db_engine)
    with db_engine.begin() as conn:
        assert store_predictions(conn, _forecast("p1", "A", 0), "run-5") == 0
    assert _rows(db_engine) == before
