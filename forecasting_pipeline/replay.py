"""`demo --replay`: the bundled data arrives week by week, and the automation takes it from there.

The dataset is cut into its backlog (everything before the replayed weeks) and one file per
replayed week. The calendar is fixed to cover all of them before the UI starts, so every window
the replay reaches already exists in the code location. Files land in the landing folder one
week at a time, each after the previous week's work has finished; the sensors, the cascade
backfills and the accuracy scoring do the rest, in the Dagster UI.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import polars as pl

from forecasting_pipeline.calendar import DateCalendar, shift_windows, window_floor, window_keys
from forecasting_pipeline.schemas import DS


@dataclass(frozen=True)
class ReplayPlan:
    calendar: DateCalendar
    backlog: pl.DataFrame
    weeks: list[tuple[date, pl.DataFrame]]  # window start, its rows


def plan_replay(frame: pl.DataFrame, weeks: int, history_windows: int) -> ReplayPlan:
    """Cut `frame` (long format with `ds`) into a backlog and its last `weeks` weekly windows."""
    if weeks < 1:
        raise ValueError("replay at least one week")
    stamped = frame.with_columns(pl.col(DS).cast(pl.Datetime("us")))
    newest = stamped[DS].max()
    last_window = window_floor("weekly", newest.date())
    first_replayed = shift_windows("weekly", last_window, -(weeks - 1))
    calendar = DateCalendar(
        "weekly",
        start=shift_windows("weekly", first_replayed, -history_windows),
        end=shift_windows("weekly", last_window, 1),
    )
    keyed = stamped.with_columns(window_keys(pl.col(DS), calendar).alias("_window"))
    cut = datetime.combine(first_replayed, datetime.min.time())
    backlog = keyed.filter(pl.col(DS) < cut).drop("_window")
    replayed = [
        (shift_windows("weekly", first_replayed, k), keyed.filter(pl.col("_window") == key).drop("_window"))
        for k in range(weeks)
        for key in [shift_windows("weekly", first_replayed, k).isoformat()]
    ]
    return ReplayPlan(calendar, backlog, replayed)


def land_frame(frame: pl.DataFrame, landing_dir: Path, name: str) -> Path:
    """Write atomically: the sensor never sees half a file."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = landing_dir / name
    partial = landing_dir / f".{name}.partial"
    frame.write_csv(partial)
    partial.replace(target)
    return target


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False
