"""Forecast rows are written per run in bulk: a re-run replaces a cell's rows, and whatever the
cell no longer forecasts (a shorter horizon, a retired model, no forecast at all) is removed."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import text

from forecasting_pipeline.storage.predictions import store_predictions


def _forecast(series: str, model: str, steps: int) -> pd.DataFrame:
    cutoff = pd.Timestamp("2016-10-31 23:00")
    return pd.DataFrame(
        {
            "unique_id": series,
            "ds": [cutoff + pd.Timedelta(hours=h) for h in range(1, steps + 1)],
            "step": range(1, steps + 1),
            "cutoff": cutoff,
            "model_name": model,
            "model_version": f"{model}.v1",
            "yhat": [float(h) for h in range(1, steps + 1)],
            "lo_80": None,
            "hi_80": None,
            "lo_95": None,
            "hi_95": None,
            "window_key": "2016-10-30",
            "partition_key": f"2016-10-30|{series}",
        }
    )


def _rows(db_engine) -> set[tuple[str, str, int]]:
    with db_engine.connect() as conn:
        return set(
            conn.execute(text("SELECT series_id, model_name, step FROM forecasting.predictions")).all()
        )


def test_a_rerun_replaces_each_cells_rows_and_drops_what_it_no_longer_forecasts(db_engine):
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO forecasting.series (series_id, partition_key) VALUES ('p1', 'p1'), ('p2', 'p2')"
            )
        )
    cells = [("p1", "2016-10-30"), ("p2", "2016-10-30")]
    with db_engine.begin() as conn:
        store_predictions(conn, pd.concat([_forecast("p1", "A", 3), _forecast("p2", "A", 2)]), cells, "run-1")
    assert _rows(db_engine) == {
        ("p1", "A", 1),
        ("p1", "A", 2),
        ("p1", "A", 3),
        ("p2", "A", 1),
        ("p2", "A", 2),
    }

    # Second run: p1 now has model B with a shorter horizon, p2 has no forecast at all.
    with db_engine.begin() as conn:
        store_predictions(conn, _forecast("p1", "B", 2), cells, "run-2")
    assert _rows(db_engine) == {("p1", "B", 1), ("p1", "B", 2)}
    with db_engine.connect() as conn:
        runs = set(
            conn.execute(text("SELECT DISTINCT dagster_run_id FROM forecasting.predictions")).scalars()
        )
    assert runs == {"run-2"}
