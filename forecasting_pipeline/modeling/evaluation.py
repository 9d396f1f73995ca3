"""Accuracy of a rolling-origin backtest: per series, per horizon step and overall.

The input is the long "fold frame" (one row per series, candidate model, fold cutoff and horizon
step, with the actual `y` next to the model's `yhat` and interval bounds). Point and interval
metrics come from utilsforecast so the numbers mean what the Nixtla ecosystem means by them; only
what utilsforecast cannot express (per-step MASE, interval widths) is computed here in polars.

Every scaled metric (MASE, scaled multi-quantile loss, the per-fold ranking score) divides by the
same per-series scale from `series_scales`, so a model ranked first by `fold_scores` is ranked by
the same yardstick the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from utilsforecast import losses
from utilsforecast.evaluation import evaluate

from forecasting_pipeline.schemas import DS, INTERVAL_LEVELS, UNIQUE_ID, Y, lower_column, upper_column

MODEL_NAME = "model_name"
CUTOFF = "cutoff"
STEP = "step"
YHAT = "yhat"
SCALE = "scale"

# Metric names, in the order reports list them.
POINT_METRICS: tuple[str, ...] = ("mae", "rmse", "mape", "smape", "mase")
INTERVAL_METRICS: tuple[str, ...] = (
    "scaled_mql",
    *(f"coverage_{level}" for level in INTERVAL_LEVELS),
    *(f"width_{level}" for level in INTERVAL_LEVELS),
)
METRICS: tuple[str, ...] = (*POINT_METRICS, *INTERVAL_METRICS)
# The `overall` frame's extra row per model: how many series its means are taken over.
SERIES_COUNT_METRIC = "series"

# Levels widest first: their lower bounds, then the point as the median, then upper bounds, give the
# quantiles of the multi-quantile loss in increasing order (0.025, 0.1, 0.5, 0.9, 0.975 for 80/95).
_WIDEST_FIRST: tuple[int, ...] = tuple(sorted(INTERVAL_LEVELS, reverse=True))
MQL_QUANTILES: tuple[float, ...] = (
    *((100 - level) / 200 for level in _WIDEST_FIRST),
    0.5,
    *(1 - (100 - level) / 200 for level in reversed(_WIDEST_FIRST)),
)

_BOUND_COLUMNS: tuple[str, ...] = tuple(
    column for level in INTERVAL_LEVELS for column in (lower_column(level), upper_column(level))
)
_ROW = "__row"
_FOLD = "__fold_cutoff"
_MEDIAN_SUFFIX = "-q-50"
_SCALE_COLUMN = "__series_scale"


@dataclass(frozen=True)
class BacktestEvaluation:
    """Backtest accuracy in long format (`metric`, `value`) so new metrics need no schema change.

    series: `unique_id, model_name, metric, value` over all folds and steps of each series.
    steps: `model_name, step, metric, value` over all series and folds, per horizon step.
    overall: `model_name, metric, value`, the mean over series of `series` (M-competition
    convention: every series weighs the same whatever its length) plus a `series` row counting them.
    """

    series: pl.DataFrame
    steps: pl.DataFrame
    overall: pl.DataFrame


def series_scales(history: pl.DataFrame, season: int) -> pl.DataFrame:
    """Per-series MASE denominator: in-sample MAE of the seasonal-naive forecast.

    Scaling by the in-sample naive error makes errors comparable across series of any magnitude
    and tells whether a model beats the naive benchmark (MASE < 1). The scale must never be 0 or
    null, because every scaled score divides by it, so:

    - a series with at most `season` observations has no seasonal lag and uses lag 1 (naive);
    - a scale of 0 or null (constant or single-point history) falls back to the series' mean |y|,
      which keeps scaled errors relative to the series' level;
    - if that is 0 too (an all-zero history) the scale is 1.0, i.e. errors stay in the units of y.
    """
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    ordered = history.select(UNIQUE_ID, DS, pl.col(Y).cast(pl.Float64)).sort(UNIQUE_ID, DS)
    per_series = ordered.group_by(UNIQUE_ID).agg(
        pl.len().alias("n"),
        (pl.col(Y) - pl.col(Y).shift(season)).abs().mean().alias("seasonal"),
        (pl.col(Y) - pl.col(Y).shift(1)).abs().mean().alias("naive"),
        pl.col(Y).abs().mean().alias("level"),
    )
    usable = pl.when(pl.col("n") > season).then(pl.col("seasonal")).otherwise(pl.col("naive"))
    return (
        per_series.with_columns(usable.alias(SCALE))
        .with_columns(
            pl.when(pl.col(SCALE).is_null() | (pl.col(SCALE) == 0) | pl.col(SCALE).is_nan())
            .then(pl.col("level"))
            .otherwise(pl.col(SCALE))
            .alias(SCALE)
        )
        .with_columns(
            pl.when(pl.col(SCALE).is_null() | (pl.col(SCALE) == 0) | pl.col(SCALE).is_nan())
            .then(pl.lit(1.0))
            .otherwise(pl.col(SCALE))
            .alias(SCALE)
        )
        .select(UNIQUE_ID, SCALE)
        .sort(UNIQUE_ID)
    )


def attach_scales(frame: pl.DataFrame, scales: pl.DataFrame) -> pl.DataFrame:
    """Join each row's series scale, failing loudly rather than scoring a series against nothing.

    A series absent from `scales` had no in-sample history, so its scaled errors are undefined;
    silently dropping or nulling it would change which models look best.
    """
    joined = frame.join(scales.select(UNIQUE_ID, SCALE), on=UNIQUE_ID, how="left")
    missing = joined.filter(pl.col(SCALE).is_null()).get_column(UNIQUE_ID).unique().sort()
    if missing.len():
        raise ValueError(
            f"no scale for {missing.len()} series (no history before the first cutoff?): "
            f"{missing.head(5).to_list()}"
        )
    return joined


def fold_scores(folds: pl.DataFrame, scales: pl.DataFrame) -> pl.DataFrame:
    """Scale-free error of each (series, model, fold): mean |y - yhat| / scale.

    Per fold rather than pooled so ensembles can rank candidates on folds other than the one they
    forecast; scaled so the score of a big series does not drown out a small one when averaged.
    """
    scored = attach_scales(folds.select(UNIQUE_ID, MODEL_NAME, CUTOFF, Y, YHAT), scales)
    return (
        scored.group_by(UNIQUE_ID, MODEL_NAME, CUTOFF)
        .agg(((pl.col(Y) - pl.col(YHAT)).abs() / pl.col(SCALE)).mean().alias("score"))
        .sort(UNIQUE_ID, MODEL_NAME, CUTOFF)
    )


def _interval_mask() -> pl.Expr:
    """A row's intervals count only when all bounds exist, so partial bounds cannot skew the MQL."""
    return pl.all_horizontal(pl.col(c).is_not_null() & pl.col(c).is_not_nan() for c in _BOUND_COLUMNS)


