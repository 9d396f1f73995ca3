"""Which drivers a frequency group's models take: the studies' verdict turned into model inputs.

A global model takes one set of inputs for the whole group, so the decision is per (window,
group): a driver is used when it Granger-causes the target (after the window's FDR correction)
in at least `min_share` of the group's testable series. Other rules let a user force every
driver, none, or a list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from forecasting_pipeline.modeling.frequency_groups import FREQ, FREQ_GROUP
from forecasting_pipeline.schemas import driver_columns

DRIVER_RULES = ("screened", "all", "none", "listed")


@dataclass(frozen=True)
class DriverRule:
    rule: str = "screened"
    alpha: float = 0.05  # adjusted p-value under which a test passes
    min_share: float = 0.5  # of a group's testable series in which a driver must pass
    listed: tuple[str, ...] = ()  # the drivers of rule "listed"

    def __post_init__(self) -> None:
        if self.rule not in DRIVER_RULES:
            raise ValueError(f"unknown driver rule {self.rule!r}; choose one of {', '.join(DRIVER_RULES)}")


def available_drivers(panel: pl.DataFrame) -> pl.DataFrame:
    """freq_group, driver of the drivers every series of a group has (what models can take)."""
    drivers = driver_columns(panel.columns, besides=(FREQ_GROUP, FREQ))
    if not drivers or panel.height == 0:
        return pl.DataFrame(schema={FREQ_GROUP: pl.Utf8, "driver": pl.Utf8})
    complete = panel.group_by(FREQ_GROUP).agg(pl.col(d).null_count().eq(0).alias(d) for d in drivers)
    return (
        complete.unpivot(index=FREQ_GROUP, variable_name="driver", value_name="complete")
        .filter(pl.col("complete"))
        .select(FREQ_GROUP, "driver")
        .sort(FREQ_GROUP, "driver")
    )


def decide_drivers(available: pl.DataFrame, evidence: pl.DataFrame, rule: DriverRule) -> pl.DataFrame:
    """One decision per available (group, driver): selected, rule, evidence and a reason in words.

    `evidence` is `storage.studies.driver_evidence` (series tested and passing per group and
    driver). Without any evidence for a group the screen cannot judge, so "screened" keeps the
    group's drivers and says why: a study that was not run never silently removes inputs.
    """
    joined = available.join(evidence, on=[FREQ_GROUP, "driver"], how="left").with_columns(
        pl.col("series_tested").fill_null(0),
        pl.col("series_passing").fill_null(0),
    )
    share = pl.col("series_passing") / pl.col("series_tested")
    evidence_text = pl.format(
        "passes the Granger screen (adjusted p < {}) in {} of {} series",
        pl.lit(rule.alpha),
        pl.col("series_passing"),
        pl.col("series_tested"),
    )
    if rule.rule == "screened":
        untested = pl.col("series_tested") == 0
        selected = untested | ((pl.col("series_passing") > 0) & (share >= rule.min_share))
        reason = (
            pl.when(untested)
            .then(pl.lit("no Granger test in this window (run granger_study); kept as the dataset declares"))
            .otherwise(pl.format("{}; needs {} of them", evidence_text, pl.lit(f"{rule.min_share:.0%}")))
        )
    elif rule.rule == "listed":
        selected = pl.col("driver").is_in(list(rule.listed))
        reason = pl.format("listed by the run config; {}", evidence_text)
    else:
        selected = pl.lit(rule.rule == "all")
        reason = pl.format("rule '{}'; {}", pl.lit(rule.rule), evidence_text)
    return joined.select(
        FREQ_GROUP,
        "driver",
        selected.alias("selected"),
        pl.lit(rule.rule).alias("rule"),
        pl.col("series_tested").cast(pl.Int32),
        pl.col("series_passing").cast(pl.Int32),
        pl.col("median_lag"),
        reason.alias("reason"),
    )


def selected_by_group(decisions: pl.DataFrame) -> dict[str, list[str]] | None:
    """freq_group -> selected drivers of `decide_drivers`' frame (None without any decision), the
    shape `keep_selected_drivers` takes and `storage.studies.selected_drivers` reads back."""
    if decisions.height == 0:
        return None
    grouped = decisions.group_by(FREQ_GROUP).agg(pl.col("driver").filter(pl.col("selected")).sort())
    return dict(zip(grouped[FREQ_GROUP].to_list(), grouped["driver"].to_list(), strict=True))


def keep_selected_drivers(panel: pl.DataFrame, selected: Mapping[str, Sequence[str]] | None) -> pl.DataFrame:
    """The panel with each group's unselected drivers nulled, so its group task leaves them out.

    `selected` maps group -> drivers (`storage.studies.selected_drivers`); None (no decision
    stored for the window) keeps every driver, as before any study ran.
    """
    if selected is None:
        return panel
    drivers = driver_columns(panel.columns, besides=(FREQ_GROUP, FREQ))
    return panel.with_columns(
        pl.when(pl.col(FREQ_GROUP).is_in([g for g, names in selected.items() if d in names]))
        .then(pl.col(d))
        .otherwise(None)
        .alias(d)
        for d in drivers
    )
