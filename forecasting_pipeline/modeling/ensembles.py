"""Ensemble candidates built from the single models, scored on the same backtest folds.

A combination chosen by looking at the folds it is then scored on would look better than it will
forecast, so the members that forecast fold c are ranked on the OTHER folds only (leave-one-fold-
out). The future forecast then uses members ranked on all folds (`ensemble_members`), which is the
same rule applied one step later.

Candidates, for `top_k = k`:
- `MeanTop{k}` / `MedianTop{k}`: per series, the mean / median of its k best models;
- `GroupMeanTop{k}` / `GroupMedianTop{k}`: the k best models over all series (mean over series of
  each model's per-series score), combined the same way; steadier when a series' own folds are
  too few to rank on;
- `BestPerSeries`: per series, its single best model (selection rather than combination).
Interval bounds are combined with the same statistic as the point (nulls ignored).
"""

from __future__ import annotations

import polars as pl

from forecasting_pipeline.modeling.evaluation import CUTOFF, MODEL_NAME, STEP, YHAT
from forecasting_pipeline.schemas import DS, INTERVAL_LEVELS, UNIQUE_ID, Y, lower_column, upper_column

ENSEMBLE_NAME = "ensemble_name"
BEST_PER_SERIES = "BestPerSeries"
# Extra column of `ensemble_folds`: True where the series had a single fold, so its members were
# ranked on the very fold they forecast and its backtest score is optimistic (in-sample).
RANKED_IN_SAMPLE = "ranked_in_sample"

_VALUE_COLUMNS: tuple[str, ...] = (
    YHAT,
    *(column for level in INTERVAL_LEVELS for column in (lower_column(level), upper_column(level))),
)
FOLD_COLUMNS: tuple[str, ...] = (UNIQUE_ID, MODEL_NAME, CUTOFF, DS, STEP, Y, *_VALUE_COLUMNS)
_SCORE = "score"
_RANK = "__rank"
_GROUP_RANK = "__group_rank"
_CANDIDATES = "__candidates"
_TARGET = "__target_cutoff"


def ensemble_names(top_k: int, *, group_rank: bool = True) -> list[str]:
    """Names of the ensemble candidates, so callers can tell them from single models."""
    _check_top_k(top_k)
    names = [f"MeanTop{top_k}", f"MedianTop{top_k}"]
    if group_rank:
        names += [f"GroupMeanTop{top_k}", f"GroupMedianTop{top_k}"]
    return [*names, BEST_PER_SERIES]


def is_ensemble(name: pl.Expr) -> pl.Expr:
    """Whether a candidate name is one of `ensemble_names` (any top_k): a tie goes to the simpler
    single model, whose name says what the forecast is."""
    return name.str.contains(r"^(Group)?(Mean|Median)Top\d+$") | (name == BEST_PER_SERIES)


def _check_top_k(top_k: int) -> None:
    # A combination of one model is `BestPerSeries` under another name.
    if top_k < 2:
        raise ValueError(f"top_k must be >= 2, got {top_k}")


def _is_median() -> pl.Expr:
    """The statistic follows from the name, so members alone say how to combine future forecasts."""
    return pl.col(ENSEMBLE_NAME).str.contains("Median")