def _wide(folds: pl.DataFrame, aliases: dict[str, str]) -> pl.DataFrame:
    """Pivot the long fold frame to utilsforecast's one-column-per-model layout.

    Models go by positional aliases (`model_0`, ...) so any model name is a safe column name.
    On rows missing any bound, all bounds are nulled, and the MQL reads its median from a copy of
    `yhat` (`<model>-q-50`) nulled on the same rows: every interval metric then sees the same rows,
    and a model without intervals cannot get an MQL from its median alone.
    """
    keys = (UNIQUE_ID, CUTOFF, DS, STEP)
    masked = folds.select(
        *keys,
        pl.col(MODEL_NAME).replace_strict(aliases).alias(MODEL_NAME),
        pl.col(YHAT),
        *(pl.when(_interval_mask()).then(pl.col(c)).alias(c) for c in _BOUND_COLUMNS),
        pl.when(_interval_mask()).then(pl.col(YHAT)).alias(_MEDIAN_SUFFIX),
    )
    suffix = {YHAT: "", _MEDIAN_SUFFIX: _MEDIAN_SUFFIX}
    for level in INTERVAL_LEVELS:
        suffix[lower_column(level)] = f"-lo-{level}"
        suffix[upper_column(level)] = f"-hi-{level}"
    long = masked.unpivot(index=[*keys, MODEL_NAME], variable_name="field", value_name="value").with_columns(
        (pl.col(MODEL_NAME) + pl.col("field").replace_strict(suffix)).alias("column")
    )
    wide = long.pivot(on="column", index=list(keys), values="value")
    actuals = folds.group_by(*keys).agg(pl.col(Y).drop_nulls().first().cast(pl.Float64))
    # utilsforecast passes its `cutoff_col` to only some losses; the others group by a column named
    # "cutoff" whenever one exists, which would split a series' score per fold. Renamed, folds pool.
    wide = wide.join(actuals, on=list(keys), how="left").rename({CUTOFF: _FOLD})
    # Columns of a model/field never seen would be missing; utilsforecast expects all of them.
    expected = [f"{alias}{s}" for alias in aliases.values() for s in suffix.values()]
    absent = [c for c in expected if c not in wide.columns]
    return wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in absent).with_row_index(_ROW)


