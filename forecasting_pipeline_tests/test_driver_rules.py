"""Which drivers a frequency group's models take, from the Granger evidence and the configured rule."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from forecasting_pipeline.modeling.drivers import (
    DriverRule,
    available_drivers,
    decide_drivers,
    keep_selected_drivers,
    selected_by_group,
)

PANEL = pl.DataFrame(
    {
        "unique_id": ["a", "a", "b", "b", "m", "m"],
        "ds": [datetime(2024, 1, 1, h) for h in (0, 1, 0, 1, 0, 0)],
        "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "load": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        "wind": [1.0, 2.0, None, 4.0, 5.0, 6.0],  # series b lacks it once: not a model input for hourly
        "freq": ["h", "h", "h", "h", "MS", "MS"],
        "freq_group": ["hourly", "hourly", "hourly", "hourly", "monthly", "monthly"],
    }
)
EVIDENCE = pl.DataFrame(
    {
        "freq_group": ["hourly", "monthly"],
        "driver": ["load", "load"],
        "series_tested": [2, 1],
        "series_passing": [1, 0],
        "median_lag": [3.0, None],
    }
)


def _selected(decisions: pl.DataFrame) -> set[tuple[str, str]]:
    return {(g, d) for g, d in decisions.filter("selected").select("freq_group", "driver").iter_rows()}


def test_available_drivers_are_those_every_series_of_the_group_has():
    assert _selected(available_drivers(PANEL).with_columns(pl.lit(True).alias("selected"))) == {
        ("hourly", "load"),
        ("monthly", "load"),
        ("monthly", "wind"),
    }


def test_screen_keeps_drivers_passing_in_enough_series_and_untested_ones():
    decisions = decide_drivers(available_drivers(PANEL), EVIDENCE, DriverRule(min_share=0.5))
    # hourly load passes in 1 of 2 (50 %); monthly load in 0 of 1; monthly wind was never tested.
    assert _selected(decisions) == {("hourly", "load"), ("monthly", "wind")}
    reasons = dict(zip(decisions["driver"] + "@" + decisions["freq_group"], decisions["reason"], strict=True))
    assert "1 of 2 series" in reasons["load@hourly"]
    assert "no Granger test" in reasons["wind@monthly"]
    stricter = decide_drivers(available_drivers(PANEL), EVIDENCE, DriverRule(min_share=0.75))
    assert _selected(stricter) == {("monthly", "wind")}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (DriverRule(rule="all"), {("hourly", "load"), ("monthly", "load"), ("monthly", "wind")}),
        (DriverRule(rule="none"), set()),
        (DriverRule(rule="listed", listed=("wind",)), {("monthly", "wind")}),
    ],
)
def test_configured_rules_override_the_screen(rule, expected):
    assert _selected(decide_drivers(available_drivers(PANEL), EVIDENCE, rule)) == expected


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown driver rule"):
        DriverRule(rule="best")


def test_unselected_drivers_are_nulled_per_group_and_no_decision_keeps_all():
    kept = keep_selected_drivers(PANEL, {"hourly": ["load"], "monthly": []})
    assert kept.filter(pl.col("freq_group") == "hourly")["load"].null_count() == 0
    assert kept.filter(pl.col("freq_group") == "monthly")["load"].null_count() == 2
    assert kept["wind"].null_count() == len(PANEL)
    assert keep_selected_drivers(PANEL, None).equals(PANEL)


def test_decisions_become_the_per_group_mapping_models_take():
    decisions = decide_drivers(available_drivers(PANEL), EVIDENCE, DriverRule(min_share=0.5))
    assert selected_by_group(decisions) == {"hourly": ["load"], "monthly": ["wind"]}
    assert selected_by_group(decisions.clear()) is None