def _members(table: pl.DataFrame, keys: list[str], top_k: int, group_rank: bool) -> pl.DataFrame:
    """Pick members per (series, *keys) from eligible `model_name, score` rows.

    Ties go to the alphabetically first model so membership is reproducible. With fewer than k
    eligible models a Top-k combination uses all of them; with fewer than 2 there is none.
    """
    by_series = [UNIQUE_ID, *keys]
    table = table.with_columns(pl.len().over(by_series).alias(_CANDIDATES))
    ranked = table.sort(*by_series, _SCORE, MODEL_NAME).with_columns(
        (pl.int_range(pl.len()).over(by_series) + 1).alias(_RANK)
    )
    parts = [ranked.filter(pl.col(_RANK) == 1).with_columns(pl.lit(BEST_PER_SERIES).alias(ENSEMBLE_NAME))]
    combinable = ranked.filter(pl.col(_CANDIDATES) >= 2)
    top = combinable.filter(pl.col(_RANK) <= top_k)
    parts += [
        top.with_columns(pl.lit(f"{kind}Top{top_k}").alias(ENSEMBLE_NAME)) for kind in ("Mean", "Median")
    ]
    if group_rank:
        # Over series that can use the model, so a model missing for some series is not helped
        # or hurt by them.
        group_score = combinable.group_by(*keys, MODEL_NAME).agg(pl.col(_SCORE).mean().alias("__group_score"))
        grouped = (
            combinable.join(group_score, on=[*keys, MODEL_NAME], how="left")
            .sort(*by_series, "__group_score", MODEL_NAME)
            .with_columns((pl.int_range(pl.len()).over(by_series) + 1).alias(_GROUP_RANK))
            .filter(pl.col(_GROUP_RANK) <= top_k)
        )
        parts += [
            grouped.with_columns(pl.lit(f"Group{kind}Top{top_k}").alias(ENSEMBLE_NAME))
            for kind in ("Mean", "Median")
        ]
    return pl.concat([p.select(*by_series, ENSEMBLE_NAME, MODEL_NAME) for p in parts])


def _combine(rows: pl.DataFrame, group: list[str]) -> pl.DataFrame:
    """Mean or median of the members' point and bounds per `group` (which holds `ensemble_name`)."""
    aggregates = [
        pl.when(pl.col("__median").first())
        .then(pl.col(c).median())
        .otherwise(pl.col(c).mean())
        .cast(pl.Float64)
        .alias(c)
        for c in _VALUE_COLUMNS
    ]
    return rows.with_columns(_is_median().alias("__median")).group_by(*group).agg(*aggregates)


def _eligible_in_folds(folds: pl.DataFrame) -> pl.DataFrame:
    """(series, model) pairs with a point forecast for every (cutoff, step) of the series.

    A member missing a fold would make the combination average different models on different
    rows, so its scores would not be comparable with the single models'.
    """
    slots = [CUTOFF, STEP]
    needed = folds.select(UNIQUE_ID, *slots).unique().group_by(UNIQUE_ID).len("needed")
    have = (
        folds.filter(pl.col(YHAT).is_not_null() & pl.col(YHAT).is_not_nan())
        .select(UNIQUE_ID, MODEL_NAME, *slots)
        .unique()
        .group_by(UNIQUE_ID, MODEL_NAME)
        .len("have")
    )
    return (
        have.join(needed, on=UNIQUE_ID)
        .filter(pl.col("have") == pl.col("needed"))
        .select(UNIQUE_ID, MODEL_NAME)
    )


def _usable_scores(scores: pl.DataFrame) -> pl.DataFrame:
    return scores.select(UNIQUE_ID, MODEL_NAME, CUTOFF, pl.col(_SCORE).cast(pl.Float64)).filter(
        pl.col(_SCORE).is_finite()
    )