def _mql_columns(model: str) -> list[str]:
    """Wide-frame columns of a model in the order of `MQL_QUANTILES`."""
    return [
        *(f"{model}-lo-{level}" for level in _WIDEST_FIRST),
        f"{model}{_MEDIAN_SUFFIX}",
        *(f"{model}-hi-{level}" for level in reversed(_WIDEST_FIRST)),
    ]


def _mase(
    df: pl.DataFrame,
    models: list[str],
    train_df: pl.DataFrame,
    id_col: str = UNIQUE_ID,
    target_col: str = Y,
    cutoff_col: str = CUTOFF,
    time_col: str = DS,
) -> pl.DataFrame:
    """utilsforecast's MASE at seasonality 1, for use with `_scale_carrier` as its training frame."""
    return losses.mase(
        df,
        models=models,
        seasonality=1,
        train_df=train_df,
        id_col=id_col,
        target_col=target_col,
        cutoff_col=cutoff_col,
        time_col=time_col,
    )


def _scaled_mql(
    df: pl.DataFrame,
    models: list[str],
    train_df: pl.DataFrame,
    id_col: str = UNIQUE_ID,
    target_col: str = Y,
    cutoff_col: str = CUTOFF,
    time_col: str = DS,
) -> pl.DataFrame:
    """utilsforecast's scaled MQL over the median and both intervals.

    `evaluate` derives quantiles from `level` alone (no median), so this wrapper, named like the
    metric it reports, hands `scaled_mqloss` the five quantiles explicitly.
    """
    return losses.scaled_mqloss(
        df,
        models={m: _mql_columns(m) for m in models},
        quantiles=np.array(MQL_QUANTILES),
        seasonality=1,
        train_df=train_df,
        id_col=id_col,
        target_col=target_col,
        cutoff_col=cutoff_col,
        time_col=time_col,
    )


def _step_scaled_mql(
    df: pl.DataFrame,
    models: list[str],
    id_col: str = STEP,
    target_col: str = Y,
    cutoff_col: str = CUTOFF,
) -> pl.DataFrame:
    """MQL of series-scaled values, for grouping by step.

    utilsforecast's scaled losses take one scale per id; with the step as the id the series' scales
    must be applied first. The quantile loss is positively homogeneous, so MQL(y/s, q/s) = MQL/s.
    """
    scale = pl.col(_SCALE_COLUMN)
    columns = [c for m in models for c in _mql_columns(m)]
    scaled = df.select(
        id_col,
        (pl.col(target_col) / scale).alias(target_col),
        *((pl.col(c) / scale).alias(c) for c in columns),
    )
    return losses.mqloss(
        scaled,
        models={m: _mql_columns(m) for m in models},
        quantiles=np.array(MQL_QUANTILES),
        id_col=id_col,
        target_col=target_col,
        cutoff_col=cutoff_col,
    )


def _scale_carrier(scales: pl.DataFrame) -> pl.DataFrame:
    """A two-point "training" series per id whose lag-1 MAE is exactly its `series_scales` scale.

    utilsforecast's scaled losses recompute the scale from a training frame with one seasonality
    and no fallback, so a constant history would give inf, and a short one null. Feeding them
    this frame (with seasonality 1) makes them divide by `series_scales`, the same denominator
    `fold_scores` and the per-step MASE use.
    """
    return pl.concat(
        [
            scales.select(UNIQUE_ID, pl.lit(0, dtype=pl.Int64).alias(DS), pl.lit(0.0).alias(Y)),
            scales.select(UNIQUE_ID, pl.lit(1, dtype=pl.Int64).alias(DS), pl.col(SCALE).alias(Y)),
        ]
    ).sort(UNIQUE_ID, DS)


