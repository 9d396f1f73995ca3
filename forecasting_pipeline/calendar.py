"""The deployment's `date` calendar: which arrival windows exist, decided by the data.

A new deployment has no calendar until data arrives. The first ingest fixes its start a few
windows before the newest data (everything older is the history slice, one partition per
series however long the backlog) and persists it in FP_HOME, or beside the intermediates when
FP_STORAGE_URI is set, so the CLI, the UI's code server, the daemon and the workers on every
host all build the same partitions. A historical dataset's calendar ends at its last
window (no decade of empty weeks); a live one — data reaching the current or the previous
window — stays open and runs to the current window.

Pure functions of dates and frames: no Dagster import, so the CLI can decide the calendar before
anything builds partitions from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl

from forecasting_pipeline.settings import Settings, SettingsError

DATE_KEY_FORMAT = "%Y-%m-%d"


@dataclass(frozen=True)
class DateCalendar:
    """Windows of `cadence` from `start`; `end` is the exclusive boundary after the last window,
    None when the calendar runs to the current window."""

    cadence: str
    start: date
    end: date | None
    pinned: bool = False  # set by FP_PARTITION_START: never moved by data
    persisted: bool = False  # read from (or written to) the deployment's calendar file

    def as_json(self) -> dict[str, str | None]:
        return {
            "cadence": self.cadence,
            "start": self.start.isoformat(),
            "end": self.end.isoformat() if self.end else None,
        }

    def same_windows(self, other: DateCalendar) -> bool:
        return (self.cadence, self.start, self.end) == (other.cadence, other.start, other.end)


def window_floor(cadence: str, day: date) -> date:
    """Start of the window holding `day`; weekly windows start on Sundays (Dagster's convention)."""
    if cadence == "weekly":
        return day - timedelta(days=(day.weekday() + 1) % 7)
    if cadence == "monthly":
        return day.replace(day=1)
    return day


def shift_windows(cadence: str, window_start: date, steps: int) -> date:
    """The window `steps` windows after (negative: before) `window_start`."""
    if cadence == "daily":
        return window_start + timedelta(days=steps)
    if cadence == "weekly":
        return window_start + timedelta(weeks=steps)
    months = window_start.year * 12 + window_start.month - 1 + steps
    return date(months // 12, months % 12 + 1, 1)


def load_calendar(settings: Settings, today: date | None = None) -> DateCalendar:
    """The calendar this process builds partitions from.

    Pinned by FP_PARTITION_START, else the persisted one, else a provisional calendar holding
    only the current window (replaced by the first ingest).
    """
    if settings.partition_start is not None:
        start = window_floor(settings.date_cadence, settings.partition_start)
        return DateCalendar(settings.date_cadence, start, settings.partition_end, pinned=True)
    path = settings.calendar_file
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            calendar = DateCalendar(
                cadence=stored["cadence"],
                start=date.fromisoformat(stored["start"]),
                end=date.fromisoformat(stored["end"]) if stored.get("end") else None,
                persisted=True,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SettingsError(f"{path} is not a valid calendar file: {exc}") from exc
        if settings.date_cadence_explicit and calendar.cadence != settings.date_cadence:
            raise SettingsError(
                f"this deployment's calendar ({path}) is {calendar.cadence}; FP_DATE_CADENCE="
                f"{settings.date_cadence} would rename every partition. Use a new FP_HOME to change it."
            )
        return calendar
    current = window_floor(settings.date_cadence, today or datetime.now().date())
    return DateCalendar(settings.date_cadence, current, None)


def save_calendar(settings: Settings, calendar: DateCalendar) -> DateCalendar:
    """Persist atomically (a reader never sees half a file); pinned calendars are not persisted.

    On a local disk (or a shared mount) a synced temporary file is renamed over the calendar; in
    an object store the file is one PUT, which replaces the object whole or not at all.
    """
    if calendar.pinned:
        return calendar
    path = settings.calendar_file
    text = json.dumps(calendar.as_json())
    if not isinstance(path, Path):
        path.write_text(text, encoding="utf-8")
        return replace(calendar, persisted=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # whole on disk before the rename publishes it
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return replace(calendar, persisted=True)


def plan_calendar(
    calendar: DateCalendar, newest: datetime, history_windows: int, now: datetime | None = None
) -> DateCalendar:
    """The calendar after data up to `newest` has landed.

    A first ingest starts `history_windows` before the newest data's window. A closed calendar
    is extended to hold newer data; data reaching the current window opens it (live).
    """
    if calendar.pinned:
        return calendar
    cadence = calendar.cadence
    newest_window = window_floor(cadence, newest.date())
    current_window = window_floor(cadence, (now or datetime.now()).date())
    live = newest_window >= shift_windows(cadence, current_window, -1)
    end = None if live else shift_windows(cadence, newest_window, 1)
    if not calendar.persisted:
        start = shift_windows(cadence, newest_window, -history_windows)
        return DateCalendar(cadence, start, end)
    if calendar.end is None or (end is not None and end <= calendar.end):
        return calendar
    return replace(calendar, end=end)


def window_keys(timestamps: pl.Expr, calendar: DateCalendar) -> pl.Expr:
    """The `date` key of each timestamp, vectorized: older ones fall in the history slice (the
    first window); ones at or past a closed calendar's end get null (no window holds them yet)."""
    ts = timestamps.cast(pl.Datetime("us"))
    start = pl.lit(datetime.combine(calendar.start, datetime.min.time()), dtype=pl.Datetime("us"))
    if calendar.cadence == "weekly":
        floored = (ts + pl.duration(days=1)).dt.truncate("1w") - pl.duration(days=1)
    elif calendar.cadence == "monthly":
        floored = ts.dt.truncate("1mo")
    else:
        floored = ts.dt.truncate("1d")
    key = pl.max_horizontal(floored, start).dt.strftime(DATE_KEY_FORMAT)
    if calendar.end is None:
        return key
    end = pl.lit(datetime.combine(calendar.end, datetime.min.time()), dtype=pl.Datetime("us"))
    return pl.when(ts < end).then(key).otherwise(None)
