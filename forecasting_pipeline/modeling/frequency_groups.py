"""Split a window's panel into frequency groups and set aside series that cannot be forecast.

Cross-series models learn shapes in units of steps, so an hourly and a monthly series must
never share a model; each group has its own horizon, season and input size (the catalog's
`frequency_groups`). A series that is too short, constant, or has no regular frequency is set
aside with a reason instead of failing every other series of its window.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import polars as pl

from forecasting_pipeline.modeling.frequency import MIN_TIMESTAMPS, season_length
from forecasting_pipeline.schemas import DS, UNIQUE_ID, Y, driver_columns

if TYPE_CHECKING:
    from forecasting_pipeline.modeling.catalog import ModelCatalog

FREQ = "freq"
FREQ_GROUP = "freq_group"

# Alias prefix (multiplier and anchor stripped) -> group; checked longest prefix first.
_GROUP_OF_PREFIX = {
    "ns": "subhourly",
    "us": "subhourly",
    "ms": "subhourly",
    "s": "subhourly",
    "min": "subhourly",
    "t": "subhourly",
    "h": "hourly",
    "d": "daily",
    "b": "daily",
    "c": "daily",
    "w": "weekly",
    "me": "monthly",
    "m": "monthly",
    "sm": "monthly",
    "bm": "monthly",
    "qs": "quarterly",
    "qe": "quarterly",
    "q": "quarterly",
    "bq": "quarterly",
    "ys": "yearly",
    "ye": "yearly",
    "y": "yearly",
    "as": "yearly",
    "a": "yearly",
    "by": "yearly",
}
_ALIAS = re.compile(r"^(\d*)([A-Za-z]+)")


def frequency_group(freq: str | None) -> str | None:
    """The group of a pandas frequency alias (`h`, `2h`, `W-SUN`, `MS`, `QS-DEC`, …); None if unknown."""
    if not freq:
        return None
    match = _ALIAS.match(freq.strip())
    if match is None:
        return None
    unit = match.group(2)
    if unit == "MS":  # month start; "ms" alone is milliseconds
        return "monthly"
    return _GROUP_OF_PREFIX.get(unit.lower())


@dataclass(frozen=True)
class GroupedPanel:
    """A window's forecastable series, each tagged with its frequency group, and the rest."""

    panel: pl.DataFrame  # unique_id, ds, y, drivers…, freq, freq_group
    excluded: pl.DataFrame  # unique_id, freq_group, reason, detail

    def groups(self) -> list[str]:
        return sorted(self.panel[FREQ_GROUP].unique().to_list())


def _groups_of(freqs: pl.Series) -> pl.DataFrame:
    """Group of each distinct alias: a handful of values however many series share them."""
    distinct = freqs.drop_nulls().unique().to_list()
    return pl.DataFrame(
        {FREQ: distinct, FREQ_GROUP: [frequency_group(f) for f in distinct]},
        schema={FREQ: pl.Utf8, FREQ_GROUP: pl.Utf8},
    )


EXCLUSION_SCHEMA = pl.Schema({UNIQUE_ID: pl.Utf8, FREQ_GROUP: pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8})