# utilsforecast's name -> (our name, factor to our units).
_RENAMES: dict[str, tuple[str, float]] = {
    "mae": ("mae", 1.0),
    "rmse": ("rmse", 1.0),
    # utilsforecast returns fractions; reports use percent. Its sMAPE is mean(|e| / (|y| + |yhat|)),
    # half the M-competition sMAPE, hence 200.
    "mape": ("mape", 100.0),
    "smape": ("smape", 200.0),
    "_mase": ("mase", 1.0),
    "_scaled_mql": ("scaled_mql", 1.0),
    "_step_scaled_mql": ("scaled_mql", 1.0),
    **{f"coverage_level{level}": (f"coverage_{level}", 100.0) for level in INTERVAL_LEVELS},
}


def _to_long(result: pl.DataFrame, id_col: str, models: dict[str, str]) -> pl.DataFrame:
    """utilsforecast's (id, metric, one column per model) -> long, in our names and units."""
    present = [alias for alias in models.values() if alias in result.columns]
    if not present or result.height == 0:
        return (
            result.select(id_col)
            .clear()
            .with_columns(
                pl.lit(None, dtype=pl.String).alias(MODEL_NAME),
                pl.lit(None, dtype=pl.String).alias("metric"),
                pl.lit(None, dtype=pl.Float64).alias("value"),
            )
        )
    back = {alias: name for name, alias in models.items()}
    names = {k: v[0] for k, v in _RENAMES.items()}
    factors = {k: v[1] for k, v in _RENAMES.items()}
    return (
        result.select(id_col, "metric", *(pl.col(c).cast(pl.Float64) for c in present))
        .unpivot(index=[id_col, "metric"], variable_name=MODEL_NAME, value_name="value")
        .with_columns(
            pl.col(MODEL_NAME).replace_strict(back),
            pl.col("value") * pl.col("metric").replace_strict(factors, return_dtype=pl.Float64),
            pl.col("metric").replace_strict(names),
        )
        .select(id_col, MODEL_NAME, "metric", "value")
    )


