"""The champion rule, case by case: a challenger replaces a champion only when it wins by the margin."""

from __future__ import annotations

import polars as pl
import pytest

from forecasting_pipeline.assets.selection import SelectionConfig, decide


def _scores(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(series, "monthly", model, value) for series, model, value in rows],
        schema={
            "series_id": pl.String,
            "freq_group": pl.String,
            "model_name": pl.String,
            "value": pl.Float64,
        },
        orient="row",
    )


def _champions(pairs: dict[str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"series_id": list(pairs), "champion": list(pairs.values())},
        schema={"series_id": pl.String, "champion": pl.String},
    )


NO_GROUP_BEST = _scores([]).select("series_id", "freq_group", "model_name", "value")


def _decisions(scores, champions, group_best=NO_GROUP_BEST, margin=0.05) -> dict[str, tuple]:
    decided = decide(scores, champions, group_best, metric="mase", margin=margin)
    return {
        row["series_id"]: (row["decision"], row["challenger"], row["champion"])
        for row in decided.iter_rows(named=True)
    }


def test_first_keep_promote_and_replace():
    scores = _scores(
        [
            ("new", "Theta", 0.8),
            ("new", "Naive", 1.0),
            ("holds", "Theta", 0.9),
            ("holds", "Naive", 1.0),
            ("close", "Theta", 0.97),  # 3 % better: below the 5 % margin
            ("close", "Naive", 1.0),
            ("wins", "Theta", 0.5),
            ("wins", "Naive", 1.0),
            ("orphan", "Theta", 0.7),
        ]
    )
    champions = _champions({"holds": "Theta", "close": "Naive", "wins": "Naive", "orphan": "Retired"})
    assert _decisions(scores, champions) == {
        "new": ("first", "Theta", None),
        "holds": ("keep", "Theta", "Theta"),
        "close": ("keep", "Theta", "Naive"),
        "wins": ("promote", "Theta", "Naive"),
        "orphan": ("replace", "Theta", "Retired"),
    }


def test_the_margin_decides_a_close_race():
    scores = _scores([("s", "Theta", 0.97), ("s", "Naive", 1.0)])
    champions = _champions({"s": "Naive"})
    assert _decisions(scores, champions, margin=0.05)["s"][0] == "keep"
    assert _decisions(scores, champions, margin=0.02)["s"][0] == "promote"


def test_series_too_short_to_backtest_take_the_group_best_but_never_displace_a_champion():
    group_best = _scores([("short", "Theta", 0.9), ("short-held", "Theta", 0.9)]).select(
        "series_id", "freq_group", "model_name", "value"
    )
    decided = decide(_scores([]), _champions({"short-held": "Naive"}), group_best, metric="mase", margin=0.05)
    rows = {r["series_id"]: r for r in decided.iter_rows(named=True)}
    assert (rows["short"]["decision"], rows["short"]["challenger"]) == ("first", "Theta")
    assert rows["short"]["reason"].startswith("too short to backtest")
    assert (rows["short-held"]["decision"], rows["short-held"]["champion"]) == ("keep", "Naive")


def test_ties_are_broken_by_name_so_reruns_agree():
    scores = _scores([("s", "B", 1.0), ("s", "A", 1.0)])
    assert _decisions(scores, _champions({}))["s"][1] == "A"


def test_only_metrics_the_blocking_check_can_recompute_are_accepted():
    assert SelectionConfig(metric="smape").metric == "smape"
    with pytest.raises(ValueError, match="not one of"):
        SelectionConfig(metric="coverage_80")


def test_a_series_keeps_its_groups_best_unless_its_own_best_wins_clearly():
    scores = _scores(
        [
            ("noisy", "Ensemble", 1.00),
            ("noisy", "Theta", 0.95),  # 5 % better on its own folds: noise at a 10 % bar
            ("clear", "Ensemble", 1.00),
            ("clear", "Theta", 0.80),  # 20 % better: its own choice
        ]
    )
    group_best = _scores([("noisy", "Ensemble", 0.9), ("clear", "Ensemble", 0.9)]).select(
        "series_id", "freq_group", "model_name", "value"
    )
    decided = decide(scores, _champions({}), group_best, metric="mase", margin=0.02, series_margin=0.1)
    rows = {r["series_id"]: r for r in decided.iter_rows(named=True)}
    assert (rows["noisy"]["challenger"], rows["noisy"]["challenger_score"]) == ("Ensemble", 1.0)
    assert rows["noisy"]["reason"].startswith("the group's best candidate")
    assert (rows["clear"]["challenger"], rows["clear"]["challenger_score"]) == ("Theta", 0.8)
    assert rows["clear"]["reason"].startswith("its own best of 2 candidates")


def test_a_window_where_no_series_could_be_backtested_still_chooses_from_the_group():
    group_best = _scores([("a", "Theta", 0.9)]).select("series_id", "freq_group", "model_name", "value")
    decided = decide(_scores([]), _champions({}), group_best, metric="mase", margin=0.02, series_margin=0.1)
    assert decided.select("series_id", "challenger", "decision").rows() == [("a", "Theta", "first")]


def test_a_tie_goes_to_the_single_family_whose_name_says_what_the_forecast_is():
    scores = _scores([("s", "BestPerSeries", 0.7), ("s", "NHITS", 0.7), ("s", "MeanTop3", 0.9)])
    assert _decisions(scores, _champions({}))["s"][1] == "NHITS"