def group_panel(panel: pl.DataFrame, frequencies: pl.DataFrame, catalog: ModelCatalog) -> GroupedPanel:
    """Tag each series with its group and set aside the unforecastable ones, in one pass.

    `frequencies` holds `unique_id, freq` as stored at registration (never inferred per
    window, so a series keeps its group as it grows).
    """
    minimums = pl.DataFrame(
        {
            FREQ_GROUP: list(catalog.frequency_groups),
            "min_points": [g.min_points for g in catalog.frequency_groups.values()],
        }
    )
    stats = (
        panel.group_by(UNIQUE_ID)
        .agg(
            pl.len().alias("points"),
            pl.col(Y).min().alias("low"),
            pl.col(Y).max().alias("high"),
        )
        .join(frequencies.select(UNIQUE_ID, FREQ), on=UNIQUE_ID, how="left")
        .join(_groups_of(frequencies[FREQ]), on=FREQ, how="left")
        .join(minimums, on=FREQ_GROUP, how="left")
    )
    reason = (
        pl.when(pl.col("points") < MIN_TIMESTAMPS)
        .then(pl.lit("too_short"))
        .when(pl.col(FREQ_GROUP).is_null() | pl.col("min_points").is_null())
        .then(pl.lit("irregular"))
        .when(pl.col("points") < pl.col("min_points"))
        .then(pl.lit("too_short"))
        .when(pl.col("low") == pl.col("high"))
        .then(pl.lit("constant"))
    )
    detail = (
        pl.when(pl.col("points") < MIN_TIMESTAMPS)
        .then(
            pl.format(
                "{} observations; at least {} are needed to tell its sampling frequency",
                pl.col("points"),
                pl.lit(MIN_TIMESTAMPS),
            )
        )
        .when(pl.col(FREQ).is_null())
        .then(pl.lit("no regular sampling frequency was found for this series at registration"))
        .when(pl.col(FREQ_GROUP).is_null() | pl.col("min_points").is_null())
        .then(pl.format("frequency {} belongs to no configured frequency group", pl.col(FREQ)))
        .when(pl.col("points") < pl.col("min_points"))
        .then(
            pl.format(
                "{} observations; the {} group needs at least {}",
                pl.col("points"),
                pl.col(FREQ_GROUP),
                pl.col("min_points"),
            )
        )
        .otherwise(pl.format("every observation equals {}", pl.col("low")))
    )
    judged = stats.with_columns(reason.alias("reason"), detail.alias("detail"))
    excluded = (
        judged.filter(pl.col("reason").is_not_null())
        .select(UNIQUE_ID, FREQ_GROUP, "reason", "detail")
        .sort(UNIQUE_ID)
    )
    kept = judged.filter(pl.col("reason").is_null()).select(UNIQUE_ID, FREQ, FREQ_GROUP)
    return GroupedPanel(
        panel=panel.join(kept, on=UNIQUE_ID, how="inner").sort(UNIQUE_ID, DS),
        excluded=excluded.cast(dict(EXCLUSION_SCHEMA)),
    )


def main_frequency(group_panel_frame: pl.DataFrame) -> str:
    """The alias most series of a group use; models of the group are built with it."""
    counts = group_panel_frame.select(UNIQUE_ID, FREQ).unique().group_by(FREQ).len()
    return counts.sort(["len", FREQ], descending=[True, False])[FREQ][0]


@dataclass(frozen=True)
class GroupTask:
    """One frequency group of one window: the unit a model family is tuned and trained on."""

    window: str
    group: str
    panel: pd.DataFrame  # unique_id, ds, y and the drivers every series of the group has
    freq: str  # the alias most of the group's series use; models are built with it
    series_freq: pl.DataFrame  # unique_id, freq: to re-date forecasts of series on another alias
    season: int
    horizon: int

    @property
    def series_count(self) -> int:
        return self.series_freq.height

    @property
    def drivers(self) -> list[str]:
        return sorted(driver_columns(list(self.panel.columns)))


def group_tasks(window: str, panel: pd.DataFrame, horizon_of: Callable[[str], int]) -> list[GroupTask]:
    """Split a grouped window panel (from `group_panel`) into one task per frequency group."""
    if panel.empty:
        return []
    tasks = []
    frame = pl.from_pandas(panel)
    for (group,), rows in sorted(frame.partition_by(FREQ_GROUP, as_dict=True).items()):
        freq = main_frequency(rows)
        # A driver some series of the group lack cannot be an input of the group's models.
        complete = [c for c in rows.columns if rows[c].null_count() == 0 and c not in (FREQ, FREQ_GROUP)]
        tasks.append(
            GroupTask(
                window=window,
                group=group,
                panel=rows.select(complete).to_pandas(),
                freq=freq,
                series_freq=rows.select(UNIQUE_ID, FREQ).unique(maintain_order=True),
                season=season_length(freq),
                horizon=horizon_of(group),
            )
        )
    return tasks