def ensemble_folds(
    folds: pl.DataFrame, scores: pl.DataFrame, *, top_k: int, group_rank: bool = True
) -> pl.DataFrame:
    """Fold-frame rows for every ensemble candidate, with members ranked leave-one-fold-out.

    `folds` holds single models only and `scores` is `evaluation.fold_scores(folds, scales)`.
    Members forecasting fold c are ranked by their mean score over the series' other folds. A
    series with a single fold has no other fold, so it is ranked on that fold and its rows carry
    `ranked_in_sample = True`: their backtest score is optimistic and should not be compared at
    face value with the single models'.

    Returns the fold-frame columns (`FOLD_COLUMNS`) plus `ranked_in_sample`; `model_name` holds the
    ensemble's name. Other columns of `folds` are not carried.
    """
    _check_top_k(top_k)
    fold_rows = folds.select(*FOLD_COLUMNS)
    per_fold = _usable_scores(scores).join(_eligible_in_folds(fold_rows), on=[UNIQUE_ID, MODEL_NAME])
    # Each score row of fold c contributes to the ranking of every OTHER fold of its series: the
    # leave-one-out mean is (sum over the model's folds - score at c) / (count - 1).
    loo = (
        per_fold.with_columns(
            pl.col(_SCORE).sum().over(UNIQUE_ID, MODEL_NAME).alias("__sum"),
            pl.len().over(UNIQUE_ID, MODEL_NAME).alias("__count"),
            pl.col(CUTOFF).n_unique().over(UNIQUE_ID).alias("__folds"),
        )
        .with_columns(
            pl.when(pl.col("__count") >= 2)
            .then((pl.col("__sum") - pl.col(_SCORE)) / (pl.col("__count") - 1))
            .otherwise(pl.col(_SCORE))
            .alias(_SCORE),
            (pl.col("__folds") == 1).alias(RANKED_IN_SAMPLE),
        )
        .rename({CUTOFF: _TARGET})
    )
    members = _members(loo.select(UNIQUE_ID, _TARGET, MODEL_NAME, _SCORE), [_TARGET], top_k, group_rank)
    in_sample = loo.select(UNIQUE_ID, _TARGET, RANKED_IN_SAMPLE).unique()
    members = members.join(in_sample, on=[UNIQUE_ID, _TARGET], how="left").rename({_TARGET: CUTOFF})
    rows = members.join(fold_rows, on=[UNIQUE_ID, CUTOFF, MODEL_NAME])
    slot = [UNIQUE_ID, CUTOFF, DS, STEP]
    combined = _combine(rows, [*slot, ENSEMBLE_NAME])
    context = rows.group_by(*slot, ENSEMBLE_NAME).agg(
        pl.col(Y).drop_nulls().first(), pl.col(RANKED_IN_SAMPLE).first()
    )
    return (
        combined.join(context, on=[*slot, ENSEMBLE_NAME])
        .rename({ENSEMBLE_NAME: MODEL_NAME})
        .select(*FOLD_COLUMNS, RANKED_IN_SAMPLE)
        .sort(UNIQUE_ID, MODEL_NAME, CUTOFF, STEP)
    )


def ensemble_members(scores: pl.DataFrame, *, top_k: int, group_rank: bool = True) -> pl.DataFrame:
    """Members of every candidate per series, ranked over ALL folds, for the future forecast.

    A model qualifies for a series only with a finite score on every fold of that series (the
    same rule `ensemble_folds` applies), so members are ranked on equal evidence.
    Returns `unique_id, ensemble_name, model_name`.
    """
    _check_top_k(top_k)
    usable = _usable_scores(scores)
    folds_per_series = scores.group_by(UNIQUE_ID).agg(pl.col(CUTOFF).n_unique().alias("__folds"))
    table = (
        usable.group_by(UNIQUE_ID, MODEL_NAME)
        .agg(pl.col(_SCORE).mean(), pl.col(CUTOFF).n_unique().alias("__have"))
        .join(folds_per_series, on=UNIQUE_ID)
        .filter(pl.col("__have") == pl.col("__folds"))
        .select(UNIQUE_ID, MODEL_NAME, _SCORE)
    )
    return _members(table, [], top_k, group_rank).sort(UNIQUE_ID, ENSEMBLE_NAME, MODEL_NAME)


def combine_forecasts(forecasts: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """Future forecasts of the ensembles from their members' forecasts.

    `forecasts`: `unique_id, model_name, ds, step, yhat, lo_80, hi_80, lo_95, hi_95` of single
    models (a `cutoff` column, when present, is kept: it is per series, not per model). Returns
    those columns, in the input's order, with `model_name` set to the ensemble name; a median
    ensemble takes the median, others the mean (`BestPerSeries` has one member, so its rows are
    that member's). Members without a forecast for a step are left out of that step's statistic.
    """
    keys = [c for c in (UNIQUE_ID, DS, STEP, CUTOFF) if c in forecasts.columns]
    rows = members.select(UNIQUE_ID, ENSEMBLE_NAME, MODEL_NAME).join(
        forecasts.select(*keys, MODEL_NAME, *_VALUE_COLUMNS), on=[UNIQUE_ID, MODEL_NAME]
    )
    combined = _combine(rows, [*keys, ENSEMBLE_NAME]).rename({ENSEMBLE_NAME: MODEL_NAME})
    columns = [c for c in forecasts.columns if c in {*keys, MODEL_NAME, *_VALUE_COLUMNS}]
    return combined.select(columns).sort(UNIQUE_ID, MODEL_NAME, STEP)