def _widths(folds: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Mean interval width per group; plain polars because utilsforecast has no width metric."""
    rows = folds.filter(_interval_mask())
    return pl.concat(
        [
            rows.group_by(*by)
            .agg((pl.col(upper_column(level)) - pl.col(lower_column(level))).mean().alias("value"))
            .with_columns(pl.lit(f"width_{level}").alias("metric"))
            .select(*by, "metric", "value")
            for level in INTERVAL_LEVELS
        ]
    )


def _finish(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Drop undefined values (e.g. MAPE when an actual is 0, interval metrics without intervals).

    No row means "not defined", which keeps NaN out of the means taken over series.
    """
    order = {name: i for i, name in enumerate((*METRICS, SERIES_COUNT_METRIC))}
    return (
        frame.filter(pl.col("value").is_finite())
        .with_columns(pl.col("metric").replace_strict(order, default=len(order)).alias("__order"))
        .sort(*keys, "__order")
        .drop("__order")
    )


def _empty(keys: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema={**keys, "metric": pl.String, "value": pl.Float64})


def evaluate_backtest(folds: pl.DataFrame, history: pl.DataFrame, season: int) -> BacktestEvaluation:
    """Score every candidate of a backtest per series, per horizon step and overall.

    Units: mae, rmse and width_XX in units of y; mape and smape in percent (sMAPE = 200 ·
    mean(|e| / (|y| + |yhat|)), 0..200); mase and scaled_mql are ratios to the in-sample
    seasonal-naive MAE of `history` (< 1 beats it); coverage_XX in percent (0..100).
    Models, or rows, without all interval bounds get no interval metrics.
    """
    series_keys = {UNIQUE_ID: pl.String, MODEL_NAME: pl.String}
    step_keys = {MODEL_NAME: pl.String, STEP: pl.Int64}
    if folds.height == 0:
        return BacktestEvaluation(
            series=_empty(series_keys), steps=_empty(step_keys), overall=_empty({MODEL_NAME: pl.String})
        )
    folds = folds.select(
        pl.col(UNIQUE_ID).cast(pl.String),
        pl.col(MODEL_NAME).cast(pl.String),
        CUTOFF,
        DS,
        pl.col(STEP).cast(pl.Int64),
        *(pl.col(c).cast(pl.Float64) for c in (Y, YHAT, *_BOUND_COLUMNS)),
    )
    scales = series_scales(history, season)
    scaled_rows = attach_scales(folds, scales)
    models = folds.get_column(MODEL_NAME).unique().sort().to_list()
    aliases = {name: f"model_{i}" for i, name in enumerate(models)}
    with_intervals = folds.filter(_interval_mask()).get_column(MODEL_NAME).unique().sort().to_list()
    interval_aliases = [aliases[m] for m in with_intervals]
    wide = _wide(folds, aliases).join(scales.rename({SCALE: _SCALE_COLUMN}), on=UNIQUE_ID, how="left")
    levels = list(INTERVAL_LEVELS)
    # The wide frame has no "cutoff" column (see `_wide`): folds of a series pool into one value per
    # series (or step), as the report wants; `_ROW` keeps rows of different folds apart.
    common = {"target_col": Y, "time_col": _ROW, "cutoff_col": CUTOFF}
    point = [losses.mae, losses.rmse, losses.mape, losses.smape]

    series_parts = [
        _to_long(
            evaluate(
                wide,
                metrics=[*point, _mase],
                models=list(aliases.values()),
                train_df=_scale_carrier(scales).rename({DS: _ROW}),
                id_col=UNIQUE_ID,
                **common,
            ),
            UNIQUE_ID,
            aliases,
        )
    ]
    step_parts = [
        _to_long(
            evaluate(wide, metrics=point, models=list(aliases.values()), id_col=STEP, **common), STEP, aliases
        )
    ]
    if interval_aliases:
        interval_models = {m: aliases[m] for m in with_intervals}
        series_parts.append(
            _to_long(
                evaluate(
                    wide,
                    metrics=[_scaled_mql, losses.coverage],
                    models=interval_aliases,
                    train_df=_scale_carrier(scales).rename({DS: _ROW}),
                    level=levels,
                    id_col=UNIQUE_ID,
                    **common,
                ),
                UNIQUE_ID,
                interval_models,
            )
        )
        step_parts.append(
            _to_long(
                evaluate(
                    wide,
                    metrics=[_step_scaled_mql, losses.coverage],
                    models=interval_aliases,
                    level=levels,
                    id_col=STEP,
                    **common,
                ),
                STEP,
                interval_models,
            )
        )
    series_parts.append(
        _widths(folds, [UNIQUE_ID, MODEL_NAME]).select(UNIQUE_ID, MODEL_NAME, "metric", "value")
    )
    # Per-step MASE in polars: utilsforecast's mase takes its scale per id, and here the id is the step.
    step_mase = (
        scaled_rows.group_by(MODEL_NAME, STEP)
        .agg(((pl.col(Y) - pl.col(YHAT)).abs() / pl.col(SCALE)).mean().alias("value"))
        .with_columns(pl.lit("mase").alias("metric"))
    )
    step_parts += [
        step_mase.select(STEP, MODEL_NAME, "metric", "value"),
        _widths(folds, [STEP, MODEL_NAME]).select(STEP, MODEL_NAME, "metric", "value"),
    ]

    series = _finish(
        pl.concat([p.select(UNIQUE_ID, MODEL_NAME, "metric", "value") for p in series_parts]),
        [UNIQUE_ID, MODEL_NAME],
    )
    steps = _finish(
        pl.concat([p.select(MODEL_NAME, pl.col(STEP).cast(pl.Int64), "metric", "value") for p in step_parts]),
        [MODEL_NAME, STEP],
    )
    counts = series.group_by(MODEL_NAME).agg(
        pl.lit(SERIES_COUNT_METRIC).alias("metric"),
        pl.col(UNIQUE_ID).n_unique().cast(pl.Float64).alias("value"),
    )
    overall = _finish(
        pl.concat(
            [series.group_by(MODEL_NAME, "metric").agg(pl.col("value").mean()), counts], how="vertical"
        ),
        [MODEL_NAME],
    )
    return BacktestEvaluation(series=series, steps=steps, overall=overall)
